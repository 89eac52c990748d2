"""Index sensitivity (eq. 5), channel selection, the channel tables, eq. 8 learning rates."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from codec import zoo
from codec.encoder import sensitivity as S
from codec.encoder.losses import lpips_distance, make_lpips
from codec.errors import ModelError, StvError
from codec.models.stylegan2 import GeneratorConfig, config_f_channels
from codec.models.stylespace import StyleSpaceLayout
from codec.preprocess.masks import canonical_masks

ROOT = Path(__file__).resolve().parents[1]
TINY_TABLE = ROOT / "weights" / "tiny-64-channels.json"
FFHQ_TABLE = ROOT / "weights" / "ffhq-1024-channels.json"
HELD_OUT_SEED = 1000  # identities the shipped table was NOT selected on (the tool uses seed + 1 = 1)


@pytest.fixture(scope="module")
def generator():
    return zoo.load_generator("tiny")


@pytest.fixture(scope="module")
def lpips_module():
    return make_lpips()


@pytest.fixture(scope="module")
def masks():
    return S.sensitivity_masks(canonical_masks(64), leak_margin=2)


@pytest.fixture(scope="module")
def spread(generator):
    return S.channel_spread(generator, samples=1000)


def test_perturbation_zero_offset_is_identical_and_change_grows_with_offset(generator, lpips_module, masks, spread):
    identity = S.sample_identities(generator, 1, seed=HELD_OUT_SEED)
    indices = [(5, 24), (9, 3), (12, 7)]  # one channel at 16, 32 and 64 pixels
    base = generator.styles(identity)
    with torch.no_grad():
        same = S.render_perturbed(generator, base, indices, torch.zeros(3, 2), None)
        reference = generator.synthesize(base).expand(3, -1, -1, -1)
        # a zero offset renders the unperturbed image (up to batch-size-dependent float rounding) ...
        torch.testing.assert_close(same[:, 0], reference, rtol=0, atol=1e-5)
        # ... and two zero offsets the same image: no change, so no LPIPS
        assert torch.equal(same[:, 0], same[:, 1])
        assert lpips_distance(lpips_module, same[:, 1], same[:, 0], masks[S.FACE]).abs().max() == 0
    # LPIPS(S_delta, S_0) over the face for delta = 0.25 .. 4 std: Gamma over [0, delta] times delta
    sizes = [0.25, 0.5, 1.0, 2.0, 4.0]
    change = np.stack([
        S.perturbation_gammas(generator, lpips_module, identity, indices,
                              S.offset_steps(spread, generator.layout, indices, (0.0, d)),
                              {S.FACE: masks[S.FACE]})[S.FACE].numpy() * d
        for d in sizes], axis=1)
    assert np.all(change > 0)
    assert np.all(np.diff(change, axis=1) > 0), change
    # negative offsets move the picture too (|delta| matters, not its sign)
    down = S.perturbation_gammas(generator, lpips_module, identity, indices,
                                 S.offset_steps(spread, generator.layout, indices, (-1.0, 0.0)),
                                 {S.FACE: masks[S.FACE]})[S.FACE].numpy()
    assert np.all(down > 0)


def test_shipped_tiny_channels_are_region_specific_on_new_identities(generator, lpips_module, masks, spread):
    table = S.load_channel_table(TINY_TABLE)
    mouth = [i for i, r in zip(table.indices, table.regions) if r == "mouth_jaw"]
    eyes = [i for i, r in zip(table.indices, table.regions) if r == "eyes_brows"]
    others = [i for i in S.candidate_indices(generator.layout) if i not in table.indices]
    unselected = [others[j] for j in np.random.default_rng(0).choice(len(others), 20, replace=False)]
    identities = S.sample_identities(generator, 2, seed=HELD_OUT_SEED)

    def mouth_over_eyes(indices):
        """Median over channels of Gamma_mouth / Gamma_eyes (eq. 5, summed over the identities)."""
        offsets = S.offset_steps(spread, generator.layout, indices, (-1.0, 1.0))
        sums = {r: np.zeros(len(indices)) for r in ("mouth_jaw", "eyes_brows")}
        for n in range(identities.shape[0]):
            g = S.perturbation_gammas(generator, lpips_module, identities[n:n + 1], indices, offsets,
                                      {r: masks[r] for r in sums})
            for r in sums:
                sums[r] += g[r].numpy()
        return float(np.median(sums["mouth_jaw"] / sums["eyes_brows"]))

    chosen_mouth, chosen_eyes, baseline = mouth_over_eyes(mouth), mouth_over_eyes(eyes), mouth_over_eyes(unselected)
    # Masked LPIPS is not proportional to the mask's area (its features are normalised per location), so the
    # ratio of a channel with no spatial preference is not 1: random unselected channels give that baseline.
    # Measured on these held-out identities (2026-11-25): mouth channels 1.555, eye channels 0.367, the 20
    # unselected channels 0.898, i.e. mouth channels 1.73x the baseline, eye channels 2.45x below it, mouth vs eye
    # channels 4.24x. The margins (1.3x, 1.8x, 3.0x) leave 25-30% headroom for platform float noise (the run is
    # seeded) and still fail a table of random channels, which sits at 1x by construction.
    assert chosen_mouth > 1.3 * baseline, (chosen_mouth, baseline)
    assert chosen_eyes < baseline / 1.8, (chosen_eyes, baseline)
    assert chosen_mouth > 3.0 * chosen_eyes, (chosen_mouth, chosen_eyes)


def test_shipped_tiny_table_fits_the_generator(generator):
    table = S.load_channel_table(TINY_TABLE)
    assert table.generator == "tiny"
    assert table.generator_sha256 == zoo.generator_digest("tiny")
    assert len(table.indices) == 32 and len(set(table.indices)) == 32
    table.check_layout(generator.layout)
    assert not any(generator.layout.layers[l].is_torgb for l, _ in table.indices)
    counts = dict(S.SensitivitySettings().allocation)
    assert {r: table.regions.count(r) for r in counts} == counts
    # regions are contiguous blocks in bitstream order
    assert table.regions == [r for r in S.REGIONS for _ in range(counts[r])]
    assert all(g is not None and g > 0 for g in table.gammas)


def test_ffhq_table_fits_config_f_and_names_its_source():
    table = S.load_channel_table(FFHQ_TABLE)
    config = GeneratorConfig()
    layout = StyleSpaceLayout.for_generator(config.resolutions, config_f_channels(1024))
    table.check_layout(layout)
    assert len(set(table.indices)) == 32
    assert table.extra["verified"] is False
    assert "DavieHR/expressive_stylegan_encoding" in table.extra["source"]["repository"]
    assert {r: table.regions.count(r) for r in S.REGIONS} == {"mouth_jaw": 21, "eyes_brows": 10, "pupils": 1}
    assert table.indices[0] == (6, 113) and table.indices[-1] == (9, 409)


def test_table_round_trip_and_refusals(tmp_path):
    table = S.load_channel_table(TINY_TABLE)
    out = tmp_path / "t.json"
    S.save_channel_table(table, out)
    again = S.load_channel_table(out)
    assert again == table
    assert out.read_bytes() == TINY_TABLE.read_bytes()  # deterministic bytes: the shipped file re-serialises as is
    data = json.loads(out.read_text())
    for broken, message in [
        ({**data, "channels": data["channels"][:31]}, "exactly 32"),
        ({**data, "channels": data["channels"][:31] + data["channels"][:1]}, "repeats"),
        ({**data, "channels": [{**data["channels"][0], "region": "nose"}] + data["channels"][1:]}, "region"),
        ({k: v for k, v in data.items() if k != "channels"}, "not a channel table"),
    ]:
        out.write_text(json.dumps(broken))
        with pytest.raises(StvError, match=message):
            S.load_channel_table(out)
    out.write_text("{")
    with pytest.raises(StvError, match="not JSON"):
        S.load_channel_table(out)
    with pytest.raises(StvError, match="cannot read"):
        S.load_channel_table(tmp_path / "missing.json")


def test_check_layout_refuses_torgb_and_out_of_range(generator):
    table = S.load_channel_table(TINY_TABLE)
    torgb = dataclasses.replace(table, indices=[(1, 0)] + table.indices[1:])
    with pytest.raises(ModelError, match="toRGB"):
        torgb.check_layout(generator.layout)
    wide = dataclasses.replace(table, indices=[(12, 40)] + table.indices[1:])  # layer 12 has 32 channels
    with pytest.raises(ModelError, match="does not fit"):
        wide.check_layout(generator.layout)


def test_candidates_skip_torgb(generator):
    candidates = S.candidate_indices(generator.layout)
    assert len(candidates) == 640  # 976 style channels minus 336 toRGB ones
    assert not any(generator.layout.layers[l].is_torgb for l, _ in candidates)


def test_index_learning_rates_eq8():
    gammas = [0.4, 0.1, 0.0, 2.0, 1.0, 0.0, 0.0]
    regions = ["mouth_jaw", "mouth_jaw", "mouth_jaw", "eyes_brows", "eyes_brows", "pupils", "pupils"]
    eta = S.index_learning_rates(gammas, regions)
    floor = math.exp(-1.5)
    assert np.all(eta >= floor * (1 - 1e-12)) and np.all(eta <= 1.0)  # numpy vs math exp: last-ulp slack
    assert eta[0] == pytest.approx(floor) and eta[3] == pytest.approx(floor)  # each region's most sensitive
    assert eta[1] == pytest.approx(math.exp(-1.5 * 0.1 / 0.4))
    assert eta[4] == pytest.approx(math.exp(-0.75))
    assert eta[2] == 1.0 and np.all(eta[5:] == 1.0)  # insensitive index / all-zero region: full rate
    assert eta[0] < eta[1] < eta[2]  # more sensitive, smaller steps
    with pytest.raises(ValueError):
        S.index_learning_rates([0.1, -1.0], ["pupils", "pupils"])


def test_shortlist_finds_planted_channels_and_ignores_dead_ones():
    rng = np.random.default_rng(0)
    n = 200

    def screen():
        inside = torch.from_numpy(rng.uniform(1.0, 2.0, n))
        leak = torch.from_numpy(rng.uniform(2.0, 4.0, n))
        inside[[3, 7]], leak[[3, 7]] = 3.0, 0.3  # localised and strong: specificity ~0.9
        inside[11], leak[11] = 1e-6, 0.0  # perfectly "specific" but it barely moves anything
        return {"mouth_jaw": inside, S.leak_name("mouth_jaw"): leak}

    order, passes = S.select_shortlist([screen(), screen(), screen()], "mouth_jaw", 5, 0.5, 0.9)
    assert order[:2] == [3, 7] and passes[3] == 3 and passes[7] == 3
    assert 11 not in order and passes[11] == 0
    order, _ = S.select_shortlist([screen()], "mouth_jaw", 5, 0.5, 0.9, exclude={3})
    assert order[0] == 7 and 3 not in order


def test_settings_must_allocate_32():
    with pytest.raises(ValueError, match="32"):
        S.SensitivitySettings(allocation=(("mouth_jaw", 20), ("eyes_brows", 10), ("pupils", 1)))


def test_tool_refuses_to_overwrite(tmp_path):
    out = tmp_path / "t.json"
    out.write_text("{}")
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "sensitivity.py"), "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [f"sensitivity: error: {out} exists; pass -y to overwrite"]


# The gammas are float32 LPIPS averages over thousands of renders: their last digits follow the summation order,
# which another CPU's kernels change (issue 11). Measured relative differences from the shipped table: an AVX-512
# Xeon up to 2.4e-6 (8 of 32); here, the PyTorch reference path instead of the fused kernel up to 2.6e-6 (13 of
# 32, median 8.8e-7; renders in batches of 16 instead of 64 changed nothing); the fused kernel's own change of
# summation order (commit eec9e7b) up to 3.3e-6. The tolerance is about 10 times the largest: room for other
# kernels' rounding, while a change to what is computed rather than to its rounding still shows (the channels
# and regions, which such differences must never change, are compared exactly).
GAMMA_RTOL_ACROSS_MACHINES = 3e-5


@pytest.mark.slow
def test_tool_reproduces_the_shipped_tiny_table(tmp_path):
    """The full analysis (~2 min on 2 idle cores, ~7 min when shared) gives back the shipped table's channels."""
    out = tmp_path / "channels.json"
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "sensitivity.py"), "--out", str(out), "--quiet"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    made, shipped = S.load_channel_table(out), S.load_channel_table(TINY_TABLE)
    assert made.indices == shipped.indices and made.regions == shipped.regions  # the choice itself: exact
    np.testing.assert_allclose(made.gammas, shipped.gammas, rtol=GAMMA_RTOL_ACROSS_MACHINES)
    assert json.loads(run.stdout.strip().splitlines()[-1])["regions"] == {"mouth_jaw": 20, "eyes_brows": 10,
                                                                          "pupils": 2}
