"""The fused CUDA modulated conv (csrc/modulated_conv_cuda.cu) against the reference, on a GPU: every layer of
config-f (each type at each resolution, 4² to 1024²), float32 and float16, fresh random inputs per test; and
poisoned memory, to show the kernel writes every element of its output. Skips without a CUDA device.

Error bounds (METHOD.md): ||fused - ref|| / ||ref||, the reference computed by the PyTorch path in float64 on the
same inputs (cast to the tested dtype first, so only the arithmetic differs).
- float32: 2e-3. cuDNN runs float32 convolutions in TF32 by default (torch.backends.cudnn.allow_tf32), whose
  10-bit mantissa gives about 3e-4 over a long sum; pure float32 lands under 1e-5. The bound leaves TF32 room
  and catches any indexing error (which gives O(1)).
- float16: 1e-2. Each stored intermediate (the modulated input, the conv output) is rounded to 11 bits (about
  5e-4 each) and the conv accumulates in float32; 1e-2 is the top of the half-precision band METHOD.md gives.
A NaN or infinity anywhere fails (relative_error returns inf).
"""

from __future__ import annotations

import pytest
import torch

from codec.models.stylegan2 import config_f_channels
from codec.ops import extension
from codec.ops.layers import inputs_to, random_layer_inputs, relative_error, synthesis_layers
from codec.ops.modulated_conv import modulated_conv_reference

BOUNDS = {torch.float32: 2e-3, torch.float16: 1e-2}
CONFIG_F_LAYERS = synthesis_layers(config_f_channels(1024))
BATCH = 2  # two samples: per-sample styles must stay per sample


@pytest.fixture(scope="module")
def cuda_ext():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    module, why = extension.load("cuda")
    if module is None:
        pytest.fail(f"CUDA extension unavailable on a machine with a GPU: {why}", pytrace=False)
    return module


def run_fused(module, inputs: dict) -> torch.Tensor:
    noise = None if inputs["noise"] is None else inputs["noise"].reshape(inputs["noise"].shape[-2:])
    return module.modulated_conv(inputs["x"], inputs["weight"], inputs["style"], inputs["scale"],
                                 inputs["demodulate"], inputs["upsample"], inputs["blur"], noise, inputs["bias"],
                                 inputs["activate"], inputs["skip"], inputs["skip_kernel"])


def reference_float64(inputs: dict) -> torch.Tensor:
    return modulated_conv_reference(**inputs_to(inputs, inputs["x"].device, torch.float64))


def poison_cached_memory(device: torch.device, megabytes: int = 2048) -> None:
    """Fill the caching allocator's free memory with NaN: blocks the kernel then allocates for its outputs and
    intermediates start as NaN, so an element it never writes shows up as NaN in the result."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    large = torch.full((megabytes * 2**20 // 4,), float("nan"), device=device)  # the large pool
    small = [torch.full((2**18 // 4,), float("nan"), device=device) for _ in range(64)]  # blocks under 1 MB
    del large, small  # freed to the cache, not to the driver: the NaNs stay for the next allocations


def fresh_seed() -> int:
    """A new seed per test and per run (drawn from the OS), reported on failure so a failure can be replayed."""
    return torch.seed() % 2**62


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("layer", CONFIG_F_LAYERS, ids=[layer.name for layer in CONFIG_F_LAYERS])
def test_fused_cuda_layer_equals_the_reference(cuda_ext, layer, dtype):
    seed = fresh_seed()
    inputs = inputs_to(random_layer_inputs(layer, BATCH, torch.Generator().manual_seed(seed)), "cuda", dtype)
    reference = reference_float64(inputs)
    poison_cached_memory(inputs["x"].device)
    fused = run_fused(cuda_ext, inputs)
    torch.cuda.synchronize()
    assert fused.shape == reference.shape and fused.dtype == dtype
    error = relative_error(fused, reference)
    assert error <= BOUNDS[dtype], f"{layer.name} {dtype}: relative error {error:.3e} (seed {seed})"


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_every_output_element_is_written_under_poison(cuda_ext, dtype):
    """Each layer type once more, at an odd-sized batch, with the whole cache poisoned before each call."""
    types = {}
    for layer in CONFIG_F_LAYERS:
        types.setdefault((layer.upsample, layer.torgb, layer.has_skip), layer)
    gen = torch.Generator().manual_seed(fresh_seed())
    for layer in types.values():
        inputs = inputs_to(random_layer_inputs(layer, 3, gen), "cuda", dtype)
        poison_cached_memory(inputs["x"].device)
        fused = run_fused(cuda_ext, inputs)
        torch.cuda.synchronize()
        assert torch.isfinite(fused).all(), f"{layer.name}: unwritten (NaN) elements in the output"


def test_config_f_layer_list_matches_the_generator():
    """The shapes the GPU tests and gpu_check's floor use are the generator's own (checked on the CPU)."""
    from codec.models.stylegan2 import Generator, GeneratorConfig

    config = GeneratorConfig(size=32, style_dim=8, n_mlp=1, channels={4: 8, 8: 8, 16: 4, 32: 4})
    g = Generator(config)
    layers = synthesis_layers(config.channel_table)
    assert len(layers) == len(g._modulators) == len(g.layout.layers)
    for layer, module, style_layer in zip(layers, g._modulators, g.layout.layers):
        out_ch, in_ch, k, _ = module.weight.shape[1:]
        assert (layer.out_ch, layer.in_ch, layer.kernel, layer.upsample) == (out_ch, in_ch, k, module.upsample)
        assert layer.torgb == style_layer.is_torgb
