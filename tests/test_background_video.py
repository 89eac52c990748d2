"""Format 1.3's background video (`bgvd`, `stvenc --background video[:KBITS]`): AV1 in IVF, checked without
decoding, decoded one frame at a time, and every kind of damage concealed (the still, else the face crop) and
reported, never a crash."""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from skimage import data as samples

from codec.bitstream import StvReader
from codec.bitstream.background import EXT_BACKGROUND
from codec.bitstream.background_video import (
    BackgroundVideoDecoder,
    background_video_problem,
    encode_background_video,
    ivf_file,
    parse_video,
)
from codec.bitstream.header import EXT_BACKGROUND_VIDEO, EXT_PLACEMENT, decode_header, encode_header
from codec.cli.stvdec import main as stvdec
from codec.cli.stvenc import parse_background
from codec.cli.stvinfo import main as stvinfo
from codec.decoder.paste import paste_back_for
from codec.preprocess.background import face_region
from test_bitstream_helpers import make_header

DATA = Path(__file__).parent / "data"
GOOD, BAD = DATA / "golden_background_video.stv", DATA / "golden_bad_background_video.stv"


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def panning(n: int, width: int, height: int) -> list[np.ndarray]:
    """A real photo panning by 3 px a frame."""
    photo = cv2.resize(samples.coffee(), (width + 3 * n, height), interpolation=cv2.INTER_AREA)
    return [np.ascontiguousarray(photo[:, 3 * t : 3 * t + width]) for t in range(n)]


def test_round_trip_is_deterministic_and_close():
    frames = panning(6, 160, 120)
    data = encode_background_video(frames, Fraction(25), 200)
    assert data == encode_background_video(frames, Fraction(25), 200)  # same input, same bytes
    head = parse_video(data)
    assert (head.width, head.height, len(head), head.rate, head.scale) == (160, 120, 6, 25, 1)
    video = BackgroundVideoDecoder(data, (160, 120))
    decoded = [video.frame(i) for i in range(6)]
    assert all(psnr(d, f) > 25.0 for d, f in zip(decoded, frames)), [psnr(d, f) for d, f in zip(decoded, frames)]
    assert video.frame(6) is None and video.error is None  # past its end: nothing, and nothing wrong
    assert np.array_equal(video.frame(2), decoded[2])  # asked again for an earlier frame: decoded again, same


def test_a_source_smaller_than_the_codec_allows_is_padded_and_cropped_back():
    frames = panning(3, 40, 30)
    data = encode_background_video(frames, Fraction(30000, 1001), 50)
    head = parse_video(data)
    assert (head.width, head.height) == (64, 64) and (head.rate, head.scale) == (30000, 1001)
    assert BackgroundVideoDecoder(data, (40, 30)).frame(0).shape == (30, 40, 3)


def ivf(frames: list[bytes], fourcc: bytes = b"AV01", width: int = 64, height: int = 64, count: int | None = None):
    data = bytearray(ivf_file(frames, width, height, Fraction(25)))
    data[8:12] = fourcc
    if count is not None:
        data[24:28] = count.to_bytes(4, "little")
    return bytes(data)


@pytest.mark.parametrize("data, problem", [
    (b"DKIF", "shorter than an IVF head"),
    (b"RIFF" + bytes(28), "does not start with an IVF head"),
    (ivf([b"x"], fourcc=b"VP90"), "holds codec 'VP90', not AV1"),
    (ivf([b"x"], width=0), "holds 0x64 pictures"),
    (ivf([b"x"], width=65535, height=65535), "holds 65535x65535 pictures, not 1 to 67108864 pixels"),
    (ivf([b"x"], count=1 << 23), "declares 8388608 frames, more than"),
    (ivf([b"x", b"yy"], count=3), "declares 3 frames, but its data holds 2"),
    (ivf([b"x", b"yy"], count=1), "declares 1 frames, but its data holds 1 and 14 more bytes"),
    (ivf([b"x", b"yy"])[:-1], "frame 1 declares 2 bytes, 1 are left"),
    (ivf([b"x", b""]), "frame 1 declares 0 bytes"),
    (ivf([b"x"], count=2) + bytes(5), "frame 1's head is cut"),
])
def test_malformed_videos_are_one_line_problems(data, problem):
    found = background_video_problem(data, (64, 64), None)
    assert found is not None and problem in found and "\n" not in found


