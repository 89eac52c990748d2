"""stvenc end to end on a demo clip rendered by the tiny model, and its handling of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from codec.bitstream import RECORD_SIZE, StvReader
from codec.bitstream.schema import CHUNK_OVERHEAD, PROFILE_ARITH
from codec.decoder.decode import stream_id_latent

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
N_FRAMES = 8
# Few optimisation steps: this test checks the wiring and the file, the closed-loop tests check accuracy.
QUICK = ["--project-steps", "10", "--pose-steps", "10", "--attribute-steps", "5", "--refine-rounds", "1", "-q"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    made = run(sys.executable, str(ROOT / "tools" / "make_demo_clip.py"), "demo.mkv", "--truth", "truth.json",
               "--frames", str(N_FRAMES), cwd=folder)
    assert made.returncode == 0, made.stderr
    return folder


@pytest.fixture(scope="module")
def encoded(demo):
    result = run(str(BIN / "stvenc"), "demo.mkv", "demo.stv", "--aligned", "--work-dir", "work", *QUICK, cwd=demo)
    assert result.returncode == 0, result.stderr
    return demo / "demo.stv"


def test_file_is_valid_and_sized_exactly(encoded):
    check = run(str(BIN / "stvinfo"), "--validate", str(encoded), cwd=encoded.parent)
    assert check.returncode == 0, check.stdout + check.stderr
    reader = StvReader(encoded)
    assert len(reader) == N_FRAMES
    # stvenc's default profile: arith chunks, their payloads and framing making up the rest of the file exactly
    assert {chunk.profile for chunk in reader.chunks} == {PROFILE_ARITH}
    chunk_bytes = sum(CHUNK_OVERHEAD + chunk.payload_size for chunk in reader.chunks)
    assert encoded.stat().st_size == reader.header_size + chunk_bytes
    assert chunk_bytes < N_FRAMES * RECORD_SIZE  # fewer bytes than the 70-byte records
    assert reader.header.pose_editor == {"editor": "linear", "model": "tiny-pose"}


def test_truth_json_has_stvinfo_units_and_shapes(demo, encoded):
    truth = json.loads((demo / "truth.json").read_text())
    assert np.array(truth["alpha"]).shape == (N_FRAMES, 32)
    assert all(len(truth[k]) == N_FRAMES for k in ("yaw", "pitch", "roll"))
    assert [tuple(i) for i in truth["style_indices"]] == list(StvReader(encoded).header.style_indices)


def test_rerun_gives_the_same_stream(demo, encoded):
    """A second run (from the work dir's cache) writes the same latent, table and records; only the `note`
    extension differs, since it quotes the command line (another output name)."""
    again = run(str(BIN / "stvenc"), "demo.mkv", "again.stv", "--aligned", "--work-dir", "work", *QUICK, cwd=demo)
    assert again.returncode == 0, again.stderr
    first, second = StvReader(encoded), StvReader(demo / "again.stv")
    assert stream_id_latent(first.header).tobytes() == stream_id_latent(second.header).tobytes()
    assert np.array_equal(first.header.quant.scale, second.header.quant.scale)
    assert np.array_equal(first.header.quant.offset, second.header.quant.offset)
    assert np.array_equal(first.records(0, N_FRAMES), second.records(0, N_FRAMES))


@pytest.mark.parametrize("args, message", [
    (["missing.mp4", "x.stv"], "no such file"),
    (["demo.mkv", "demo.stv"], "exists"),
    (["truth.json", "t.stv"], "truth.json: not a readable video"),
])
def test_bad_input_is_one_line_and_no_output(demo, encoded, args, message):
    before = sorted(p.name for p in demo.iterdir())
    result = run(str(BIN / "stvenc"), *args, "-q", cwd=demo)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("stvenc: error:")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
    assert sorted(p.name for p in demo.iterdir()) == before


def test_real_face_clip_is_aligned_and_its_roll_recorded(tmp_path):
    """A real photo turned 3 degrees more (counter-clockwise on screen) each frame: the full path (detection,
    alignment, per-frame region masks) runs, and the recorded roll falls by 3 degrees a frame (format_spec.md:
    roll is clockwise-positive). The per-frame step is asserted within 0.5 deg (pre-processing's own bound)."""
    import cv2
    from fractions import Fraction
    from skimage.data import astronaut

    from codec.preprocess.video import write_video

    frames = []
    for k in range(4):
        turn = cv2.getRotationMatrix2D((256, 200), 3.0 * k, 1.0)
        frames.append(cv2.warpAffine(astronaut(), turn, (512, 512), borderMode=cv2.BORDER_REFLECT))
    write_video(tmp_path / "face.mkv", iter(frames), Fraction(25), lossless=True)
    result = run(str(BIN / "stvenc"), "face.mkv", "face.stv", *QUICK, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    reader = StvReader(tmp_path / "face.stv")
    roll = np.array([reader[i][34] for i in range(len(reader))])
    assert np.all(np.abs(np.diff(roll) + 3.0) < 0.5), roll


def test_aligned_roll_reaches_the_encoder_and_needs_aligned_input(demo, monkeypatch):
    from click.testing import CliRunner

    from codec.cli.stvenc import main
    from codec.encoder import encode
    from codec.errors import StvError

    seen = []

    def stop(*args, **kwargs):
        seen.extend(a for a in (*args, *kwargs.values()) if isinstance(a, encode.EncodeSettings))
        raise StvError("stopped by the test")

    monkeypatch.setattr(encode, "encode_video", stop)
    clip, out = str(demo / "demo.mkv"), str(demo / "roll.stv")
    result = CliRunner().invoke(main, [clip, out, "--aligned", "--aligned-roll", "-q"])
    assert "stopped by the test" in result.output and [s.aligned_roll for s in seen] == [True]
    refused = CliRunner().invoke(main, [clip, out, "--aligned-roll", "-q"])
    assert refused.exit_code == 2 and "--aligned-roll applies to --aligned input only" in refused.output
    assert not (demo / "roll.stv").exists()
