"""Format 1.2's `plac` extension: the face's placement in the source picture (codec.bitstream.placement)."""

from __future__ import annotations

import numpy as np
import pytest

from codec.bitstream import StvReader
from codec.bitstream.header import EXT_PLACEMENT, decode_header, encode_header
from codec.bitstream.placement import (MAX_PLACED_FRAMES, Placement, decode_placement, encode_placement,
                                       quantisation_error_px)
from codec.errors import BitstreamError
from test_bitstream_helpers import make_file

SOURCES = [(1280, 720), (480, 908), (7680, 4320), (1, 1)]


def random_placement(width: int, height: int, n: int = 400, seed: int = 0) -> Placement:
    rng = np.random.default_rng(seed)
    size = np.array([width, height], np.float64)
    centre = rng.uniform(-0.2, 1.2, (n, 2)) * size
    side = rng.uniform(0.05, 3.9, n) * max(width, height)
    centre[7], side[7] = np.nan, np.nan
    return Placement(width, height, centre, side)


@pytest.mark.parametrize("width,height", SOURCES)
def test_round_trip_moves_the_face_by_less_than_half_a_pixel(width, height):
    placed = random_placement(width, height)
    back = decode_placement(encode_placement(placed))
    assert (back.width, back.height, len(back)) == (width, height, len(placed))
    assert np.isnan(back.side[7]) and np.isnan(back.centre[7]).all()
    keep = ~np.isnan(placed.side)
    centre_error = np.abs(back.centre[keep] - placed.centre[keep]).max()
    side_error = np.abs(back.side[keep] - placed.side[keep]).max()
    bound_centre, bound_side = quantisation_error_px(width, height)
    assert centre_error <= bound_centre * (1 + 1e-9) and side_error <= bound_side * (1 + 1e-9)
    # the bound, at the source size: the outline moves by the centre's error plus half the side's
    assert centre_error + side_error / 2 < 0.5
    if (width, height) == (1280, 720):
        assert centre_error + side_error / 2 < 0.035  # the figure format_spec.md states


def test_out_of_range_placement_is_refused_by_the_writer():
    with pytest.raises(ValueError, match="quarter of the picture"):
        encode_placement(Placement(100, 100, np.array([[-40.0, 50.0]]), np.array([50.0])))
    with pytest.raises(ValueError, match="crop side"):
        encode_placement(Placement(100, 100, np.array([[50.0, 50.0]]), np.array([400.0])))


def test_malformed_data_is_one_line_never_a_crash():
    good = encode_placement(random_placement(640, 360, 20))
    cases = {
        good[:5]: "shorter than its 12-byte head",
        b"\0\0" + good[2:]: "source picture of 0x360",
        good[:4] + (MAX_PLACED_FRAMES + 1).to_bytes(4, "little") + good[8:]: "more than",
        good + b"x": "follow its head",
        good[:4] + (21).to_bytes(4, "little") + good[8:]: "values of 21 frames: zstd frame declares 120 bytes",
        good[:12] + b"\0" * (len(good) - 12): "not a zstd frame",
    }
    for data, message in cases.items():
        with pytest.raises(BitstreamError) as caught:
            decode_placement(data)
        problem = str(caught.value)
        assert message in problem and "\n" not in problem, (message, problem)
    decode_placement(good)  # no error


def test_a_file_with_placement_reads_the_same_frames_and_says_1_2(tmp_path):
    data, records, _ = make_file(30, "entropy", chunk_frames=8)
    header, size = decode_header(data)
    plain = StvReader(data)
    placed_header = type(header)(**{**header.__dict__,
                                    "extensions": header.extensions + ((EXT_PLACEMENT, encode_placement(
                                        random_placement(1280, 720, 30))),)})
    with_placement = encode_header(placed_header) + data[size:]
    reader = StvReader(with_placement)
    assert reader.header.version == (1, 2) and plain.header.version == (1, 1)
    assert np.array_equal(reader.records(), plain.records()) and np.array_equal(reader.values(), plain.values())
    assert reader.validate() == [] and len(reader.header.placement) == 30
    # the rest of the header is untouched: what a reader that skips `plac` (1.0, 1.1) sees is the plain file
    for field in ("width", "height", "fps_num", "fps_den", "frame_count", "generator_name", "generator_sha256",
                  "style_indices", "flags"):
        assert getattr(reader.header, field) == getattr(plain.header, field), field
    for a, b in ((reader.header.id_latent, plain.header.id_latent), (reader.header.quant.scale, plain.header.quant.scale),
                 (reader.header.quant.offset, plain.header.quant.offset)):
        assert np.array_equal(a, b)


def test_malformed_placement_is_reported_and_the_frames_still_read():
    data, records, _ = make_file(6, "raw")
    header, size = decode_header(data)
    bad = type(header)(**{**header.__dict__, "extensions": ((EXT_PLACEMENT, b"\1\0\1\0" + b"\0" * 3),)})
    reader = StvReader(encode_header(bad) + data[size:])
    assert np.array_equal(reader.records(), records)
    (problem,) = reader.validate()
    assert problem == "header: extension 'plac' is 7 bytes, shorter than its 12-byte head"
    with pytest.raises(BitstreamError, match="extension 'plac' is 7 bytes"):
        reader.header.placement


def test_golden_placement_holds_the_placement_it_was_made_from():
    # The conformance JSON shows only a summary of `plac`: this checks the values (the golden's generator,
    # tools/make_golden_files.py v12_files, draws these closed-form tracks).
    from pathlib import Path

    reader = StvReader(Path(__file__).parent / "data" / "golden_placement.stv")
    placed = reader.header.placement
    t = np.arange(12, dtype=np.float64)
    centre = np.stack([640 + 40 * np.sin(t / 3), 330 + 12 * np.cos(t / 4)], axis=1)
    side = 420 + 6 * np.sin(t / 5)
    keep = np.arange(12) != 5
    bound_centre, bound_side = quantisation_error_px(1280, 720)
    assert np.isnan(placed.side[5]) and (placed.width, placed.height) == (1280, 720)
    assert np.abs(placed.centre[keep] - centre[keep]).max() <= bound_centre
    assert np.abs(placed.side[keep] - side[keep]).max() <= bound_side
