"""The modulated-conv layers of a StyleGAN2 synthesis network, as shapes: what the CUDA parity tests draw random
inputs for, and what tools/gpu_check.py counts arithmetic and bytes over (the floor a decode cannot beat).

One `LayerShape` per modulated conv, in the generator's order: the 4x4 block's conv and ToRGB, then per
resolution r = 8..size the up-sampling conv (input r/2), the conv at r, and the ToRGB at r (with the skip branch
from r/2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from codec.ops.modulated_conv import blur_kernel_2d

BLUR_TAPS = (1, 3, 3, 1)


@dataclass(frozen=True)
class LayerShape:
    name: str  # e.g. "conv_up_256", "torgb_1024"
    in_ch: int
    out_ch: int
    kernel: int  # 3 for a conv, 1 for ToRGB
    in_size: int  # input side; the output side is 2 * in_size when upsample
    upsample: bool
    torgb: bool  # ToRGB: no demodulation, no noise, no activation; skip branch from the previous RGB

    @property
    def out_size(self) -> int:
        return 2 * self.in_size if self.upsample else self.in_size

    @property
    def has_skip(self) -> bool:
        return self.torgb and self.out_size > 4

    def macs(self) -> int:
        """Multiply-adds of the convolution for one sample (a stride-2 transposed conv: k*k per input pixel)."""
        pixels = self.in_size**2 if self.upsample else self.out_size**2
        return pixels * self.in_ch * self.out_ch * self.kernel**2

    def min_bytes(self, batch: int, element: int) -> int:
        """The fewest bytes the layer must move: the weight once, each input read once, the output written once
        (the skip branch's RGB read once)."""
        weight = self.out_ch * self.in_ch * self.kernel**2
        activations = self.in_ch * self.in_size**2 + self.out_ch * self.out_size**2
        skip = 3 * (self.out_size // 2) ** 2 if self.has_skip else 0
        return element * (weight + batch * (activations + skip))


def synthesis_layers(channels: dict[int, int]) -> list[LayerShape]:
    """The layers of a synthesis network with feature channels {resolution: channels} (4 .. size)."""
    res = sorted(channels)
    layers = [LayerShape("conv_4", channels[4], channels[4], 3, 4, False, False),
              LayerShape("torgb_4", channels[4], 3, 1, 4, False, True)]
    for prev, r in zip(res[:-1], res[1:]):
        layers += [LayerShape(f"conv_up_{r}", channels[prev], channels[r], 3, prev, True, False),
                   LayerShape(f"conv_{r}", channels[r], channels[r], 3, r, False, False),
                   LayerShape(f"torgb_{r}", channels[r], 3, 1, r, False, True)]
    return layers


def random_layer_inputs(layer: LayerShape, batch: int, generator: torch.Generator) -> dict:
    """Keyword arguments of `modulated_conv` for `layer`, drawn fresh (normal values, never zeros), on the CPU in
    float32; move and cast them with `inputs_to`."""
    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    out = layer.out_size
    blur = blur_kernel_2d(BLUR_TAPS, gain=4.0)
    return dict(
        x=normal(batch, layer.in_ch, layer.in_size, layer.in_size), weight=normal(layer.out_ch, layer.in_ch,
                                                                                   layer.kernel, layer.kernel),
        style=1.0 + 0.5 * normal(batch, layer.in_ch), scale=1.0 / math.sqrt(layer.in_ch * layer.kernel**2),
        demodulate=not layer.torgb, upsample=layer.upsample, blur=blur if layer.upsample else None,
        noise=None if layer.torgb else 0.1 * normal(1, 1, out, out), bias=normal(layer.out_ch),
        activate=not layer.torgb, skip=normal(batch, 3, out // 2, out // 2) if layer.has_skip else None,
        skip_kernel=blur if layer.has_skip else None)


def inputs_to(inputs: dict, device: torch.device | str, dtype: torch.dtype) -> dict:
    """The same inputs on `device`, floating tensors cast to `dtype` (the FIR kernels too, as the model's are)."""
    return {k: v.to(device, dtype) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def relative_error(got: torch.Tensor, reference: torch.Tensor) -> float:
    """||got - ref|| / ||ref|| in float64; inf when `got` holds a NaN or an infinity (never a pass)."""
    got64, ref64 = got.detach().double().cpu(), reference.detach().double().cpu()
    if not torch.isfinite(got64).all():
        return math.inf
    return ((got64 - ref64).norm() / ref64.norm()).item()
