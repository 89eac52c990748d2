"""BiSeNet face parsing: the 79999_iter.pth layout loads strict; parse gives probabilities; L_FP is a distance."""

from __future__ import annotations

import re

import pytest
import torch

from codec import zoo
from codec.errors import ModelError
from codec.models.bisenet import CLASSES, face_parsing_loss, load_bisenet, parse, seeded_standin
from official_layouts import bisenet_face_parsing_layout, synthetic_state


@pytest.fixture(scope="module")
def release_state():
    return synthetic_state(bisenet_face_parsing_layout(), seed=7)


@pytest.fixture(scope="module")
def standin():
    return seeded_standin(0)


def test_release_layout_loads_strict(tmp_path, release_state):
    path = tmp_path / "79999_iter.pth"
    torch.save(release_state, path)  # the release is a bare state_dict
    net = load_bisenet(path)
    loaded = net.state_dict()
    assert set(loaded) == set(release_state)
    assert all(torch.equal(loaded[k], release_state[k]) for k in release_state)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert net.n_classes == len(CLASSES) == 19
    with torch.no_grad():
        probs = parse(net, torch.rand(1, 3, 40, 48) * 2 - 1, size=64)
    assert probs.shape == (1, 19, 40, 48)


def test_layout_facts():
    # a few keys named in the release, and no spatial path ('sp.'): the released BiSeNet builds none
    keys = dict(bisenet_face_parsing_layout())
    assert keys["cp.resnet.conv1.weight"] == (64, 3, 7, 7)
    assert keys["cp.arm16.conv.conv.weight"] == (128, 256, 3, 3)
    assert keys["ffm.convblk.conv.weight"] == (256, 256, 1, 1)
    assert keys["conv_out.conv_out.weight"] == (19, 256, 1, 1)
    assert keys["conv_out16.conv_out.weight"] == keys["conv_out32.conv_out.weight"] == (19, 64, 1, 1)
    assert not any(k.startswith("sp.") or ".fc." in k for k in keys)
    assert CLASSES[0] == "background" and CLASSES[1] == "skin" and CLASSES[17] == "hair" and CLASSES[18] == "hat"


def test_wrong_layout_is_a_clear_error(release_state):
    broken = {k: v for k, v in release_state.items() if not k.startswith("ffm.conv2")}
    with pytest.raises(ModelError, match="missing.*ffm.conv2"):
        load_bisenet(broken)
    extra = dict(release_state, **{"sp.conv1.conv.weight": torch.zeros(64, 3, 7, 7)})
    with pytest.raises(ModelError, match="unexpected.*sp.conv1"):
        load_bisenet(extra)
    with pytest.raises(ModelError, match="layout not recognised"):
        load_bisenet({"fc.weight": torch.zeros(2, 2)})


def test_checkpoint_without_batch_counters_still_loads(release_state):
    legacy = {k: v for k, v in release_state.items() if not k.endswith("num_batches_tracked")}
    assert len(legacy) < len(release_state)
    net = load_bisenet(legacy)
    assert torch.equal(net.state_dict()["ffm.conv1.weight"], release_state["ffm.conv1.weight"])


def test_standin_is_seeded(standin):
    a, b = standin.state_dict(), seeded_standin(0).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert set(a) == set(dict(bisenet_face_parsing_layout()))  # the release's architecture
    assert not torch.equal(a["conv_out.conv_out.weight"], seeded_standin(1).state_dict()["conv_out.conv_out.weight"])


# (image side, the side the net runs at, batch): native size; resized up and back; the release's 512
@pytest.mark.parametrize("side, size, batch", [(64, None, 2), (48, 96, 2), (512, 512, 1)])
def test_parse_gives_probabilities_at_the_input_size(standin, side, size, batch):
    images = torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(side)) * 2 - 1
    with torch.no_grad():
        probs = parse(standin, images, size=size)
    assert probs.shape == (batch, 19, side, side)
    assert (probs >= 0).all()
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(batch, side, side))
    if batch > 1:
        assert not torch.allclose(probs[0], probs[1], atol=1e-3)  # the output depends on the image


def test_face_parsing_loss_is_a_distance_with_gradients(standin):
    gen = torch.Generator().manual_seed(0)
    targets = torch.rand(3, 3, 64, 64, generator=gen) * 2 - 1
    others = torch.rand(3, 3, 64, 64, generator=gen) * 2 - 1
    images = others.clone().requires_grad_(True)
    same = face_parsing_loss(standin, targets, targets, size=None)
    assert same.shape == (3,)
    torch.testing.assert_close(same, torch.zeros(3))
    loss = face_parsing_loss(standin, images, targets, size=None)
    assert loss.shape == (3,) and (loss > 1e-4).all() and (loss <= 2).all()
    loss.sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    # targets parsed once give the same loss; a mask averages the per-pixel distance over its area only
    with torch.no_grad():
        target_probs = parse(standin, targets, size=None)
        reused = face_parsing_loss(standin, others, target_probs, size=None, targets_parsed=True)
        torch.testing.assert_close(reused, loss.detach())
        torch.testing.assert_close(face_parsing_loss(standin, others, targets, torch.ones(1, 1, 64, 64), size=None),
                                   loss.detach())
        mask = torch.zeros(1, 1, 64, 64)
        mask[..., 16:48, 8:40] = 1
        per_pixel = (parse(standin, others, size=None) - target_probs).abs().sum(dim=1)
        expected = per_pixel[:, 16:48, 8:40].mean(dim=(1, 2))
        torch.testing.assert_close(face_parsing_loss(standin, others, targets, mask, size=None), expected)
    with pytest.raises(ValueError, match="do not match"):
        face_parsing_loss(standin, others, targets[..., :32, :32], size=None)


def test_manifest_names_a_verifiable_download():
    e = zoo.entry("bisenet_face_parsing")
    assert e.file == "79999_iter.pth" and e.direct and e.url.startswith("https://")
    assert re.fullmatch("[0-9a-f]{64}", e.sha256) and e.size == 53289463
    assert "non-commercial" in e.licence
