"""Chunks: a 16-byte head (sync, profile, count, first frame, payload size), the payload, a CRC32.

Payload profiles (format_spec.md "Chunk payloads"):
  raw      the records as they are: count * 70 bytes, 35 little-endian int16 per frame.
  entropy  d[0] = r[0], d[t] = r[t] - r[t-1] (int16 wrap-around); zigzag z = (d << 1) ^ (d >> 15) as uint16;
           arranged parameter-major (all frames of parameter 0, then parameter 1, ...); split into a plane of
           low bytes followed by a plane of high bytes; one zstd frame. Decodes to the identical records.
  arith    (1.3) context-adaptive rANS over predicted residuals (codec.bitstream.arith); identical records.
"""

from __future__ import annotations

import struct
import zlib
from collections import namedtuple
from dataclasses import dataclass
from typing import Callable

import numpy as np

from codec.bitstream.arith import DEFAULT_GROUPS, decode_arith, encode_arith
from codec.bitstream.compress import compress, decompress_exact
from codec.bitstream.schema import (
    CHUNK_HEAD_SIZE,
    CHUNK_OVERHEAD,
    CRC_SIZE,
    MAX_CHUNK_FRAMES,
    MAX_FRAME_COUNT,
    N_PARAMS,
    PROFILE_ARITH,
    PROFILE_ENTROPY,
    PROFILE_NAMES,
    PROFILE_RAW,
    RECORD_SIZE,
    SYNC,
    ChunkHead,
)
from codec.errors import BitstreamError


@dataclass(frozen=True)
class ChunkInfo:
    """Where one intact chunk lies in the file and what it holds (its CRC has been checked)."""

    offset: int  # byte offset of the sync word
    profile: int
    count: int
    first_frame: int
    payload_size: int

    @property
    def payload_offset(self) -> int:
        return self.offset + CHUNK_HEAD_SIZE

    @property
    def end(self) -> int:  # one past the last byte of the CRC
        return self.offset + CHUNK_OVERHEAD + self.payload_size

    @property
    def frames(self) -> range:
        return range(self.first_frame, self.first_frame + self.count)

    @property
    def profile_name(self) -> str:
        return PROFILE_NAMES.get(self.profile, f"unknown({self.profile})")

    @property
    def known(self) -> bool:
        """Whether this reader can decode the chunk's profile (an unknown one is stepped over by its length)."""
        return self.profile in PROFILE_NAMES


class ChunkDamage(Exception):
    """A chunk that cannot be used, with the reason; `truncated` when the file ends inside it."""

    def __init__(self, reason: str, truncated: bool = False):
        super().__init__(reason)
        self.truncated = truncated


def as_records(records: np.ndarray) -> np.ndarray:
    records = np.asarray(records)
    if records.ndim != 2 or records.shape[1] != N_PARAMS or records.dtype != np.int16:
        raise BitstreamError(f"records must be int16 of shape (n, {N_PARAMS}), got {records.dtype} {records.shape}")
    return records


def encode_payload(records: np.ndarray, profile: int, groups: tuple[int, ...] = DEFAULT_GROUPS) -> bytes:
    """`groups`: the arith profile's facial regions (consecutive parameters); other profiles ignore it."""
    records = as_records(records)
    if profile == PROFILE_RAW:
        return records.astype("<i2").tobytes()
    if profile == PROFILE_ENTROPY:
        return compress(delta_planes(records))
    if profile == PROFILE_ARITH:
        return encode_arith(records, groups)
    raise BitstreamError(f"unknown chunk profile {profile}")


def delta_planes(values: np.ndarray) -> bytes:
    """int16 [n, k] -> the entropy profile's transform (§7 steps 2-5): per-column deltas in 16-bit wrap-around,
    zigzag, column-major, low-byte plane then high-byte plane (2nk bytes). Also used by the `plac` extension."""
    r = np.asarray(values).astype(np.int16)
    d = np.empty_like(r)
    d[0] = r[0]
    with np.errstate(over="ignore"):
        d[1:] = r[1:] - r[:-1]  # int16 arithmetic wraps, which the decoder's cumulative sum undoes exactly
    z = ((d.astype(np.int32) << 1) ^ (d.astype(np.int32) >> 15)).astype(np.uint16)
    z = np.ascontiguousarray(z.T)  # parameter-major
    return (z & 0xFF).astype(np.uint8).tobytes() + (z >> 8).astype(np.uint8).tobytes()


def decode_payload(payload: bytes, profile: int, count: int) -> np.ndarray:
    """Payload bytes -> int16 records (count, 35); BitstreamError if it does not decode to exactly that."""
    size = count * RECORD_SIZE
    if profile == PROFILE_RAW:
        if len(payload) != size:
            raise BitstreamError(f"raw payload holds {len(payload)} bytes, expected {size}")
        return np.frombuffer(payload, dtype="<i2").reshape(count, N_PARAMS).astype(np.int16)
    if profile == PROFILE_ENTROPY:
        return undelta_planes(decompress_exact(payload, size, "entropy payload"), count, N_PARAMS)
    if profile == PROFILE_ARITH:
        return decode_arith(bytes(payload), count)
    raise BitstreamError(f"unknown chunk profile {profile} (written by a newer encoder?)")


