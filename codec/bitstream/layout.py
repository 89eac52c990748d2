"""Every field of a .stv file with its byte offset, size and meaning, and a labelled hex dump of them.

Used to generate the worked example of format_spec.md (so the spec shows real bytes) and for debugging damaged
files. Works on intact files: it trusts the structure that StvReader has checked.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from codec.bitstream.chunk import ChunkInfo
from codec.bitstream.reader import StvReader
from codec.bitstream.schema import (
    CHUNK_HEAD_SIZE,
    FRAME_COUNT_UNKNOWN,
    HEADER_PREFIX_SIZE,
    N_ALPHA,
    PARAM_NAMES,
    PROFILE_NAMES,
    PROFILE_RAW,
    RECORD_SIZE,
)


@dataclass(frozen=True)
class Field:
    offset: int
    size: int
    label: str


class _Cursor:
    """Walks the bytes left to right, reading little-endian values and recording a Field for each."""

    def __init__(self, data: bytes, offset: int = 0):
        self.data, self.pos, self.fields = data, offset, []

    def take(self, size: int, label: str) -> bytes:
        raw = self.data[self.pos : self.pos + size]
        self.fields.append(Field(self.pos, size, label))
        self.pos += size
        return raw

    def num(self, fmt: str, label: str) -> int | float:
        value = struct.unpack("<" + fmt, self.data[self.pos : self.pos + struct.calcsize(fmt)])[0]
        self.take(struct.calcsize(fmt), label.format(value))
        return value


def describe(data: bytes) -> list[Field]:
    reader = StvReader(data)
    cur = _Cursor(data)
    cur.take(8, "magic")
    cur.num("B", "major version = {}")
    cur.num("B", "minor version = {}")
    cur.num("H", "flags = {}")
    cur.num("I", "header size = {} bytes (CRC included)")
    assert cur.pos == HEADER_PREFIX_SIZE
    cur.num("H", "width = {}")
    cur.num("H", "height = {}")
    cur.num("I", "frame rate numerator = {}")
    cur.num("I", "frame rate denominator = {}")
    count = cur.data[cur.pos : cur.pos + 4]
    unknown = " (unknown)" if int.from_bytes(count, "little") == FRAME_COUNT_UNKNOWN else ""
    cur.num("I", "frame count = {}" + unknown)
    name_len = cur.num("B", "generator name length = {}")
    cur.take(name_len, f"generator name = {reader.header.generator_name!r}")
    cur.take(32, "generator weights sha256")
    for k in range(N_ALPHA):
        cur.num("H", f"StyleSpace index {PARAM_NAMES[k]}: layer = {{}}")
        cur.num("H", f"StyleSpace index {PARAM_NAMES[k]}: channel = {{}}")
    for name in PARAM_NAMES:
        cur.num("f", f"quantisation {name}: scale = {{!r}}")
        cur.num("f", f"quantisation {name}: offset = {{!r}}")
    rows = cur.num("H", "ID latent rows = {}")
    dim = cur.num("H", "ID latent dim = {}")
    zsize = cur.num("I", "ID latent zstd size = {} bytes")
    cur.take(zsize, f"ID latent: zstd frame of {rows}x{dim}x2 = {rows * dim * 2} bytes of float16")
    n_ext = cur.num("H", "extension count = {}")
    for _ in range(n_ext):
        tag = cur.take(4, "extension tag")
        cur.fields[-1] = Field(cur.fields[-1].offset, 4, f"extension tag = {tag.decode('latin-1')!r}")
        size = cur.num("I", "extension length = {} bytes")
        cur.take(size, f"extension data ({tag.decode('latin-1')!r})")
    cur.take(4, f"header CRC32 of bytes 0-{reader.header_size - 5}")
    for chunk in reader.chunks:
        cur.pos = chunk.offset
        _describe_chunk(cur, chunk, reader)
    return cur.fields


def _describe_chunk(cur: _Cursor, chunk: ChunkInfo, reader: StvReader) -> None:
    cur.take(4, f"chunk sync word (chunk at byte {chunk.offset})")
    cur.num("B", "chunk profile = {} (" + PROFILE_NAMES[chunk.profile] + ")")
    cur.num("B", "chunk reserved = {}")
    cur.num("H", "chunk record count = {}")
    cur.num("I", "chunk first frame = {}")
    cur.num("I", "chunk payload size = {} bytes")
    assert cur.pos == chunk.offset + CHUNK_HEAD_SIZE
    if chunk.profile == PROFILE_RAW:
        for frame in chunk.frames:
            for name in PARAM_NAMES:
                cur.num("h", f"frame {frame} {name} = {{}}")
    else:
        cur.take(chunk.payload_size, f"entropy payload: zstd of {chunk.count}x{RECORD_SIZE} bytes")
    cur.take(4, f"chunk CRC32 of bytes {chunk.offset + 4}-{chunk.end - 5}")


def hexdump(data: bytes, width: int = 16) -> str:
    """One block per field: offset (decimal and hex), up to `width` bytes per line, the label on the first line."""
    lines = []
    for f in describe(data):
        raw = data[f.offset : f.offset + f.size]
        for i in range(0, max(len(raw), 1), width):
            part = " ".join(f"{b:02x}" for b in raw[i : i + width])
            label = f.label if i == 0 else ""
            lines.append(f"{f.offset + i:6d} {f.offset + i:06x}  {part:<{3 * width - 1}}  {label}".rstrip())
    return "\n".join(lines)
