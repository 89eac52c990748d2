"""The fused modulated conv (csrc/) against the PyTorch reference, and the path selection."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

import codec.ops as ops
from codec.ops import extension
from codec.ops.modulated_conv import blur_kernel_2d, modulated_conv_reference
from extension_required import cpu_extension


@pytest.fixture(scope="module")
def cpu_ext():
    return cpu_extension()


def _case(gen, batch, in_ch, out_ch, k, size, upsample, demodulate, with_noise, with_bias, activate,
          with_skip=False):
    x = torch.randn(batch, in_ch, size, size, generator=gen)
    weight = torch.randn(out_ch, in_ch, k, k, generator=gen)
    style = 1.0 + torch.randn(batch, in_ch, generator=gen)
    out_size = 2 * size if upsample else size
    noise = 0.1 * torch.randn(1, 1, out_size, out_size, generator=gen) if with_noise else None
    bias = torch.randn(out_ch, generator=gen) if with_bias else None
    blur = blur_kernel_2d((1, 3, 3, 1), gain=4.0)
    with_skip = with_skip and out_size % 2 == 0  # the skip branch is half the output's size
    skip = torch.randn(batch, out_ch, out_size // 2, out_size // 2, generator=gen) if with_skip else None
    return dict(x=x, weight=weight, style=style, scale=1 / math.sqrt(in_ch * k * k), demodulate=demodulate,
                upsample=upsample, blur=blur, noise=noise, bias=bias, activate=activate, skip=skip,
                skip_kernel=blur if with_skip else None)


def _run_ext(module, c):
    noise = None if c["noise"] is None else c["noise"].reshape(c["noise"].shape[-2:])
    return module.modulated_conv(c["x"], c["weight"], c["style"], c["scale"], c["demodulate"], c["upsample"],
                                 c["blur"], noise, c["bias"], c["activate"], c["skip"], c["skip_kernel"])


def test_cpu_extension_equals_reference_over_random_shapes(cpu_ext):
    gen = torch.Generator().manual_seed(0)
    rng = torch.Generator().manual_seed(1)
    worst = 0.0
    for _ in range(60):
        pick = lambda *xs: xs[int(torch.randint(len(xs), (1,), generator=rng))]  # noqa: E731
        k = pick(1, 3)
        upsample = k == 3 and pick(False, True)
        c = _case(gen, batch=pick(1, 2, 3, 5), in_ch=pick(3, 8, 17, 32), out_ch=pick(3, 4, 16, 33), k=k,
                  size=pick(4, 5, 8, 16), upsample=upsample, demodulate=pick(True, False) if k == 3 else False,
                  with_noise=pick(True, False), with_bias=pick(True, False), activate=pick(True, False),
                  with_skip=pick(True, False))
        ref = modulated_conv_reference(**c)
        got = _run_ext(cpu_ext, c)
        assert got.shape == ref.shape
        worst = max(worst, (got - ref).abs().max().item())
    # the bound: float32 differences come only from summation order (input- vs weight-modulation)
    assert worst <= 1e-4, worst


@pytest.mark.parametrize("upsample, k", [(True, 3), (False, 3), (False, 1)])
def test_cpu_extension_is_deterministic_and_batch_independent(cpu_ext, upsample, k):
    gen = torch.Generator().manual_seed(2)
    c = _case(gen, 4, 16, 16 if k == 3 else 3, k, 8, upsample, k == 3, True, True, k == 3, with_skip=k == 1)
    a = _run_ext(cpu_ext, c)
    b = _run_ext(cpu_ext, c)
    assert torch.equal(a, b)
    # sample 2 alone gives the same picture as inside the batch (per-sample styles really are per sample)
    single = dict(c, x=c["x"][2:3], style=c["style"][2:3], skip=None if c["skip"] is None else c["skip"][2:3])
    assert (_run_ext(cpu_ext, single) - a[2:3]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("upsample, k, taps", [(True, 3, (1, 3, 3, 1)), (True, 3, (1, 2, 1)),
                                               (True, 3, (1, 3, 3, 1, 1)), (False, 3, (1, 3, 3, 1)),
                                               (False, 1, (1, 3, 3, 1)), (False, 1, (1, 2, 1))])
def test_cpu_extension_paths_equal_reference(cpu_ext, upsample, k, taps):
    """Each code path of the CPU kernel (separable blur fused with the epilogue on a channels-last or NCHW
    transposed-conv output, the 1x1 per-sample GEMM, the polyphase skip up-sampling) with odd sizes and FIR
    lengths, and a non-separable blur (the depthwise fallback)."""
    gen = torch.Generator().manual_seed(7)
    kernels = [blur_kernel_2d(taps, gain=4.0)]
    if upsample:
        kernels.append(torch.rand(4, 4, generator=gen) + 0.1)  # not separable
    for blur in kernels:
        for size, in_ch, out_ch, batch in ((3, 5, 7, 1), (7, 24, 3, 2), (16, 64, 48, 3)):
            c = _case(gen, batch, in_ch, out_ch, k, size, upsample, demodulate=k == 3, with_noise=k == 3,
                      with_bias=True, activate=k == 3, with_skip=True)
            c["blur"] = blur
            c["skip_kernel"] = blur_kernel_2d(taps, gain=4.0)
            try:
                ref = modulated_conv_reference(**c)
            except RuntimeError:
                continue  # a blur this size does not fit this conv (the reference refuses it too)
            got = _run_ext(cpu_ext, c)
            assert got.shape == ref.shape
            assert (got - ref).abs().max().item() <= 1e-4


def test_cpu_extension_sees_in_place_weight_changes(cpu_ext):
    """Style-independent terms are cached per weight: an in-place change (version counter) must recompute."""
    gen = torch.Generator().manual_seed(8)
    for upsample in (False, True):
        c = _case(gen, 2, 16, 8, 3, 8, upsample, True, False, True, True)
        first = _run_ext(cpu_ext, c)
        assert (first - modulated_conv_reference(**c)).abs().max().item() <= 1e-4
        with torch.no_grad():
            c["weight"][:, :4].mul_(-3.0)
        second = _run_ext(cpu_ext, c)
        assert (second - modulated_conv_reference(**c)).abs().max().item() <= 1e-4
        assert (second - first).abs().max().item() > 1e-2
        # a fresh weight tensor with the same values as an older one gives the same output
        c["weight"] = c["weight"].clone()
        assert torch.equal(_run_ext(cpu_ext, c), second)


def test_reference_matches_unfused_formulation():
    """The reference's grouped per-sample conv equals the textbook order on one sample: conv with the
    modulated, demodulated weight, then blur (an independent loop-free check of the batching)."""
    gen = torch.Generator().manual_seed(3)
    c = _case(gen, 3, 8, 6, 3, 6, True, True, False, False, False)
    out = modulated_conv_reference(**c)
    for b in range(3):
        w = c["scale"] * c["weight"] * c["style"][b].view(1, -1, 1, 1)
        w = w / torch.sqrt(w.pow(2).sum([1, 2, 3], keepdim=True) + 1e-8)
        y = F.conv_transpose2d(c["x"][b:b + 1], w.transpose(0, 1), stride=2)
        k = c["blur"].flip([0, 1])[None, None].expand(y.shape[1], 1, 4, 4)
        y = F.conv2d(F.pad(y, (1, 1, 1, 1)), k, groups=y.shape[1])
        assert (y - out[b:b + 1]).abs().max().item() <= 1e-5


def test_dispatch_uses_reference_when_grad_needed(cpu_ext, caplog):
    gen = torch.Generator().manual_seed(4)
    c = _case(gen, 2, 8, 8, 3, 8, False, True, False, True, True)
    c["style"].requires_grad_(True)
    with caplog.at_level(logging.INFO, logger="codec.ops"):
        ops._said.clear()
        y = ops.modulated_conv(**c)
    assert y.requires_grad and "gradients requested" in caplog.text
    y.sum().backward()
    assert c["style"].grad is not None and c["style"].grad.abs().sum() > 0
    assert ops.active_kernel("cpu", needs_grad=False) == "cpu"


def test_stv_ops_reference_forces_reference(monkeypatch, caplog):
    monkeypatch.setenv("STV_OPS", "reference")
    with caplog.at_level(logging.INFO, logger="codec.ops"):
        ops._said.clear()
        assert ops.active_kernel("cpu") == "reference"
        assert ops.active_kernel("cpu") == "reference"
    assert caplog.text.count("STV_OPS=reference") == 1  # said once, not per call


@pytest.mark.cuda_build
def test_cuda_source_compiles():
    """Compiles csrc/modulated_conv_cuda.cu with nvcc (about 2.5 min on 2 cores); cannot run without a GPU."""
    reason = extension.why_unbuildable("cuda")
    if reason:
        pytest.skip(f"cannot build the CUDA extension here: {reason}")
    module = extension.build("cuda")
    assert hasattr(module, "modulated_conv")
    if torch.cuda.is_available():
        gen = torch.Generator().manual_seed(6)
        c = _case(gen, 2, 16, 8, 3, 8, True, True, True, True, True)
        ref = modulated_conv_reference(**c)
        dev = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in c.items()}
        assert (_run_ext(module, dev).cpu() - ref).abs().max().item() <= 1e-4
