"""The .stv bitstream: quantisation, writer/reader round trips, header checks, profiles, streaming, atomicity."""

from __future__ import annotations

import io
import os
import subprocess
import tracemalloc
import zlib
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from codec.bitstream import (
    PARAM_NAMES,
    QuantTable,
    StvReader,
    StvWriter,
    dequantise,
    quantise,
)
from codec.bitstream.chunk import decode_payload, encode_chunk, encode_payload
from codec.bitstream.schema import FRAME_COUNT_OFFSET, PROFILE_ENTROPY, PROFILE_RAW
from codec.errors import BitstreamError
from test_bitstream_helpers import make_file, make_header, recrc_header, smooth_params


def test_import_needs_no_torch():
    code = (
        "import sys, codec.bitstream, codec.bitstream.probe, codec.bitstream.layout, codec.cli.stvinfo\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_param_names_are_the_record_order():
    assert len(PARAM_NAMES) == 35
    assert PARAM_NAMES[:2] == ("alpha_00", "alpha_01") and PARAM_NAMES[31] == "alpha_31"
    assert PARAM_NAMES[32:] == ("yaw", "pitch", "roll")


# --- quantisation -----------------------------------------------------------------------------------------

def test_quantise_round_trip_error_is_at_most_half_a_step():
    params = smooth_params(200, seed=1) * 20
    records, table, sat = quantise(params)
    assert sat.total == 0
    error = np.abs(dequantise(records, table) - params)
    # Rounding to nearest loses at most half a step; 1e-6 relative slack covers float32 storage of the offset.
    assert (error <= table.scale / 2 * (1 + 1e-6) + 1e-6 * np.abs(params)).all()


def test_quantise_counts_every_saturated_value():
    table = QuantTable(np.full(35, 0.01, np.float32), np.zeros(35, np.float32))  # range about +-327.7
    params = np.zeros((10, 35))
    params[3, 0] = 1000.0  # clipped high
    params[4, 0] = -1000.0  # clipped low
    params[5, 34] = 400.0  # clipped high
    params[6, 33] = 327.0  # inside the range: not counted
    records, _, sat = quantise(params, table)
    assert sat.total == 3 and sat.per_param[0] == 2 and sat.per_param[34] == 1
    assert records[3, 0] == 32767 and records[4, 0] == -32768
    assert "alpha_00: 2" in str(sat) and "roll: 1" in str(sat)


def test_quant_table_from_data_uses_the_whole_range_when_asked():
    params = np.linspace(-5, 5, 35 * 4).reshape(4, 35)
    table = QuantTable.from_data(params, margin=0.25, steps=0)
    records, _, sat = quantise(params, table)
    assert sat.total == 0
    # with a 25 % margin the extreme values land near 32767 / 1.25
    assert 26000 < np.abs(records.astype(int)).max() < 26300


def test_quantise_rejects_non_finite_and_bad_shapes():
    params = np.zeros((3, 35))
    params[1, 33] = np.nan
    with pytest.raises(BitstreamError, match="pitch of frame 1"):
        quantise(params)
    with pytest.raises(BitstreamError, match="shape"):
        quantise(np.zeros((3, 34)))
    with pytest.raises(BitstreamError, match="alpha_02"):
        QuantTable(np.where(np.arange(35) == 2, 0.0, 1.0), np.zeros(35))


# --- round trips ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["raw", "entropy"])
def test_write_read_round_trip(tmp_path, profile):
    params = smooth_params(103, seed=2)
    header = make_header(params, rows=10, dim=64)
    path = tmp_path / "a.stv"
    with StvWriter(path, header, profile=profile, chunk_frames=25) as writer:
        writer.append(params[:50])  # floats: quantised with the header's table
        writer.append(quantise(params[50:], header.quant)[0])  # int16 records: written as they are
    records = quantise(params, header.quant)[0]
    reader = StvReader(path)
    assert len(reader) == 103 and reader.header.frame_count == 103
    assert [c.count for c in reader.chunks] == [25, 25, 25, 25, 3]
    assert np.array_equal(reader.records(), records)
    assert np.array_equal(reader[7], dequantise(records[7], header.quant))
    assert np.array_equal(reader[-1], dequantise(records[102], header.quant))
    assert np.array_equal(reader.records(24, 51), records[24:51])
    assert np.array_equal(np.array(list(reader)), dequantise(records, header.quant))
    assert np.array_equal(reader.header.id_latent, header.id_latent)
    assert reader.header.style_indices == header.style_indices
    assert reader.header.generator_sha256 == header.generator_sha256
    assert reader.damage == [] and reader.validate() == []
    with pytest.raises(IndexError):
        reader[103]


def test_entropy_profile_is_smaller_on_smooth_tracks_and_decodes_identically():
    raw, records, _ = make_file(200, "raw", chunk_frames=100)
    entropy, _, _ = make_file(200, "entropy", chunk_frames=100)
    assert len(entropy) < len(raw)
    assert np.array_equal(StvReader(entropy).records(), records)
    assert np.array_equal(StvReader(raw).records(), records)


@settings(max_examples=60, deadline=None)
@given(arrays(np.int16, st.tuples(st.integers(1, 40), st.just(35))))
def test_entropy_payload_decodes_to_identical_records(records):
    # any int16 data, extremes included: the delta must wrap around and come back exactly
    for profile in (PROFILE_RAW, PROFILE_ENTROPY):
        assert np.array_equal(decode_payload(encode_payload(records, profile), profile, len(records)), records)


def test_entropy_wraps_extreme_jumps():
    records = np.zeros((6, 35), np.int16)
    records[::2] = 32767
    records[1::2] = -32768
    assert np.array_equal(decode_payload(encode_payload(records, PROFILE_ENTROPY), PROFILE_ENTROPY, 6), records)


def test_mixed_profiles_in_one_file():
    params = smooth_params(30)
    header = make_header(params)
    out = io.BytesIO()
    with StvWriter(out, header, profile="entropy", chunk_frames=10) as writer:
        writer.append(params[:10])
        writer.profile = "raw"
        writer.append(params[10:20])
        writer.profile = "entropy"
        writer.append(params[20:])
    reader = StvReader(out.getvalue())
    assert [c.profile_name for c in reader.chunks] == ["entropy", "raw", "entropy"]
    assert np.array_equal(reader.records(), quantise(params, header.quant)[0])


def test_writer_reports_saturation():
    header = make_header(None)  # identity table: step 1
    with StvWriter(io.BytesIO(), header) as writer:
        writer.append(np.full((2, 35), 40000.0))
    assert writer.saturation.total == 70


def test_output_is_deterministic():
    assert make_file(50, "entropy")[0] == make_file(50, "entropy")[0]


# --- streaming, frame count, atomic finalise ---------------------------------------------------------------

class Pipe(io.BytesIO):
    def seekable(self) -> bool:
        return False


def test_stream_leaves_frame_count_unknown_and_reader_counts_chunks():
    params = smooth_params(9)
    header = make_header(params)
    pipe = Pipe()
    writer = StvWriter(pipe, header, chunk_frames=4)
    writer.append(params)
    writer.close()
    data = pipe.getvalue()
    assert data[FRAME_COUNT_OFFSET : FRAME_COUNT_OFFSET + 4] == b"\xff\xff\xff\xff"
    reader = StvReader(data)
    assert reader.header.frame_count is None and len(reader) == 9 and reader.validate() == []


def test_header_only_stream_and_zero_frames():
    pipe = Pipe()
    StvWriter(pipe, make_header()).close()
    reader = StvReader(pipe.getvalue())
    assert len(reader) == 0 and reader.chunks == [] and reader.damage == [] and list(reader) == []
    seekable = io.BytesIO()
    StvWriter(seekable, make_header()).close()
    reader = StvReader(seekable.getvalue())
    assert reader.header.frame_count == 0 and len(reader) == 0 and reader.validate() == []


def test_failed_write_leaves_target_untouched(tmp_path):
    path = tmp_path / "keep.stv"
    path.write_bytes(b"previous content")
    with pytest.raises(RuntimeError):
        with StvWriter(path, make_header()) as writer:
            writer.append(np.zeros((3, 35)))
            raise RuntimeError("encoder crashed")
    assert path.read_bytes() == b"previous content"
    assert os.listdir(tmp_path) == ["keep.stv"]  # no temporary file left behind


def test_finalised_file_appears_only_on_close(tmp_path):
    path = tmp_path / "new.stv"
    writer = StvWriter(path, make_header(), chunk_frames=2)
    writer.append(np.zeros((5, 35)))
    assert not path.exists()
    writer.close()
    assert len(StvReader(path)) == 5


# --- header checks ----------------------------------------------------------------------------------------

def test_wrong_magic():
    data = bytearray(make_file(3)[0])
    data[1] ^= 0x20
    with pytest.raises(BitstreamError, match="bad magic"):
        StvReader(bytes(data))


def test_newer_major_version_is_refused_and_newer_minor_is_read():
    data = bytearray(make_file(3)[0])
    major = bytearray(data)
    major[8] = 2
    with pytest.raises(BitstreamError, match=r"unsupported .stv version 2\.1 "):
        StvReader(bytes(recrc_header(major)))
    minor = bytearray(data)
    minor[9] = 7
    assert len(StvReader(bytes(recrc_header(minor)))) == 3


def refused_with_small_peak(data: bytes, match: str) -> None:
    """StvReader refuses `data`, and its peak allocation stays far below what the absurd field claims."""
    tracemalloc.start()
    try:
        with pytest.raises(BitstreamError, match=match):
            StvReader(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 256 kB: a few copies of this ~1 kB file plus interpreter noise; the fields below claim up to 4 GiB
    assert peak < 256 * 1024, peak


def test_absurd_lengths_are_refused_without_allocating():
    data = bytearray(make_file(3)[0])
    size = int.from_bytes(data[12:16], "little")
    huge = bytearray(data)
    huge[12:16] = (0xFFFF_FFF0).to_bytes(4, "little")
    refused_with_small_peak(bytes(huge), "truncated at byte")
    # rows/dim inside the CRC-protected header set to their maximum: the zstd frame declares another size
    name_len = data[32]
    rows_at = 33 + name_len + 32 + 128 + 280
    big = bytearray(data)
    big[rows_at : rows_at + 4] = (64).to_bytes(2, "little") + (4096).to_bytes(2, "little")
    refused_with_small_peak(bytes(recrc_header(big)), "ID latent")
    # the latent's length prefix claims 4 GiB: construct cannot find the bytes, nothing is allocated
    length = bytearray(data)
    length[rows_at + 4 : rows_at + 8] = (0xFFFF_FFFF).to_bytes(4, "little")
    refused_with_small_peak(bytes(recrc_header(length)), "header damaged")
    # an extension claiming more bytes than the header has
    ext = make_file(3, extensions=[(b"abcd", b"12345")])[0]
    ext = bytearray(ext)
    at = ext.index(b"abcd") + 4
    ext[at : at + 4] = (0x7FFF_FFFF).to_bytes(4, "little")
    refused_with_small_peak(bytes(recrc_header(ext)), "header damaged")
    assert size < len(data)


def test_a_chunk_claiming_a_huge_payload_is_damage_not_an_allocation():
    data, records, _ = make_file(12, "entropy")
    reader = StvReader(data)
    second = bytearray(data)
    at = reader.chunks[1].offset + 12
    second[at : at + 4] = (0xFFFF_FFF0).to_bytes(4, "little")
    damaged = StvReader(bytes(second))
    assert [c.first_frame for c in damaged.chunks] == [0, 8]
    assert damaged.damage[0].frames == range(4, 8)
    assert np.array_equal(damaged.records(8, 12), records[8:12])


def test_unknown_extension_is_skipped_and_known_one_kept():
    data = make_file(3, extensions=[(b"zzz9", b"\x00\x01"), (b"note", "héllo".encode())])[0]
    reader = StvReader(data)
    assert reader.header.note == "héllo" and len(reader) == 3
    assert reader.header.extensions[0] == (b"zzz9", b"\x00\x01")


def test_header_range_checks():
    with pytest.raises(BitstreamError, match="StyleSpace index 0"):
        make_header(style_indices=[(26, 0)] + [(0, 0)] * 31)
    with pytest.raises(BitstreamError, match="frame rate"):
        make_header(fps_den=0)
    with pytest.raises(BitstreamError, match="non-finite"):
        make_header(id_latent=np.full((2, 8), np.inf))


# --- damage in the middle: resync ------------------------------------------------------------------------

def test_resync_after_a_damaged_chunk():
    data, records, header = make_file(16, "raw")
    reader = StvReader(data)
    bad = bytearray(data)
    bad[reader.chunks[1].payload_offset + 10] ^= 0xFF
    damaged = StvReader(bytes(bad))
    assert [c.first_frame for c in damaged.chunks] == [0, 8, 12]
    (d,) = damaged.damage
    assert (d.start, d.end, d.frames) == (reader.chunks[1].offset, reader.chunks[2].offset, range(4, 8))
    assert "CRC32 mismatch" in str(d)
    available = dict(damaged.iter_available())
    assert sorted(available) == [0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15]
    assert np.array_equal(available[9], dequantise(records[9], header.quant))
    with pytest.raises(BitstreamError, match=f"frame 5 is not available: bytes {d.start}-{d.end - 1}"):
        damaged[5]
    got = []
    with pytest.raises(BitstreamError, match="frame 4 is not available"):
        for values in damaged:
            got.append(values)
    assert len(got) == 4


def test_damaged_sync_word_resyncs_on_the_next_chunk():
    data, records, _ = make_file(12, "entropy")
    reader = StvReader(data)
    bad = bytearray(data)
    bad[reader.chunks[0].offset] ^= 0x01
    damaged = StvReader(bytes(bad))
    assert [c.first_frame for c in damaged.chunks] == [4, 8]
    assert damaged.damage[0].frames == range(0, 4) and "no sync word" in str(damaged.damage[0])
    assert np.array_equal(damaged.records(4, 12), records[4:])


def rebuild_chunk(
    data: bytes, offset: int, end: int, profile: int | None = None, payload: bytes | None = None
) -> bytes:
    """Rewrite one chunk (new profile byte and/or payload) with a valid CRC, as a buggy or newer writer might."""
    head = bytearray(data[offset : offset + 16])
    if profile is not None:
        head[4] = profile
    body = bytes(data[offset + 16 : end - 4]) if payload is None else payload
    head[12:16] = len(body).to_bytes(4, "little")
    crc = zlib.crc32(bytes(head[4:]) + body).to_bytes(4, "little")
    return data[:offset] + bytes(head) + body + crc + data[end:]


def test_unknown_profile_chunk_is_skipped_with_its_frames_reported():
    data, records, _ = make_file(12, "raw")
    chunks = StvReader(data).chunks
    newer = rebuild_chunk(data, chunks[1].offset, chunks[1].end, profile=7)
    reader = StvReader(newer)
    assert [c.first_frame for c in reader.chunks] == [0, 8]
    assert "chunk profile 7 is not known to this reader, stepped over" in str(reader.damage[0])
    assert reader.damage[0].frames == range(4, 8) and len(reader) == 12
    assert np.array_equal(reader.records(8, 12), records[8:])


def test_entropy_payload_that_passes_its_crc_but_does_not_decode():
    data, _, _ = make_file(12, "entropy")
    chunks = StvReader(data).chunks
    bogus = rebuild_chunk(data, chunks[2].offset, chunks[2].end, payload=b"\x28\xb5\x2f\xfd" + bytes(20))
    reader = StvReader(bogus)
    problems = reader.validate()
    assert len(problems) == 1 and problems[0].startswith(f"bytes {chunks[2].offset}-") and "zstd" in problems[0]
    with pytest.raises(BitstreamError, match=f"frame 9 is not available: bytes {chunks[2].offset}-"):
        reader[9]
    assert len(reader.values(0, 8)) == 8


def test_duplicated_and_excess_chunks_are_reported():
    data, records, _ = make_file(8, "raw")
    chunks = StvReader(data).chunks
    duplicated = data + data[chunks[1].offset : chunks[1].end]  # frames 4-7 again, beyond the header's 8
    reader = StvReader(duplicated)
    assert len(reader.chunks) == 2 and np.array_equal(reader.records(), records)
    assert len(reader.damage) == 1 and "overlapping frames already read" in str(reader.damage[0])
    excess = data + encode_chunk(records[:2], 8, PROFILE_RAW)  # frames 8-9 of a file that promises 8
    reader = StvReader(excess)
    assert len(reader) == 8 and "beyond the header's 8 frames" in str(reader.damage[0])
