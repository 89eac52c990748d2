"""Fused StyleGAN2 modulation: picks the fastest path that is correct for the call.

- a CUDA tensor -> the csrc/ CUDA extension; a CPU tensor -> the csrc/ CPU extension;
- otherwise, or when an extension cannot be built, or when autograd needs gradients (the extensions have
  no backward), or when `STV_OPS=reference` -> the pure-PyTorch reference in `modulated_conv.py`.

Every fallback is logged once (logging, not print) with its reason.
"""

from __future__ import annotations

import logging
import os

import torch

from codec.ops import extension
from codec.ops.modulated_conv import (
    blur_kernel_2d,
    fir_filter,
    modulated_conv_reference,
    upsample_2x,
)

__all__ = ["modulated_conv", "active_kernel", "blur_kernel_2d", "fir_filter", "upsample_2x",
           "modulated_conv_reference"]

log = logging.getLogger(__name__)
_said: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        log.info(message)


def _forced_reference() -> bool:
    return os.environ.get("STV_OPS", "").strip().lower() == "reference"


def active_kernel(device: torch.device | str, needs_grad: bool = False) -> str:
    """Name of the path a call on `device` takes: 'cpu', 'cuda' or 'reference' (logs why, once)."""
    if _forced_reference():
        _say_once("stv ops: STV_OPS=reference, using the PyTorch reference path")
        return "reference"
    if needs_grad:
        _say_once("stv ops: gradients requested; the fused kernels have no backward, using the reference path")
        return "reference"
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda"):
        _say_once(f"stv ops: no fused kernel for device type {kind!r}, using the reference path")
        return "reference"
    module, why = extension.load(kind)
    if module is None:
        _say_once(f"stv ops: {kind} extension unavailable ({why}), using the reference path")
        return "reference"
    return kind


def modulated_conv(
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
    """One modulated conv layer (see `modulated_conv.py` for the math) on the fastest correct path."""
    tensors = (x, weight, style, blur, noise, bias, skip, skip_kernel)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    kind = active_kernel(x.device, needs_grad)
    if kind == "reference":
        return modulated_conv_reference(x, weight, style, scale, demodulate, upsample, blur, noise, bias, activate,
                                        skip, skip_kernel)
    module, _ = extension.load(kind)
    noise_2d = None if noise is None else noise.reshape(noise.shape[-2:])
    return module.modulated_conv(x.contiguous(), weight.contiguous(), style.contiguous(), float(scale),
                                 demodulate, upsample, blur, noise_2d, bias, activate, skip, skip_kernel)
