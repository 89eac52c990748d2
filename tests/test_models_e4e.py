"""e4e loader and encoder: the released checkpoint layout loads strict, the tiny variant has the same structure."""

from __future__ import annotations

import argparse

import pytest
import torch

from codec.errors import ModelError
from codec.models.e4e import E4EConfig, E4EEncoder, load_e4e_checkpoint, save_e4e_checkpoint, tiny_e4e_config
from official_layouts import E4E_DECODER_SAMPLE, E4E_OPTS_SAMPLE, e4e_encoder_layout, synthetic_state


def release_container(encoder_state, decoder_state, latent_avg, opts):
    """The dict e4e's Coach saves: pSp.state_dict() under 'state_dict', vars(opts), latent_avg."""
    state = {f"encoder.{k}": v for k, v in encoder_state.items()}
    state.update({f"decoder.{k}": v for k, v in decoder_state.items()})
    return {"state_dict": state, "opts": opts, "latent_avg": latent_avg}


@pytest.fixture(scope="module")
def full_release(tmp_path_factory):
    # Stride-0 tensors: the exact full layout (267 M parameters) in a file of a few hundred kB.
    encoder_state = synthetic_state(e4e_encoder_layout(), seed=1, broadcast=True)
    decoder_state = synthetic_state(E4E_DECODER_SAMPLE, seed=2)
    latent_avg = torch.randn(18, 512, generator=torch.Generator().manual_seed(3))
    path = tmp_path_factory.mktemp("e4e") / "e4e_ffhq_encode.pt"
    torch.save(release_container(encoder_state, decoder_state, latent_avg, dict(E4E_OPTS_SAMPLE)), path)
    return path, encoder_state, decoder_state, latent_avg


def test_release_layout_loads_strict_with_weights_only(full_release):
    path, encoder_state, decoder_state, latent_avg = full_release
    encoder, decoder, avg, opts = load_e4e_checkpoint(path)
    assert encoder.config == E4EConfig()  # 18 x 512 rows, 256 input, IR-SE50 trunk: read off the tensors
    loaded = encoder.state_dict()
    assert set(loaded) == set(encoder_state)
    assert all(torch.equal(loaded[k], encoder_state[k].expand_as(loaded[k])) for k in encoder_state)
    assert set(decoder) == {k for k, _ in E4E_DECODER_SAMPLE}
    assert all(torch.equal(decoder[k], decoder_state[k]) for k in decoder)
    assert torch.equal(avg, latent_avg) and torch.equal(encoder.latent_avg, latent_avg)
    assert opts == E4E_OPTS_SAMPLE
    assert not encoder.training


def test_missing_or_misshaped_encoder_key_is_a_clear_error():
    encoder_state = synthetic_state(e4e_encoder_layout(), seed=1, broadcast=True)
    broken = dict(encoder_state)
    del broken["styles.17.linear.bias"]
    with pytest.raises(ModelError, match="missing.*styles.17.linear.bias"):
        load_e4e_checkpoint(release_container(broken, {}, None, {}))
    reshaped = dict(encoder_state)
    reshaped["latlayer2.weight"] = torch.zeros(512, 64, 1, 1)
    with pytest.raises(ModelError, match="wrong shape.*latlayer2.weight"):
        load_e4e_checkpoint(release_container(reshaped, {}, None, {}))
    with pytest.raises(ModelError, match="no 'state_dict'"):
        load_e4e_checkpoint({"encoder": {}})


def test_pickled_objects_are_refused_not_executed(tmp_path):
    # A checkpoint whose opts is an argparse.Namespace (not plain data) must not be unpickled.
    path = tmp_path / "namespace_opts.pt"
    torch.save({"state_dict": {}, "opts": argparse.Namespace(a=1)}, path)
    with pytest.raises(ModelError, match="not plain tensors"):
        load_e4e_checkpoint(path)
    with pytest.raises(ModelError, match="no such file"):
        load_e4e_checkpoint(tmp_path / "absent.pt")


def seeded_tiny_encoder(seed: int) -> E4EEncoder:
    torch.manual_seed(seed)
    return E4EEncoder(tiny_e4e_config(n_styles=10, style_dim=64, input_size=64)).eval()


def test_tiny_encoder_round_trips_through_the_release_container(tmp_path):
    encoder = seeded_tiny_encoder(0)
    latent_avg = torch.randn(10, 64)
    path = tmp_path / "tiny_e4e.pt"
    torch.save(release_container(encoder.state_dict(), {}, latent_avg, {"stylegan_size": 64}), path)
    loaded, decoder, avg, _ = load_e4e_checkpoint(path)
    assert loaded.config == encoder.config and decoder == {}
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        expected = encoder(images) + latent_avg  # the source encoder has a zero latent_avg
        got = loaded(images)
    assert got.shape == (3, 10, 64)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # and the writer produces the same container: saving the loaded encoder reproduces it exactly
    save_e4e_checkpoint(tmp_path / "again.pt", loaded, opts={"stylegan_size": 64})
    again, _, again_avg, again_opts = load_e4e_checkpoint(tmp_path / "again.pt")
    assert torch.equal(again_avg, latent_avg) and again_opts == {"stylegan_size": 64}
    with torch.no_grad():
        torch.testing.assert_close(again(images), expected, rtol=0, atol=0)


def test_progressive_stage_controls_which_rows_get_deltas():
    encoder = seeded_tiny_encoder(1)
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        full = encoder(images)
        encoder.progressive_stage = 0  # e4e's first training stage: one w for every row
        single = encoder(images)
        encoder.progressive_stage = 4  # rows 1..4 get deltas, rows 5.. copy w0
        partial = encoder(images)
    assert torch.equal(single, single[:, :1].expand_as(single))
    assert torch.equal(partial[:, :5], full[:, :5])
    assert torch.equal(partial[:, 5:], full[:, :1].expand(-1, 5, -1))
    # the deltas are real: rows differ from w0 at the inference stage
    assert (full[:, 1:] - full[:, :1]).abs().amax() > 1e-3


def test_encoder_rejects_wrong_input_size():
    with pytest.raises(ValueError, match=r"\[B, 3, 64, 64\]"):
        seeded_tiny_encoder(0)(torch.zeros(1, 3, 32, 32))


@pytest.mark.slow
def test_full_size_forward_gives_18_rows_of_512():
    # ~15 s on 2 cores: the 98 stride-2 convs of the 18 map-to-style blocks dominate.
    state = synthetic_state(e4e_encoder_layout(), seed=4)
    encoder, _, _, _ = load_e4e_checkpoint(release_container(state, {}, torch.zeros(18, 512), {}))
    with torch.no_grad():
        w = encoder(torch.rand(1, 3, 256, 256) * 2 - 1)
    assert w.shape == (1, 18, 512) and torch.isfinite(w).all()
