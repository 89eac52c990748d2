"""Generator + StyleSpace correctness on the shipped tiny model (closed loops with known truth)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codec import ops, zoo
from codec.models.stylegan2 import Generator, GeneratorConfig
from codec.models.stylespace import apply_offsets
from extension_required import cpu_extension

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def g() -> Generator:
    return zoo.load_generator("tiny")


@pytest.fixture(scope="module")
def w_plus(g) -> torch.Tensor:
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        w = g.mapping(torch.randn(3 * g.n_latent, g.style_dim, generator=gen))
    return w.view(3, g.n_latent, g.style_dim)  # a different w per row: a real W+ code


def test_config_f_layout_matches_stylespace_convention():
    layout = Generator(GeneratorConfig(size=1024)).layout
    assert layout.total == 9088 and len(layout) == 26
    assert [i for i, layer in enumerate(layout.layers) if layer.is_torgb] == list(range(1, 26, 3))
    # DESIGN §7: l 0-14 -> 512, 15-17 -> 256, 18-20 -> 128, 21-23 -> 64, 24-25 -> 32; 6048 without toRGB
    expect = [512] * 15 + [256] * 3 + [128] * 3 + [64] * 3 + [32] * 2
    assert list(layout.channels) == expect
    assert sum(c for c, layer in zip(layout.channels, layout.layers) if not layer.is_torgb) == 6048
    assert [layer.name for layer in layout.layers[:5]] == ["conv1_4", "torgb_4", "conv0_8", "conv1_8", "torgb_8"]
    assert layout.layers[6].name == "conv1_16"  # so the seed's "6_202" is conv1_16, channel 202
    for flat in (0, 511, 512, 4321, 9087):
        assert layout.flat_index(*layout.layer_channel(flat)) == flat
    assert layout.flat_index(25, 31) == 9087
    with pytest.raises(IndexError):
        layout.flat_index(24, 32)


def test_flatten_unflatten_round_trip(g, w_plus):
    styles = g.styles(w_plus)
    flat = g.layout.flatten(styles)
    assert flat.shape == (3, g.layout.total)
    assert all(torch.equal(a, b) for a, b in zip(styles, g.layout.unflatten(flat)))


@torch.no_grad()
def test_each_w_plus_row_drives_the_layers_of_the_rosinality_convention(g, w_plus):
    """DESIGN §7: conv1 <- w[0], to_rgb1 <- w[1], then per block conv_up <- w[i], conv <- w[i+1],
    to_rgb <- w[i+2], i += 2 (a toRGB shares its row with the next block's first conv). Moving one row of W+
    must change exactly those layers' styles, and the picture."""
    expected_rows = [0, 1]
    for block in range(len(g.to_rgbs)):
        expected_rows += [1 + 2 * block, 2 + 2 * block, 3 + 2 * block]
    assert len(expected_rows) == len(g.layout.layers)
    base_styles, base_image = g.styles(w_plus), g(w_plus)
    for row in range(g.n_latent):
        moved = w_plus.clone()
        moved[:, row] += 1.0
        changed = [i for i, (a, b) in enumerate(zip(g.styles(moved), base_styles)) if not torch.equal(a, b)]
        assert changed == [i for i, r in enumerate(expected_rows) if r == row], row
        assert (g(moved) - base_image).abs().max() > 1e-3 if changed else torch.equal(g(moved), base_image), row


@torch.no_grad()
def test_zero_offset_is_bit_identical_and_one_channel_changes_only_what_it_should(g, w_plus):
    styles = g.styles(w_plus)
    base = g.synthesize(styles)
    indices = [(6, 5), (9, 3)]
    zero = apply_offsets(styles, indices, torch.zeros(3, 2))
    assert torch.equal(g.synthesize(zero), base)
    for layer_index, layer in enumerate(g.layout.layers):
        alpha = torch.zeros(3, 1)
        alpha[1] = 3.0  # only sample 1 gets the offset
        edited = apply_offsets(styles, [(layer_index, 2)], alpha)
        assert all(torch.equal(a, b) for i, (a, b) in enumerate(zip(edited, styles)) if i != layer_index)
        changed = edited[layer_index] != styles[layer_index]
        assert changed.sum() == 1 and changed[1, 2]
        out = g.synthesize(edited)
        assert torch.equal(out[0], base[0]) and torch.equal(out[2], base[2])  # other frames untouched
        assert (out[1] - base[1]).abs().max() > 1e-3, layer.name
        coarser = layer.resolution // 2
        if coarser >= 4:  # nothing at a lower resolution may change
            assert torch.equal(g.synthesize(edited, stop_at=coarser), g.synthesize(styles, stop_at=coarser))


def test_apply_offsets_is_differentiable(g, w_plus):
    styles = [s.detach() for s in g.styles(w_plus)]
    alpha = torch.zeros(3, 2, requires_grad=True)
    img = g.synthesize(apply_offsets(styles, [(3, 1), (7, 4)], alpha))
    img.square().mean().backward()
    assert alpha.grad is not None and alpha.grad.abs().min() > 0


@torch.no_grad()
def test_early_exit_equals_skip_branch_rgb(g, w_plus):
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, r=r: seen.__setitem__(r, out))
             for m, r in zip([g.to_rgb1, *g.to_rgbs], g.config.resolutions)]
    try:
        g(w_plus)
    finally:
        for h in hooks:
            h.remove()
    for r in g.config.resolutions:
        early = g(w_plus, stop_at=r)
        assert early.shape == (3, 3, r, r)
        assert torch.equal(early, seen[r])


