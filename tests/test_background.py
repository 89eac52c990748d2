"""Format 1.2's background still (`bgnd`): the scene recovered from frames with a moving face, coded through
Pillow, checked without decoding its pixels, reported when malformed."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data as samples

from codec.bitstream import background as bg
from codec.bitstream.background import background_problem, decode_background, encode_background
from codec.bitstream.header import EXT_BACKGROUND, EXT_PLACEMENT, decode_header, encode_header
from codec.bitstream.placement import Placement, encode_placement
from codec.bitstream import StvReader
from codec.preprocess.background import face_region, sample_indices, scene_still
from test_bitstream_helpers import make_file

import cv2


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def scene_with_a_moving_face(n: int = 9):
    """A real photo as the scene; a 'face' (another photo's disc) sliding across it, its placement known."""
    scene = cv2.resize(samples.coffee(), (320, 240), interpolation=cv2.INTER_AREA)
    face = cv2.resize(samples.astronaut()[30:230, 130:330], (90, 90), interpolation=cv2.INTER_AREA)
    frames, regions = [], []
    for t in range(n):
        centre = np.array([70.0 + 180.0 * t / (n - 1), 120.0])
        frame = scene.copy()
        x, y = (centre - 45).astype(int)
        frame[y : y + 90, x : x + 90] = face
        frames.append(frame)
        regions.append(face_region(centre, 100.0 * 1.4, 0.0, scene.shape[:2]))
    return scene, frames, regions


def test_the_scene_comes_back_where_the_face_moved_away():
    scene, frames, regions = scene_with_a_moving_face()
    for frame, region in zip(frames, regions):  # every face lies inside its own region
        assert not np.any(np.all(frame != scene, axis=-1) & ~region)
    still = scene_still(frames, regions)
    seen = ~np.all(np.stack(regions), axis=0)
    assert seen.mean() > 0.9
    assert psnr(still[seen], scene[seen]) > 40.0  # the median of uncovered values is the scene itself
    assert psnr(still, scene) > 20.0  # and the few never-seen pixels are filled in, not left black


def test_sample_indices_spread_over_the_clip():
    assert sample_indices(100, 5) == [0, 25, 50, 74, 99] and sample_indices(3, 9) == [0, 1, 2]
    assert sample_indices(0, 5) == []


@pytest.mark.parametrize("codec", ["webp", "avif"])
def test_still_round_trip_and_checks(codec):
    scene = cv2.resize(samples.coffee(), (320, 240), interpolation=cv2.INTER_AREA)
    data = encode_background(scene, quality=80, codec=codec)
    assert psnr(decode_background(data), scene) > 30.0 and len(data) < scene.nbytes / 5
    assert background_problem(data, (320, 240)) is None
    assert "but the source is 640x480" in background_problem(data, (640, 480))
    assert "no usable 'plac'" in background_problem(data, None)
    assert "not a still picture" in background_problem(b"\x02" + data[1:], (320, 240))
    assert "WebP or AVIF" in background_problem(b"\x01" + b"GIF89a" + bytes(40), (320, 240))


def test_a_picture_larger_than_the_bound_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(bg, "MAX_BACKGROUND_PIXELS", 100 * 100)
    data = encode_background(np.zeros((120, 100, 3), np.uint8))
    assert "more than 10000 pixels" in background_problem(data, (100, 120))


def test_a_file_with_a_background_reads_the_same_frames_and_reports_a_bad_one():
    data, records, _ = make_file(8, "raw")
    header, size = decode_header(data)
    plac = encode_placement(Placement(320, 240, np.full((8, 2), 120.0), np.full(8, 140.0)))
    good = encode_background(np.zeros((240, 320, 3), np.uint8))
    for still, problem in ((good, None), (encode_background(np.zeros((24, 32, 3), np.uint8)),
                                          "header: extension 'bgnd' holds a 32x24 picture, but the source is 320x240")):
        edited = type(header)(**{**header.__dict__, "extensions": ((EXT_PLACEMENT, plac), (EXT_BACKGROUND, still))})
        reader = StvReader(encode_header(edited) + data[size:])
        assert reader.header.version == (1, 2) and np.array_equal(reader.records(), records)
        assert reader.validate() == ([] if problem is None else [problem])


def test_a_face_sized_hole_is_filled_smoothly_and_nothing_else_changes():
    """The fill is made on a scaled-down picture (full-size inpainting of a face-sized hole took 30 s): on a smooth
    scene it stays close to the scene, and every pixel outside the hole is kept exactly."""
    from codec.preprocess.background import fill_hole

    rows, cols = np.mgrid[0:720, 0:1280].astype(np.float32)
    scene = np.stack([rows / 720 * 200 + 20, cols / 1280 * 180 + 40, (rows + cols) / 2000 * 150 + 50], -1)
    scene = scene.round().astype(np.uint8)
    hole = np.zeros((720, 1280), bool)
    cv2.ellipse(hole.view(np.uint8), (640, 330), (150, 200), 0, 0, 360, 1, -1)
    damaged = scene.copy()
    damaged[hole] = 0
    filled = fill_hole(damaged, hole)
    assert np.array_equal(filled[~hole], scene[~hole])
    error = np.abs(filled[hole].astype(int) - scene[hole].astype(int))
    assert error.mean() < 12 and np.percentile(error, 99) < 40, (error.mean(), np.percentile(error, 99))
