"""ArcFace IR-SE50: the model_ir_se50.pth layout loads strict; the identity metric behaves like a cosine."""

from __future__ import annotations

import pytest
import torch

from codec.errors import ModelError
from codec.models.arcface import crop_face_for_identity, load_arcface, seeded_standin
from official_layouts import arcface_ir_se50_layout, synthetic_state


@pytest.fixture(scope="module")
def release_state():
    return synthetic_state(arcface_ir_se50_layout(), seed=5)


def test_release_layout_loads_strict_and_embeds(tmp_path, release_state):
    path = tmp_path / "model_ir_se50.pth"
    torch.save(release_state, path)  # the release is a bare state_dict
    net = load_arcface(path)
    loaded = net.state_dict()
    assert set(loaded) == set(release_state)
    assert all(torch.equal(loaded[k], release_state[k]) for k in release_state)
    assert not net.training
    with torch.no_grad():
        emb = net.identity_embedding(torch.rand(2, 3, 256, 256) * 2 - 1)
    assert emb.shape == (2, 512)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


def test_checkpoint_without_batch_counters_still_loads(release_state):
    # Checkpoints saved before PyTorch 0.4.1 have no num_batches_tracked; the counters never affect eval.
    legacy = {k: v for k, v in release_state.items() if not k.endswith("num_batches_tracked")}
    assert len(legacy) < len(release_state)
    net = load_arcface(legacy)
    assert torch.equal(net.state_dict()["output_layer.3.weight"], release_state["output_layer.3.weight"])


def test_wrong_layout_is_a_clear_error(release_state):
    broken = {k: v for k, v in release_state.items() if not k.startswith("output_layer.4")}
    with pytest.raises(ModelError, match="missing.*output_layer.4"):
        load_arcface(broken)
    with pytest.raises(ModelError, match="layout not recognised"):
        load_arcface({"fc.weight": torch.zeros(2, 2)})


def test_standin_is_seeded():
    a, b, c = seeded_standin(3), seeded_standin(3), seeded_standin(4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.state_dict()["output_layer.3.weight"], c.state_dict()["output_layer.3.weight"])


def test_similarity_is_one_for_the_same_image_and_lower_for_others():
    net = seeded_standin(0)
    gen = torch.Generator().manual_seed(0)
    faces = torch.rand(4, 3, 256, 256, generator=gen) * 2 - 1
    others = torch.rand(4, 3, 256, 256, generator=gen) * 2 - 1
    nearby = (faces + 0.05 * torch.randn(faces.shape, generator=gen)).clamp(-1, 1)
    with torch.no_grad():
        same = net.identity_similarity(faces, faces)
        near = net.identity_similarity(faces, nearby)
        different = net.identity_similarity(faces, others)
    # unit vectors dotted with themselves in float32: 1 up to rounding (~1e-7 per term, 64 terms)
    torch.testing.assert_close(same, torch.ones(4), rtol=0, atol=1e-5)
    assert (different < 0.99).all()
    assert (near > different).all()  # a small perturbation keeps more identity than a different image


def test_only_the_face_crop_counts():
    # pSp's IDLoss looks at rows 35:223, columns 32:220 of the 256 image: changes outside must not matter.
    net = seeded_standin(1)
    faces = torch.rand(2, 3, 256, 256) * 2 - 1
    outside = faces.clone()
    outside[:, :, :35] = -1
    outside[:, :, :, 220:] = 1
    inside = faces.clone()
    inside[:, :, 100:160, 100:160] = 1
    with torch.no_grad():
        torch.testing.assert_close(net.identity_similarity(faces, outside), torch.ones(2), rtol=0, atol=1e-5)
        assert (net.identity_similarity(faces, inside) < 0.999).all()


def test_large_and_small_inputs_map_onto_the_256_frame():
    # A 1024 render average-pooled by 4 is the 256 image; a 64 render is upsampled onto it.
    image256 = torch.rand(1, 3, 256, 256)
    image1024 = image256.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    torch.testing.assert_close(crop_face_for_identity(image1024), crop_face_for_identity(image256))
    assert crop_face_for_identity(torch.rand(2, 3, 64, 64)).shape == (2, 3, 112, 112)
