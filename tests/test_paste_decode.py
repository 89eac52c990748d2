"""stvdec pastes faces back (issue 13): a 1.2 stream with `plac` decodes to the source's size over its `bgnd`;
--crop keeps the face crop; a bad background or placement is a warning, never a failure."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from click.testing import CliRunner

from codec.bitstream import StvReader
from codec.bitstream.background import decode_background
from codec.bitstream.header import EXT_BACKGROUND
from codec.cli.stvdec import main
from codec.preprocess.background import face_region

DATA = Path(__file__).parent / "data"


def decode(tmp_path: Path, name: str, *extra: str):
    png = tmp_path / f"png-{name}-{len(extra)}"
    result = CliRunner().invoke(main, [str(DATA / name), "--png", str(png), "--frames", "0:4", *extra])
    frames = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in sorted(png.glob("*.png"))]
    return result, frames


def test_a_placed_stream_decodes_to_the_source_picture_over_its_background(tmp_path):
    result, frames = decode(tmp_path, "golden_background.stv", "-q")
    assert result.exit_code == 0, result.output
    assert len(frames) == 4 and frames[0].shape == (720, 1280, 3)
    reader = StvReader(DATA / "golden_background.stv")
    background = decode_background(reader.header.extension(EXT_BACKGROUND))
    placement, rolls = reader.header.placement, reader.values()[:, -1]
    for i, frame in enumerate(frames):
        face = face_region(placement.centre[i], placement.side[i], float(rolls[i]), (720, 1280))
        outside = ~face
        assert outside.mean() > 0.7 and np.array_equal(frame[outside], background[outside])
        assert np.abs(frame[face].astype(int) - background[face].astype(int)).mean() > 5  # a face is there
    # frames 0 and 1 sit at different places, as their placement says
    assert not np.array_equal(frames[0], frames[1])


def test_crop_keeps_the_generators_picture(tmp_path):
    # the crop as before 1.2: the generator's picture at the header's size (640x360 in the goldens)
    result, frames = decode(tmp_path, "golden_background.stv", "-q", "--crop")
    assert result.exit_code == 0 and frames[0].shape == (360, 640, 3)
    plain, plain_frames = decode(tmp_path, "golden_v11.stv", "-q")  # a 1.1 stream: the crop, as before
    assert plain.exit_code == 0 and plain_frames[0].shape == (360, 640, 3)


def test_size_applies_to_the_whole_picture(tmp_path):
    result, frames = decode(tmp_path, "golden_background.stv", "-q", "--size", "640")
    assert result.exit_code == 0, result.output
    assert frames[0].shape == (360, 640, 3)


def test_a_bad_background_is_a_warning_and_black(tmp_path):
    result, frames = decode(tmp_path, "golden_bad_background.stv")
    assert result.exit_code == 0, result.output
    assert "'bgnd' holds a 640x360 picture" in result.output and "pasting over black" in result.output
    assert frames[0].shape == (720, 1280, 3) and frames[0][0, 0].tolist() == [0, 0, 0]


def test_a_bad_placement_decodes_the_crop_with_a_warning(tmp_path):
    result, frames = decode(tmp_path, "golden_bad_placement.stv")
    assert result.exit_code == 0, result.output
    assert "extension 'plac'" in result.output and "decoding the face crop" in result.output
    assert frames[0].shape == (360, 640, 3)