def test_the_video_must_cover_the_source_and_match_the_stream():
    data = ivf([b"x"] * 3)
    assert background_video_problem(data, (64, 64), 3) is None
    assert "has no usable 'plac'" in background_video_problem(data, None, 3)
    assert "smaller than the 65x64 source" in background_video_problem(data, (65, 64), 3)
    assert background_video_problem(data, (64, 64), 4) == "holds 3 frames, the stream 4"


def test_the_goldens_read_as_the_stills_golden_and_report_their_damage():
    still, good, bad = (StvReader(DATA / "golden_background.stv"), StvReader(GOOD), StvReader(BAD))
    assert good.header.version == (1, 3) and good.validate() == []
    # the records, the placement and the still are golden_background's: a reader that skips 'bgvd' sees that file
    assert np.array_equal(good.records(), still.records())
    assert [e for e in good.header.extensions if e[0] != EXT_BACKGROUND_VIDEO] == list(still.header.extensions)
    assert bad.validate() == ["header: extension 'bgvd' holds 9 frames, the stream 12"]


def decode_pngs(tmp_path: Path, stream: Path, *extra: str):
    out = tmp_path / f"png-{stream.stem}"
    result = CliRunner().invoke(stvdec, [str(stream), "--png", str(out), *extra])
    return result, [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in sorted(out.glob("*.png"))]


def outside_faces(reader: StvReader, index: int) -> np.ndarray:
    placement, roll = reader.header.placement, reader.values()[index, -1]
    source = index if not np.isnan(placement.side[index]) else index - 1
    return ~face_region(placement.centre[source], placement.side[source], float(roll), (720, 1280))


def test_stvdec_pastes_each_face_over_its_background_frame(tmp_path):
    result, frames = decode_pngs(tmp_path, GOOD)
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    reader = StvReader(GOOD)
    video = BackgroundVideoDecoder(reader.header.extension(EXT_BACKGROUND_VIDEO), (1280, 720))
    assert len(frames) == 12 and frames[0].shape == (720, 1280, 3)
    for i in (0, 6, 11):
        outside = outside_faces(reader, i)
        assert np.array_equal(frames[i][outside], video.frame(i)[outside])
    assert not np.array_equal(frames[0][600:640, 100:240], frames[6][600:640, 100:240])  # the square moved


def test_a_broken_short_video_is_concealed_with_the_still_and_reported(tmp_path):
    result, frames = decode_pngs(tmp_path, BAD)
    assert result.exit_code == 0, result.output
    assert "'bgvd' holds 9 frames, the stream 12" in result.output
    assert "frame 4 decodes to no picture" in result.output and "8 frames (4-11)" in result.output
    reader = StvReader(BAD)
    still = paste_back_for(reader.header)[0].background
    video = BackgroundVideoDecoder(reader.header.extension(EXT_BACKGROUND_VIDEO), (1280, 720))
    outside = outside_faces(reader, 3)
    assert np.array_equal(frames[3][outside], video.frame(3)[outside])  # before the break: the video
    for i in (4, 11):
        outside = outside_faces(reader, i)
        assert np.array_equal(frames[i][outside], still[outside])  # from it on: the still


def with_extensions(stream: Path, keep, extra=()) -> bytes:
    """The stream's bytes with its header's extensions filtered and others added (CRC recomputed)."""
    data = stream.read_bytes()
    header, size = decode_header(data)
    extensions = [e for e in header.extensions if keep(e[0])] + list(extra)
    return encode_header(replace(header, extensions=tuple(extensions))) + data[size:]


def test_a_malformed_video_falls_back_to_the_still_or_else_to_the_crop(tmp_path):
    bad_video = (EXT_BACKGROUND_VIDEO, b"DKIF" + bytes(40))
    with_still = tmp_path / "with_still.stv"
    with_still.write_bytes(with_extensions(GOOD, lambda tag: tag != EXT_BACKGROUND_VIDEO, [bad_video]))
    result, frames = decode_pngs(tmp_path, with_still, "--frames", "0:2")
    assert result.exit_code == 0 and "'bgvd' does not start with an IVF head" in result.output
    assert "pasting over the background still" in result.output and frames[0].shape == (720, 1280, 3)
    crop_only = tmp_path / "crop_only.stv"
    crop_only.write_bytes(with_extensions(GOOD, lambda tag: tag == EXT_PLACEMENT, [bad_video]))
    result, frames = decode_pngs(tmp_path, crop_only, "--frames", "0:2")
    assert result.exit_code == 0 and "no background still: decoding the face crop" in result.output
    assert frames[0].shape == (360, 640, 3)


