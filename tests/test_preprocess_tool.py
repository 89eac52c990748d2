"""tools/show_alignment.py: the JSON agrees with the known clip, the sheet is written, errors are one line."""

from __future__ import annotations

import importlib.util
import json
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("dlib", reason="dlib (built from source) is needed for face landmarks")

from codec.preprocess.video import write_video  # noqa: E402
from preprocess_fixtures import make_clip  # noqa: E402

TOOL = Path(__file__).resolve().parents[1] / "tools" / "show_alignment.py"


def _tool():
    spec = importlib.util.spec_from_file_location("show_alignment", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_json_and_contact_sheet(tmp_path):
    clip = make_clip(count=5, max_angle=10.0)
    video = tmp_path / "clip.mkv"
    write_video(video, clip.frames, Fraction(25), lossless=True)
    sheet, report = tmp_path / "sheet.png", tmp_path / "frames.json"
    result = CliRunner().invoke(_tool().main, [str(video), "--out", str(sheet), "--json", str(report),
                                               "--size", "256", "--rows", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    document = json.loads(report.read_text())
    assert document["fps"] == "25/1" and len(document["frames"]) == 5
    rolls = np.array([f["roll_deg"] for f in document["frames"]])
    np.testing.assert_allclose(rolls - rolls[0], -(clip.angles_deg - clip.angles_deg[0]), atol=0.5)
    first = document["frames"][0]
    assert np.array(first["landmarks"]).shape == (68, 2) and np.array(first["crop_transform"]).shape == (3, 3)
    image = cv2.imread(str(sheet))
    assert image.shape[0] >= 3 * 256 and image.shape[1] >= 3 * 256  # three rows of three panels

    again = CliRunner().invoke(_tool().main, [str(video), "--json", str(report), "--quiet"])
    assert again.exit_code == 2 and "exists" in again.output  # no silent overwrite without -y


def test_crops_are_the_aligned_frames_losslessly(tmp_path):
    """--crops writes exactly the encoder's aligned crops: stv-eval's reference for a decode."""
    from codec.preprocess.align import align_video
    from codec.preprocess.video import read_frames

    clip = make_clip(count=3, max_angle=6.0)
    video = tmp_path / "clip.mkv"
    write_video(video, clip.frames, Fraction(25), lossless=True)
    crops = tmp_path / "crops.mkv"
    result = CliRunner().invoke(_tool().main, [str(video), "--crops", str(crops), "--size", "128", "--quiet"])
    assert result.exit_code == 0, result.output
    written = list(read_frames(crops))
    expected = [a.image for a in align_video(read_frames(video), output_size=128)]
    assert len(written) == 3 and all(np.array_equal(w, e) for w, e in zip(written, expected))
    again = CliRunner().invoke(_tool().main, [str(video), "--crops", str(crops), "--quiet"])
    assert again.exit_code == 2 and "exists" in again.output  # no silent overwrite without -y


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    result = CliRunner().invoke(_tool().main, [str(broken), "--json", str(tmp_path / "out.json")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("show_alignment: error:")
    assert not (tmp_path / "out.json").exists()
