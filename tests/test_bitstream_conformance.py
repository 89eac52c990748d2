"""Format 1.1 conformance: every golden file reads as its committed expectation says (`stvinfo --json`, the
`--validate` report and exit status, or the error line), the spec's Conformance table names every golden, and a
reader never presents more frames than the file's bytes back (format_spec.md §9a)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import zstandard
from click.testing import CliRunner

from codec.bitstream import StvReader
from codec.bitstream.chunk import chunk_bytes, encode_payload
from codec.bitstream.header import decode_header, pose_problem
from codec.bitstream.schema import PROFILE_ENTROPY
from codec.cli.stvinfo import main
from codec.errors import BitstreamError
from test_bitstream_helpers import make_file, recrc_header

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
GOLDEN = sorted(p.name for p in DATA.glob("golden_*.stv"))
READABLE = [n for n in GOLDEN if (DATA / n).with_suffix(".json").exists()]
UNREADABLE = [n for n in GOLDEN if (DATA / n).with_suffix(".error.txt").exists()]


def stvinfo(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_every_golden_has_its_expectation():
    assert len(GOLDEN) >= 14 and sorted(READABLE + UNREADABLE) == GOLDEN


@pytest.mark.parametrize("name", READABLE)
def test_golden_json_and_validate_report(name):
    path = DATA / name
    result = stvinfo(path, "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    got["format"]["filename"] = name
    assert got == json.loads(path.with_suffix(".json").read_text())
    report = path.with_suffix(".validate.txt")
    result = stvinfo(path, "--validate")
    if report.exists():  # damaged: one line per damaged place, exit 1
        assert result.exit_code == 1
        assert result.stdout.replace(str(path), name) == report.read_text()
        assert got["format"]["damage"] and all(line.count(": damaged: ") == 1 for line in result.stdout.splitlines())
    else:
        assert result.exit_code == 0 and ": ok:" in result.stdout and got["format"]["damage"] == []


@pytest.mark.parametrize("name", UNREADABLE)
def test_golden_error_line_and_exit_2(name):
    expected = (DATA / name).with_suffix(".error.txt").read_text().strip()
    with pytest.raises(BitstreamError) as err:
        StvReader((DATA / name).read_bytes())
    assert str(err.value) == f"<bytes>: {expected}"
    result = subprocess.run([sys.executable, "-m", "codec.cli.stvinfo", str(DATA / name), "--validate"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"stvinfo: error: {DATA / name}: {expected}"]


def test_conformance_table_names_every_golden():
    spec = (ROOT / "format_spec.md").read_text()
    section = spec[spec.index("## 13. Conformance") :]
    named = set(re.findall(r"`(golden_[a-z0-9_]+\.stv)`", section))
    assert named == set(GOLDEN)


def test_each_golden_says_the_minor_version_it_needs():
    for name in GOLDEN:
        if name in UNREADABLE:
            continue
        version = StvReader(DATA / name).header.version
        if name in ("golden_raw.stv", "golden_entropy.stv", "golden_ext.stv"):
            assert version == (1, 0), name
        else:
            assert version == minor_version_needed(name), name


def minor_version_needed(name: str) -> tuple[int, int]:
    """1.3 for arith chunks, a compact latent or a background video, 1.2 for placement or a still, else 1.1
    (format_spec.md §14)."""
    if any(part in name for part in ("arith", "compact", "background_video")):
        return 1, 3
    return (1, 2) if "placement" in name or "background" in name else (1, 1)


# --- frame count trust (issue 11): the two reported cases ------------------------------------------------------

def claim(data: bytes, count: int) -> bytes:
    edited = bytearray(data)
    edited[28:32] = count.to_bytes(4, "little")
    return bytes(recrc_header(edited))


def test_a_24_frame_file_claiming_100000_presents_24_and_reports_the_truncation():
    data, records, _ = make_file(24, "entropy", chunk_frames=250)
    reader = StvReader(claim(data, 100_000))
    assert len(reader) == 24 and reader.truncated == range(24, 100_000)
    assert np.array_equal(reader.records(), records) and len(list(reader)) == 24
    (damage,) = reader.damage
    assert str(damage) == (f"at byte {len(data)}: truncated at byte {len(data)}: the file ends after frame 23, the "
                           "header promises 100000 frames (frames 24-99999 lost)")
    with pytest.raises(BitstreamError, match="frame 24 is not available: at byte"):
        reader[24]
    with pytest.raises(IndexError):
        reader[100_000]


def test_decoder_warns_and_stops_at_the_truncation():
    decode = pytest.importorskip("codec.decoder.decode")
    data, _, _ = make_file(24, "entropy", chunk_frames=250)
    reader = StvReader(claim(data, 100_000))
    lines = decode.damage_warnings(reader, 0, len(reader), "x.stv")
    assert lines[-1] == ("x.stv: truncated: the header promises 100000 frames; frames 24-99999 lie past the end of "
                         "the file's data and are not decoded")
    assert decode.lost_frame_ranges(reader, 0, len(reader)) == []


def test_golden_raw_with_byte_31_set_to_189_lists_three_frames_without_a_big_allocation():
    data = bytearray((DATA / "golden_raw.stv").read_bytes())
    data[31] = 189  # frame count 3,170,893,827
    data = bytes(recrc_header(data))
    tracemalloc.start()
    try:
        reader = StvReader(data)
        frames = list(reader)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(frames) == 3 and peak < 1 << 20
    assert reader.truncated == range(3, 3_170_893_827)


def test_stvinfo_validate_exits_1_on_the_truncation(tmp_path):
    data, _, _ = make_file(24, "raw", chunk_frames=8)
    path = tmp_path / "claims.stv"
    path.write_bytes(claim(data, 100_000))
    result = stvinfo(path, "--validate")
    assert result.exit_code == 1 and "the header promises 100000 frames (frames 24-99999 lost)" in result.stdout
    assert "24 (header: 100000, truncated) frames" in stvinfo(path).stdout


@pytest.mark.parametrize("cut_into, presented", [(0, 4), (19, 8), (20, 12), (299, 12)])
def test_a_cut_last_chunk_is_concealed_only_as_far_as_its_bytes_reach(cut_into, presented):
    # 12 frames in chunks of 4; the file ends `cut_into` bytes into the second chunk: frames past the last whole
    # chunk are presented (for concealment) only up to 4 x (1 + bytes // 20), never past the header's count
    data, _, _ = make_file(12, "raw", chunk_frames=4)
    second = StvReader(data).chunks[1].offset
    reader = StvReader(data[: second + cut_into])
    assert len(reader) == presented and reader.truncated == range(presented, 12)


def test_a_chunk_far_beyond_a_gap_is_not_believed():
    data, records, _ = make_file(8, "raw", chunk_frames=4)
    # no byte between: at most one lost chunk of the largest decodable count (4) can be missing
    far = chunk_bytes(0, 4, 8 + 5, records[4:].astype("<i2").tobytes())
    reader = StvReader(claim(data, 0xFFFF_FFFF) + far)  # unknown count
    assert len(reader) == 8 and "but at most 4 frames can be missing before it" in reader.validate()[0]
    near = chunk_bytes(0, 4, 8 + 4, records[4:].astype("<i2").tobytes())
    assert len(StvReader(claim(data, 0xFFFF_FFFF) + near)) == 8 + 4 + 4
    # 40 damaged bytes between: one chunk per 20 bytes more
    gap = b"\x00" * 40
    assert len(StvReader(claim(data, 0xFFFF_FFFF) + gap + chunk_bytes(0, 4, 8 + 12, records[4:].astype("<i2").tobytes()))) == 24
    assert len(StvReader(claim(data, 0xFFFF_FFFF) + gap + chunk_bytes(0, 4, 8 + 13, records[4:].astype("<i2").tobytes()))) == 8


# --- zstd, header checks, extensions -------------------------------------------------------------------------

def entropy_chunk_with(frame: bytes, count: int, first: int) -> bytes:
    return chunk_bytes(PROFILE_ENTROPY, count, first, frame)


def test_a_bad_zstd_checksum_under_a_good_crc_is_damage():
    data, records, _ = make_file(8, "raw", chunk_frames=4)
    planes = zstandard.ZstdDecompressor().decompress(encode_payload(records[4:], PROFILE_ENTROPY))
    frame = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(planes))
    good = StvReader(data[: StvReader(data).chunks[1].offset] + entropy_chunk_with(bytes(frame), 4, 4))
    assert good.validate() == [] and np.array_equal(good.records(), records)
    frame[-1] ^= 0xFF  # the checksum's last byte
    bad = StvReader(data[: StvReader(data).chunks[1].offset] + entropy_chunk_with(bytes(frame), 4, 4))
    assert "zstd data does not decode or fails its zstd checksum" in bad.validate()[0]


def test_a_zstd_dictionary_is_refused():
    data, records, _ = make_file(8, "raw", chunk_frames=4)
    frame = encode_payload(records[4:], PROFILE_ENTROPY)
    assert frame[4] & 0x23 == 0x20  # single segment, no dictionary id: the id byte goes right after this one
    with_dict = frame[:4] + bytes([frame[4] | 1, 7]) + frame[5:]
    assert zstandard.get_frame_parameters(with_dict).dict_id == 7
    bad = StvReader(data[: StvReader(data).chunks[1].offset] + entropy_chunk_with(with_dict, 4, 4))
    assert "zstd frame needs dictionary 7; the format uses none" in bad.validate()[0]


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"\x89STX", "bad magic"),
    (b"\x89STV\r\n\x1a\n\x01", "truncated at byte 9: the header prefix needs 16 bytes"),
    (b"\x89STV\r\n\x1a\n\x02\x03", "unsupported .stv version 2.3"),  # 10 bytes: the version comes before the size
    (b"\x89STV\r\n\x1a\n\x01\x01\x00\x00" + (487).to_bytes(4, "little"), "below the minimum 488"),
])
def test_check_order_for_short_files(data, message):
    with pytest.raises(BitstreamError, match=re.escape(message)):
        decode_header(data)


def test_invalid_utf8_generator_name_is_a_header_error():
    data = bytearray(make_file(1)[0])
    data[33] = 0xFF
    with pytest.raises(BitstreamError, match="generator name .* is not UTF-8"):
        StvReader(bytes(recrc_header(data)))


@pytest.mark.parametrize("data, problem", [
    (b'{"editor": "linear", "model": "tiny-pose"}', None),
    (b'{"editor": "linear", "model": "tiny-pose", "future": 1}', None),
    (b"\xff", "is not UTF-8"),
    (b"{editor: linear}", "is not JSON"),
    (b"[1, 2]", "is not a JSON object"),
    (b'{"editor": "linear"}', 'lacks the strings "editor" and "model"'),
    (b'{"editor": "styleflow", "model": "m", "condition": [0, 1]}',
     'needs a "condition" of 17 finite numbers for the styleflow editor'),
    (b'{"editor": "styleflow", "model": "m", "condition": [' + b", ".join([b"1"] * 17) + b"]}", None),
])
def test_pose_extension_rules(data, problem):
    assert pose_problem(data) == problem
    reader = StvReader(make_file(2, extensions=[(b"pose", data)])[0])
    if problem is None:
        assert reader.header.pose_editor["model"] and reader.validate() == []
    else:
        with pytest.raises(BitstreamError, match=re.escape(problem)):
            reader.header.pose_editor
        assert reader.validate() == [f"header: extension 'pose' {problem}"]


def test_the_first_of_a_repeated_tag_is_used_and_bad_utf8_is_replaced():
    reader = StvReader(DATA / "golden_ext11.stv")
    assert reader.header.note == "first note, bad UTF-8: \ufffd\ufffd"
    assert [t for t, _ in reader.header.extensions] == [b"note", b"\xe9t\xe9!", b"zzz2", b"note"]
    assert len(reader) == 0 and reader.validate() == []


def test_an_unknown_profile_is_stepped_over_not_searched():
    reader = StvReader(DATA / "golden_unknown_profile.stv")
    assert [c.first_frame for c in reader.chunks] == [0, 8] and len(reader) == 12
    with pytest.raises(BitstreamError, match="profile 250 is not known"):
        reader[5]


def test_a_header_only_file_promising_frames_is_a_truncation():
    reader = StvReader(DATA / "golden_header_only.stv")
    assert len(reader) == 0 and reader.truncated == range(0, 3) and list(reader) == []
    assert "the file ends before frame 0, the header promises 3 frames (frames 0-2 lost)" in reader.validate()[0]


def test_crc_of_the_goldens_is_what_their_bytes_say():
    # sanity for the hand-built goldens: every chunk the reader accepts has a matching CRC32 over +4..+15+P
    for name in READABLE:
        data = (DATA / name).read_bytes()
        for chunk in StvReader(data).chunks:
            body = data[chunk.offset + 4 : chunk.end - 4]
            assert zlib.crc32(body).to_bytes(4, "little") == data[chunk.end - 4 : chunk.end]