def test_stvinfo_shows_the_background_bytes_and_the_rate_without_them():
    result = CliRunner().invoke(stvinfo, [str(GOOD)])
    assert result.exit_code == 0
    assert "'bgvd'" in result.output and "'video av1 1280x720, 12 frames," in result.output
    info = json.loads(CliRunner().invoke(stvinfo, [str(GOOD), "--json"]).output)["format"]
    reader = StvReader(GOOD)
    background = sum(len(reader.header.extension(t)) for t in (EXT_BACKGROUND, EXT_BACKGROUND_VIDEO))
    assert info["background_bytes"] == background
    assert info["bit_rate_without_background"] == round((reader.file_size - background) * 8 / info["duration"])
    assert f"background:  {background} bytes; bit rate without it" in result.output
    plain = json.loads(CliRunner().invoke(stvinfo, [str(DATA / "golden_v11.stv"), "--json"]).output)["format"]
    assert "background_bytes" not in plain  # files without a background print what they did


def test_minor_version_follows_the_extensions():
    plain = make_header()
    assert decode_header(encode_header(plain))[0].version == (1, 1)
    video = replace(plain, extensions=((EXT_BACKGROUND_VIDEO, b"x"),))
    assert decode_header(encode_header(video))[0].version == (1, 3)


@pytest.mark.parametrize("text, parsed", [("still", ("still", 100)), ("none", ("none", 100)),
                                          ("video", ("video", 100)), ("video:40", ("video", 40))])
def test_background_option_parses(text, parsed):
    assert parse_background(text) == parsed


@pytest.mark.parametrize("text", ["video:", "video:0", "video:fast", "still:40", "movie"])
def test_a_bad_background_option_is_refused(text):
    with pytest.raises(ValueError):
        parse_background(text)


def test_without_a_still_the_frames_a_video_lacks_repeat_its_last_good_picture(tmp_path):
    video_only = tmp_path / "video_only.stv"
    video_only.write_bytes(with_extensions(BAD, lambda tag: tag != EXT_BACKGROUND))
    result, frames = decode_pngs(tmp_path, video_only, "--frames", "2:6")
    assert result.exit_code == 0 and "pasted over the video's last good picture instead" in result.output
    reader = StvReader(BAD)
    last_good = BackgroundVideoDecoder(reader.header.extension(EXT_BACKGROUND_VIDEO), (1280, 720)).frame(3)
    outside = outside_faces(reader, 4)
    assert np.array_equal(frames[2][outside], last_good[outside])  # frame 4: the break; frame 3's picture


def test_pictures_larger_than_the_head_says_are_refused_by_the_decoder_itself():
    # the AV1 sequence header (1280x720) claims more than the IVF head (640x360): dav1d is held to the head's
    # size (format_spec.md §9), so nothing larger is allocated, and the video ends there, concealed
    data = bytearray(StvReader(GOOD).header.extension(EXT_BACKGROUND_VIDEO))
    data[12:16] = struct.pack("<HH", 640, 360)
    video = BackgroundVideoDecoder(bytes(data), (640, 360))
    assert video.frame(0) is None and video.error.startswith("frame 0 does not decode")


def test_coding_leaves_the_threads_scheduling_as_it_was():
    """SVT-AV1 run as root switches the thread that feeds it to real-time scheduling (SCHED_FIFO 99); the encoder
    puts it back, so the rest of an encode, and the processes it starts, are not real-time. (Where SVT-AV1 may not
    change it, as a plain user, this holds trivially.)"""
    import os

    if not hasattr(os, "sched_getscheduler"):
        pytest.skip("no POSIX scheduling calls on this system")
    before = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    rng = np.random.default_rng(5)
    data = encode_background_video((rng.integers(0, 255, (72, 96, 3), dtype=np.uint8) for _ in range(3)),
                                   Fraction(25), 50)
    decoder = BackgroundVideoDecoder(data, (96, 72))
    assert all(decoder.frame(i) is not None for i in range(3))
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before