def undelta_planes(data: bytes, rows: int, columns: int) -> np.ndarray:
    """delta_planes' inverse: 2 * rows * columns bytes -> int16 [rows, columns]."""
    planes = np.frombuffer(data, dtype=np.uint8)
    n = rows * columns
    z = (planes[:n].astype(np.uint16) | (planes[n:].astype(np.uint16) << 8)).reshape(columns, rows).T
    d = ((z >> 1).astype(np.int32) ^ -(z & 1).astype(np.int32)).astype(np.int16)
    with np.errstate(over="ignore"):
        return np.cumsum(d, axis=0, dtype=np.int16)


def encode_chunk(records: np.ndarray, first_frame: int, profile: int,
                 groups: tuple[int, ...] = DEFAULT_GROUPS) -> bytes:
    records = as_records(records)
    if not 1 <= len(records) <= MAX_CHUNK_FRAMES:
        raise BitstreamError(f"a chunk holds 1..{MAX_CHUNK_FRAMES} frames, got {len(records)}")
    return chunk_bytes(profile, len(records), first_frame, encode_payload(records, profile, groups))


def chunk_bytes(profile: int, count: int, first_frame: int, payload: bytes) -> bytes:
    """A chunk around `payload` as it is (any profile byte; tools use it for the goldens of unusual chunks)."""
    head = ChunkHead.build(
        dict(sync=SYNC, profile=profile, reserved=0, count=count, first_frame=first_frame, payload_size=len(payload))
    )
    body = head[len(SYNC) :] + payload
    return SYNC + body + zlib.crc32(body).to_bytes(4, "little")


# ChunkHead's fields as one struct call: resynchronisation parses a head at every sync word of the damaged bytes,
# and construct's parse costs ~25 us a head (tests/test_bitstream.py checks the two agree).
CHUNK_HEAD_STRUCT = struct.Struct("<4sBBHII")
ParsedHead = namedtuple("ParsedHead", "sync profile reserved count first_frame payload_size")


def parse_chunk_head(data: memoryview, offset: int) -> ParsedHead:
    return ParsedHead._make(CHUNK_HEAD_STRUCT.unpack_from(data, offset))


def read_chunk_at(data: memoryview, offset: int, slice_crc: Callable[[int, int], int] | None = None) -> ChunkInfo:
    """Check the chunk starting at `offset`: sync, sane head, bytes present, CRC, payload decodes.

    `slice_crc(start, stop)`, when given, is crc32(data[start:stop]) (a SliceCrc: constant time per candidate
    while resynchronising). Raises ChunkDamage saying what is wrong."""
    available = len(data) - offset
    if available < CHUNK_HEAD_SIZE:
        if bytes(data[offset : offset + len(SYNC)]) != SYNC[: max(0, min(available, len(SYNC)))]:
            raise ChunkDamage("no sync word")
        raise ChunkDamage(f"file ends inside a chunk head ({available} of {CHUNK_HEAD_SIZE} bytes)", truncated=True)
    head = parse_chunk_head(data, offset)
    if head.sync != SYNC:
        raise ChunkDamage("no sync word")
    if head.count == 0:
        raise ChunkDamage("chunk head damaged (record count 0)")
    if head.first_frame + head.count > MAX_FRAME_COUNT:
        raise ChunkDamage(f"chunk head damaged (frames {head.first_frame}-{head.first_frame + head.count - 1} "
                          f"pass the last possible frame {MAX_FRAME_COUNT - 1})")
    if head.profile == PROFILE_RAW and head.payload_size != head.count * RECORD_SIZE:
        raise ChunkDamage(f"chunk head damaged (raw payload size {head.payload_size} != {head.count} x {RECORD_SIZE})")
    end = offset + CHUNK_OVERHEAD + head.payload_size
    if end > len(data):
        raise ChunkDamage(
            f"file ends inside a chunk (needs {end - offset} bytes, {available} present)", truncated=True
        )
    body_start, body_stop = offset + len(SYNC), end - CRC_SIZE
    crc = slice_crc(body_start, body_stop) if slice_crc else zlib.crc32(data[body_start:body_stop])
    if crc.to_bytes(4, "little") != bytes(data[body_stop:end]):
        raise ChunkDamage("chunk CRC32 mismatch")
    # A profile this reader does not know is not damage: its CRC matched, so its length is right and the reader
    # steps over it (ChunkInfo.known is False); its frames cannot be decoded here.
    if head.profile in (PROFILE_ENTROPY, PROFILE_ARITH):
        # A CRC-valid payload can still fail to decode (a faulty writer); find out now, so that every chunk
        # a reader lists is one it can decode. zstd at ~1 GB/s makes this cheap next to reading the file.
        try:
            decode_payload(bytes(data[offset + CHUNK_HEAD_SIZE : end - CRC_SIZE]), head.profile, head.count)
        except BitstreamError as exc:
            raise ChunkDamage(str(exc)) from None
    return ChunkInfo(offset, head.profile, head.count, head.first_frame, head.payload_size)
