"""Reference (pure PyTorch) StyleGAN2 modulated convolution, always available.

One call is one whole StyleSpace layer of the generator:

    w'[b,o,i,kh,kw] = scale * weight[o,i,kh,kw] * style[b,i]                  (modulate)
    w'' = w' * rsqrt(sum_{i,kh,kw} w'^2 + 1e-8)          if demodulate         (demodulate)
    y   = conv(x[b], w''[b])  (3x3 'same', 1x1, or 2x up: transposed stride-2 conv then a 4x4 blur)
    y   = y + noise                                       if noise is given     (noise already * strength)
    y   = y + bias[o]                                     if bias is given
    y   = leaky_relu(y, 0.2) * sqrt(2)                    if activate
    y   = y + upsample_2x(skip, skip_kernel)              if skip is given      (ToRGB's skip branch)

This is the math of rosinality's `ModulatedConv2d` (fused=True: weights modulated per sample, grouped
conv over the batch), `StyledConv` and `ToRGB`; the csrc/ kernels must reproduce it to <= 1e-4 (float32).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
DEMOD_EPS = 1e-8


def blur_kernel_2d(taps: tuple[int, ...] | list[int], gain: float = 1.0) -> torch.Tensor:
    """Separable FIR kernel normalised to sum `gain` (rosinality's make_kernel, times factor**2 for up)."""
    k = torch.tensor(list(taps), dtype=torch.float32)
    k2 = k[None, :] * k[:, None]
    return k2 / k2.sum() * gain


def fir_filter(x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    """Depthwise 2-D FIR filter with (pad0, pad1) zero padding on both axes (upfirdn2d with up=down=1).

    upfirdn2d convolves (flips the kernel); the blur kernels are symmetric so correlation is the same."""
    channels = x.shape[1]
    k = kernel.to(dtype=x.dtype, device=x.device).flip([0, 1])
    weight = k[None, None].expand(channels, 1, *k.shape)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    return F.conv2d(x, weight, groups=channels)


def upsample_2x(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """ToRGB skip up-sampling: zero-insertion 2x then the FIR kernel (upfirdn2d up=2, pad (2, 1) for 4 taps)."""
    b, c, h, w = x.shape
    up = x.new_zeros(b, c, h * 2, w * 2)
    up[:, :, ::2, ::2] = x
    p = kernel.shape[0] - 2
    return fir_filter(up, kernel, ((p + 1) // 2 + 1, p // 2))


def upconv_blur_pad(kernel_size: int, blur_taps: int) -> tuple[int, int]:
    """Padding of the blur after the stride-2 transposed conv (rosinality ModulatedConv2d, upsample=True)."""
    p = (blur_taps - 2) - (kernel_size - 1)
    return ((p + 1) // 2 + 1, p // 2 + 1)


def modulated_conv_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    style: torch.Tensor,
    scale: float,
    demodulate: bool,
    upsample: bool = False,
    blur: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    activate: bool = False,
    skip: torch.Tensor | None = None,
    skip_kernel: torch.Tensor | None = None,
) -> torch.Tensor:
    """x [B,I,H,W], weight [O,I,k,k], style [B,I] -> [B,O,H',W'] (H' = 2H if upsample). See module doc."""
    batch, in_ch, height, width = x.shape
    out_ch, _, k, _ = weight.shape
    w = scale * weight[None] * style.view(batch, 1, in_ch, 1, 1)
    if demodulate:
        w = w * torch.rsqrt(w.pow(2).sum([2, 3, 4]) + DEMOD_EPS).view(batch, out_ch, 1, 1, 1)
    x = x.reshape(1, batch * in_ch, height, width)
    if upsample:
        if blur is None:
            raise ValueError("upsample needs the blur kernel")
        w = w.transpose(1, 2).reshape(batch * in_ch, out_ch, k, k)
        y = F.conv_transpose2d(x, w, stride=2, padding=0, groups=batch)
        y = y.view(batch, out_ch, *y.shape[2:])
        y = fir_filter(y, blur, upconv_blur_pad(k, blur.shape[0]))
    else:
        y = F.conv2d(x, w.reshape(batch * out_ch, in_ch, k, k), padding=k // 2, groups=batch)
        y = y.view(batch, out_ch, *y.shape[2:])
    if noise is not None:
        y = y + noise
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    if activate:
        y = F.leaky_relu(y, LRELU_SLOPE) * LRELU_GAIN
    if skip is not None:
        if skip_kernel is None:
            raise ValueError("skip needs its up-sampling kernel")
        y = y + upsample_2x(skip, skip_kernel)
    return y