@torch.no_grad()
def test_same_input_same_bytes_across_runs_and_processes(g, w_plus):
    a = g(w_plus[:1]).numpy().tobytes()
    assert a == g(w_plus[:1]).numpy().tobytes()
    script = ("import torch,hashlib;from codec import zoo;g=zoo.load_generator('tiny');"
              "torch.set_grad_enabled(False);gen=torch.Generator().manual_seed(11);"
              "w=g.mapping(torch.randn(3*g.n_latent,g.style_dim,generator=gen)).view(3,g.n_latent,g.style_dim);"
              "print(hashlib.sha256(g(w[:1]).numpy().tobytes()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip().splitlines()[-1] == hashlib.sha256(a).hexdigest()


@torch.no_grad()
def test_fused_path_matches_reference_path(g, w_plus, monkeypatch):
    cpu_extension()  # without the kernel both runs below would take the reference path (fails under CI=true)
    monkeypatch.delenv("STV_OPS", raising=False)
    assert ops.active_kernel("cpu") == "cpu"
    fused = g(w_plus)
    monkeypatch.setenv("STV_OPS", "reference")
    assert ops.active_kernel("cpu") == "reference"
    reference = g(w_plus)
    assert (fused - reference).abs().max().item() <= 1e-4
    assert not torch.equal(fused, reference)  # two summation orders: the paths really differ in the last bits


@torch.no_grad()
def test_float16_close_to_float32(g, w_plus):
    g16 = zoo.load_generator("tiny", dtype=torch.float16)
    full = g(w_plus)
    half = g16(w_plus.half()).float()
    # fp16 keeps ~3 decimal digits; over 14 layers the image error stays within a few 1e-3 of a [-1,1] range
    err = (half - full).abs()
    assert err.mean().item() < 5e-3 and err.max().item() < 5e-2, (err.mean().item(), err.max().item())


@torch.no_grad()
def test_tiny_images_are_useful_for_closed_loop_tests(g):
    gen = torch.Generator().manual_seed(12)
    w = g.mapping(torch.randn(32, g.style_dim, generator=gen))
    img = g(w)
    per_image_std = img.std(dim=(1, 2, 3))
    assert per_image_std.min() > 0.1 and per_image_std.max() < 0.6  # contrast, not flat, not saturated
    assert (img.abs() > 1).float().mean() < 0.02  # rarely clipped
    assert img.std(dim=0).mean() > 0.1  # different w, different pictures
    # structure at several scales: energy in every band of the Laplacian-like pyramid
    for r in g.config.resolutions[1:]:
        coarse = torch.nn.functional.interpolate(img, size=(r // 2, r // 2), mode="area")
        fine = torch.nn.functional.interpolate(img, size=(r, r), mode="area")
        detail = fine - torch.nn.functional.interpolate(coarse, size=(r, r), mode="bilinear", align_corners=False)
        assert detail.std() > 0.02, r
    # every StyleSpace layer visibly changes the image when its styles move by one unit
    styles = g.styles(w[:8])
    base = g.synthesize(styles)
    for index, layer in enumerate(g.layout.layers):
        moved = list(styles)
        moved[index] = styles[index] + torch.randn(styles[index].shape, generator=gen)
        assert (g.synthesize(moved) - base).abs().mean() > 0.01, layer.name


def test_tiny_latent_avg_is_the_mean_of_mapping(g):
    gen = torch.Generator().manual_seed(13)
    with torch.no_grad():
        w = g.mapping(torch.randn(20000, g.style_dim, generator=gen))
    # different z than the builder's: the two means differ by sampling error, ~ std / sqrt(n) per entry
    bound = 6 * (w.std(0) / 20000**0.5).max().item()
    assert (w.mean(0) - g.latent_avg).abs().max().item() < bound


def test_shipped_tiny_matches_manifest_and_header():
    file = zoo.path("tiny")
    assert zoo.generator_digest("tiny") == zoo.entry("tiny").sha256 == zoo.sha256_of(file)
    assert file.with_suffix(".json").exists()


@pytest.mark.slow
def test_tiny_builder_reproduces_the_shipped_weights(tmp_path):
    """The builder is seeded: it rebuilds the shipped file's tensors (to float32 rounding of the calibration,
    see the builder's doc: the shipped file was calibrated on the first fused kernel)."""
    from safetensors import safe_open

    out = tmp_path / "tiny.safetensors"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_tiny_model.py"), "--out", str(out)], check=True,
                   cwd=ROOT, capture_output=True)
    with safe_open(str(zoo.path("tiny")), "pt") as shipped, safe_open(str(out), "pt") as rebuilt:
        assert set(shipped.keys()) == set(rebuilt.keys()) and shipped.metadata() == rebuilt.metadata()
        for k in shipped.keys():
            a, b = shipped.get_tensor(k), rebuilt.get_tensor(k)
            assert (a - b).abs().max() <= 1e-6 * a.abs().max().clamp_min(1e-12), k
