"""Resynchronisation costs time linear in the file, whatever the damaged bytes claim: slice CRCs from prefix
CRCs (codec/bitstream/crc.py) agree with zlib, and a flood of sync words whose heads claim payloads running to
the end of the file is hashed a bounded number of times per byte (it was quadratic: 1 MB took 10 s)."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import pytest

from codec.bitstream import StvReader, chunk, crc
from codec.bitstream.schema import CHUNK_HEAD_SIZE, SYNC, ChunkHead

GOLDEN = Path(__file__).resolve().parent / "data" / "golden_raw.stv"


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 2049, 4096, 10_000, 70_001])
def test_slice_crc_equals_zlib_on_every_kind_of_slice(size):
    rng = random.Random(size)
    data = memoryview(rng.randbytes(size))
    slice_crc = crc.SliceCrc(data)
    block = crc.SliceCrc.BLOCK
    edges = [0, size, block, 2 * block, 3 * block + 1] + [rng.randint(0, size) for _ in range(200)]
    for _ in range(400):
        a, b = sorted(min(rng.choice(edges) + rng.randint(-2, 2), size) for _ in range(2))
        a = max(a, 0)
        assert slice_crc(a, b) == zlib.crc32(data[a:b]), (a, b)


def test_multiply_is_the_crc_shift():
    # x^(8n) applied by multiplication equals hashing n zero bytes
    register = 0x1234_5678
    power = crc.shift(crc.X0, 5)
    assert crc.multiply(power, register) == crc.shift(register, 5)


def test_struct_head_parse_agrees_with_the_schema():
    rng = random.Random(0)
    for _ in range(200):
        raw = SYNC + rng.randbytes(CHUNK_HEAD_SIZE - len(SYNC))
        parsed = chunk.parse_chunk_head(memoryview(raw), 0)
        schema = ChunkHead.parse(raw)
        assert parsed._asdict() == {k: schema[k] for k in parsed._fields}


def sync_flood(n: int) -> bytes:
    """The golden's header, then n chunk heads, each claiming a payload that runs to the end of the file."""
    golden = GOLDEN.read_bytes()
    header = golden[: StvReader(golden).header_size]
    size = CHUNK_HEAD_SIZE * n
    return header + b"".join(
        ChunkHead.build(dict(sync=SYNC, profile=1, reserved=0, count=1, first_frame=0,
                             payload_size=max(0, size - CHUNK_HEAD_SIZE * k - 20)))
        for k in range(n))


def test_a_sync_flood_is_hashed_a_bounded_number_of_times_per_byte(monkeypatch):
    hashed = []

    def counting_crc32(data, value=0):
        hashed.append(len(data))
        return zlib.crc32(data, value)

    fake = type("zlib", (), {"crc32": staticmethod(counting_crc32)})
    monkeypatch.setattr(crc, "zlib", fake)
    monkeypatch.setattr(chunk, "zlib", fake)
    for n in (2_000, 8_000):
        hashed.clear()
        data = sync_flood(n)
        reader = StvReader(data)
        assert len(reader) == 0 and reader.damage
        # per candidate: at most two blocks of data and one block of zeros, plus one pass for the prefixes
        assert sum(hashed) <= len(data) + n * 4 * crc.SliceCrc.BLOCK, (n, sum(hashed))


FUZZ = Path(__file__).resolve().parent / "data" / "fuzz"


def test_unknown_profile_counts_do_not_make_a_small_file_present_millions_of_frames():
    """Found by the 1,000,000-input fuzz run: 6 KB of damaged chunks, some of an unknown profile claiming large
    counts, let a later chunk sit 16.5 M frames ahead, and the file presented 16,583,977 frames with none
    decodable (`list(reader)` alone then reserved 132 MB). Only a decodable chunk's count bounds a gap now."""
    data = (FUZZ / "presents_millions_through_unknown_profiles.stv").read_bytes()
    reader = StvReader(data)
    assert len(reader) <= 8 * len(data)
    assert any("at most" in str(d) and "missing before it" in str(d) for d in reader.damage)
