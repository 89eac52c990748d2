"""LPIPS set-up offline: the real AlexNet trunk when its file is cached, a seeded one otherwise."""

from __future__ import annotations

import torch
import torchvision

from codec.encoder import losses


def test_cached_alexnet_weights_fill_the_lpips_trunk(tmp_path, monkeypatch):
    """A torchvision-layout AlexNet file in torch's hub cache must end up, tensor for tensor, in lpips' five
    trunk slices (a mapping error would leave a slice random and this would fail)."""
    monkeypatch.setattr(losses, "backbone_file", lambda: tmp_path / losses.ALEXNET_FILE)
    alexnet = torchvision.models.alexnet(weights=None)
    torch.save(alexnet.state_dict(), tmp_path / losses.ALEXNET_FILE)
    module = losses.make_lpips()
    loaded = dict(module.net.named_parameters())
    for key, value in alexnet.features.state_dict().items():
        index, rest = key.split(".", 1)
        slice_no = next(k for k, span in losses.LPIPS_ALEX_SLICES.items() if int(index) in span)
        assert torch.equal(loaded[f"slice{slice_no}.{index}.{rest}"], value)


def test_seeded_backbone_is_deterministic_and_leaves_global_rng_alone(monkeypatch):
    monkeypatch.setattr(losses, "backbone_file", lambda: None)
    torch.manual_seed(7)
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    first, second = losses.make_lpips(), losses.make_lpips()
    assert torch.equal(torch.rand(1), expected_next)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    assert float(losses.lpips_distance(first, image, image)) == 0.0
    assert float(losses.lpips_distance(first, image, -image)) > 0.0
