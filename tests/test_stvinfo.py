"""stvinfo: summary, ffprobe-shaped JSON, --frames, --validate, --plot, and one-line errors with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from codec.bitstream import PARAM_NAMES, StvReader, dequantise
from codec.cli.stvinfo import main
from test_bitstream_helpers import make_file

DATA = Path(__file__).resolve().parent / "data"


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def raw_file(tmp_path):
    data, records, header = make_file(20, "raw", chunk_frames=8)
    path = tmp_path / "clip.stv"
    path.write_bytes(data)
    return path, records, header


def test_summary_names_the_essentials(raw_file):
    path, _, _ = raw_file
    result = run(path)
    assert result.exit_code == 0
    out = result.stdout
    size = path.stat().st_size
    assert f"size:        {size} bytes" in out
    assert "20 frames" in out and "25/1 fps" in out and "duration 0.800 s" in out
    assert f"{size * 8 / 0.8 / 1000:.3f} kb/s" in out  # bit rate = whole file over the duration
    assert "tiny-64" in out and "profile raw" in out and "damage:      none" in out


def test_json_is_ffprobe_shaped_and_offsets_point_at_the_records(raw_file):
    path, records, header = raw_file
    result = run(path, "--json", "--frames", "6:10")
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert set(info) == {"format", "streams", "frames"}
    assert info["format"]["nb_frames"] == 20 and info["format"]["size"] == path.stat().st_size
    assert info["streams"][0]["r_frame_rate"] == "25/1"
    assert [p["name"] for p in info["streams"][0]["parameters"]] == list(PARAM_NAMES)
    frames = info["frames"]
    assert [f["index"] for f in frames] == [6, 7, 8, 9]
    raw = path.read_bytes()
    for f in frames:
        # the bytes at (offset, size) are that frame's record, and the values are its dequantisation
        record = np.frombuffer(raw[f["offset"] : f["offset"] + f["size"]], "<i2")
        assert np.array_equal(record, records[f["index"]])
        assert list(f["values"]) == list(PARAM_NAMES)
        assert np.allclose(list(f["values"].values()), dequantise(records[f["index"]], header.quant), rtol=0, atol=0)


def test_frames_range_in_the_summary_lists_values(raw_file):
    path, records, header = raw_file
    result = run(path, "--frames", "-2:")
    lines = [line for line in result.stdout.splitlines() if line[:5].strip().isdigit()]
    assert [int(line.split()[0]) for line in lines] == [18, 19]
    values = [float(v) for v in lines[1].split()[1:]]
    assert np.allclose(values, dequantise(records[19], header.quant), rtol=1e-5, atol=1e-9)


def test_validate_ok_and_damaged(raw_file):
    path, _, _ = raw_file
    result = run(path, "--validate")
    assert result.exit_code == 0 and ": ok:" in result.stdout
    reader = StvReader(path)
    data = bytearray(path.read_bytes())
    data[reader.chunks[1].payload_offset + 3] ^= 0x10  # damage in chunk 2 (frames 8-15)
    data = data[: reader.chunks[2].offset + 30]  # and cut inside chunk 3
    path.write_bytes(bytes(data))
    result = run(path, "--validate")
    assert result.exit_code == 1
    damaged = [line for line in result.stdout.splitlines() if "damaged:" in line]
    assert len(damaged) == 2
    assert f"bytes {reader.chunks[1].offset}-{reader.chunks[2].offset - 1}: chunk CRC32 mismatch (frames 8-15 lost)" \
        in damaged[0]
    assert f"truncated at byte {len(data)}" in damaged[1] and "(frames 16-19 lost)" in damaged[1]


def plotted_figures(monkeypatch) -> list:
    """Collects every matplotlib figure saved in this process (the --plot PNG is drawn in-process)."""
    from matplotlib.figure import Figure

    saved, savefig = [], Figure.savefig

    def keep(fig, *args, **kwargs):
        saved.append(fig)
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return saved


@pytest.mark.parametrize("frames, first, count", [(None, 0, 20), ("5:17", 5, 12)])
def test_plot_draws_every_parameter_over_the_frames(raw_file, tmp_path, monkeypatch, frames, first, count):
    """The figure holds what it says: 32 alpha lines, yaw and pitch, roll; each over the selected frames' times
    with their dequantised values; the title gives the frame count."""
    path, records, header = raw_file
    figures = plotted_figures(monkeypatch)
    out = tmp_path / "tracks.png"
    assert run(path, "--plot", out, *(["--frames", frames] if frames else [])).exit_code == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (fig,) = figures
    alphas, pose, roll = fig.axes
    assert [len(alphas.lines), len(pose.lines), len(roll.lines)] == [32, 2, 1]
    assert [line.get_label() for line in pose.lines] == ["yaw", "pitch"]
    assert "alpha" in alphas.get_ylabel() and "pose" in pose.get_ylabel() and "roll" in roll.get_ylabel()
    assert roll.get_xlabel() == "time (s)" and f"({count} frames)" in alphas.get_title()
    expected = dequantise(records[first : first + count], header.quant)
    times = np.arange(first, first + count) / 25
    for k, line in enumerate([*alphas.lines, *pose.lines, *roll.lines]):
        np.testing.assert_allclose(line.get_xdata(), times, rtol=1e-12)
        np.testing.assert_allclose(line.get_ydata(), expected[:, k], rtol=1e-6, err_msg=PARAM_NAMES[k])


def test_plot_refuses_to_overwrite(raw_file, tmp_path):
    path, _, _ = raw_file
    out = tmp_path / "tracks.png"
    assert run(path, "--plot", out).exit_code == 0
    again = run(path, "--plot", out)
    assert again.exit_code == 2 and "-y" in again.stderr
    assert run(path, "--plot", out, "-y").exit_code == 0


def fake_mp4(path: Path) -> Path:
    # an ISO-BMFF 'ftyp' box, as every mp4 starts
    path.write_bytes(b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + bytes(64))
    return path


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: d, "is a directory"),
        (lambda d: fake_mp4(d / "clip.mp4"), "not a .stv file"),
        (lambda d: (d / "empty.stv", (d / "empty.stv").write_bytes(b""))[0], "empty file"),
        (lambda d: d / "missing.stv", "no such file"),
    ],
)
def test_bad_inputs_give_one_line_and_exit_2(tmp_path, make, expected):
    target = make(tmp_path)
    # run the real command in a subprocess: what a user sees, tracebacks included if any slipped through
    result = subprocess.run([sys.executable, "-m", "codec.cli.stvinfo", str(target)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stvinfo: error:") and expected in lines[0], result.stderr


def test_bad_frame_range(raw_file):
    path, _, _ = raw_file
    result = run(path, "--frames", "x:y")
    assert result.exit_code == 2 and "--frames" in result.stderr
    assert run(path, "--frames", "25").exit_code == 2


def test_golden_entropy_summary_reports_the_profile():
    result = run(DATA / "golden_entropy.stv")
    assert result.exit_code == 0 and "profile entropy" in result.stdout and "60 frames" in result.stdout
