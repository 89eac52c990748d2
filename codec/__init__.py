"""stv: a neural talking-head video codec (Oorloff & Yacoob 2023, StyleGAN2 latent space).

The package root imports nothing heavy: `codec.bitstream` must stay usable without torch.
"""

__version__ = "0.1.0"
