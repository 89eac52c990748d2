"""Golden files: the committed .stv files still read as their committed `stvinfo --json` says, their values are
the closed-form tracks they were written from, and format_spec.md's worked hex dump is the real file."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from codec.bitstream.header import EXT_BACKGROUND_VIDEO
from codec.bitstream import StvReader
from codec.bitstream.layout import hexdump
from codec.cli.stvinfo import main
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
GOLDEN = ["golden_raw.stv", "golden_entropy.stv", "golden_ext.stv"]


def load_maker():
    spec = importlib.util.spec_from_file_location("make_golden_files", ROOT / "tools" / "make_golden_files.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", GOLDEN)
def test_stvinfo_json_matches_the_committed_expectation(name):
    result = CliRunner().invoke(main, [str(DATA / name), "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    got["format"]["filename"] = name
    assert got == json.loads((DATA / name).with_suffix(".json").read_text())


@pytest.mark.parametrize("name, n_frames, phase", [("golden_raw.stv", 3, 0.0), ("golden_entropy.stv", 60, 0.5),
                                                    ("golden_ext.stv", 10, 1.0)])
def test_golden_values_are_the_tracks_within_half_a_step(name, n_frames, phase):
    reader = StvReader(DATA / name)
    truth = load_maker().tracks(n_frames, phase)
    assert len(reader) == n_frames
    # quantisation rounds to nearest: at most half a step, plus float32 rounding of the stored offset
    bound = reader.header.quant.scale / 2 + 1e-6 * (1 + np.abs(truth))
    assert (np.abs(reader.values() - truth) <= bound).all()


def test_golden_ext_has_a_known_and_an_unknown_extension_and_mixed_profiles():
    reader = StvReader(DATA / "golden_ext.stv")
    assert [tag for tag, _ in reader.header.extensions] == [b"note", b"zzz1"]
    assert reader.header.frame_count is None
    assert {c.profile_name for c in reader.chunks} == {"raw", "entropy"}


def test_spec_hexdump_is_the_golden_file():
    spec = (ROOT / "format_spec.md").read_text()
    block = re.search(r"<!-- hexdump:begin -->\n```\n(.*?)\n```\n<!-- hexdump:end -->", spec, re.S)
    assert block, "format_spec.md lost its worked example markers"
    assert block.group(1) == hexdump((DATA / "golden_raw.stv").read_bytes())


def test_regenerated_golden_files_decode_identically(tmp_path):
    # Bytes may differ with another zstd version (compressed latent); the decoded content may not.
    load_maker().write_golden(tmp_path)
    for name in GOLDEN:
        fresh, committed = StvReader(tmp_path / name), StvReader(DATA / name)
        assert np.array_equal(fresh.records(), committed.records())
        assert np.array_equal(fresh.header.id_latent, committed.header.id_latent)
        assert [tag for tag, _ in fresh.header.extensions] == [tag for tag, _ in committed.header.extensions]
        for (tag, made), (_, kept) in zip(fresh.header.extensions, committed.header.extensions):
            if tag == EXT_BACKGROUND_VIDEO:
                # an AV1 encoder's bytes may differ with its version or the CPU's instruction set: the video's
                # IVF head (size, frame count) must not
                assert made[:32] == kept[:32], name
            else:
                assert made == kept, (name, tag)
