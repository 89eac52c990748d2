"""`StvReader`: random access, iteration and recovery over a .stv file.

    r = StvReader("in.stv")       # or StvReader(raw_bytes)
    r.header                      # StvHeader
    len(r)                        # frames the file promises (header count; else what the chunks hold)
    r[i]                          # 35 dequantised float64 values of frame i (order: PARAM_NAMES)
    r.records(a, b)               # int16 records (b - a, 35)
    for values in r: ...          # frames in order; BitstreamError at the first frame that is not available
    r.iter_available()            # (index, values) of every intact frame, skipping damaged ranges
    r.damage                      # list[Damage]: damaged byte ranges, why, and which frames they cost

Opening reads the header (fatal if damaged: without it no frame can be decoded), then walks the chunks checking
every CRC and that every payload decodes. A chunk that fails is recorded as damage and the reader resyncs on the
next sync word that starts an intact chunk. A file cut short keeps every whole chunk before the cut; asking for a
later frame raises BitstreamError naming the byte offset where the file ends. Memory: the file's bytes plus one
decoded chunk.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from codec.bitstream.chunk import ChunkDamage, ChunkInfo, decode_payload, read_chunk_at
from codec.bitstream.header import decode_header
from codec.bitstream.quant import dequantise
from codec.bitstream.schema import CHUNK_HEAD_SIZE, N_PARAMS, SYNC
from codec.errors import BitstreamError


@dataclass(frozen=True)
class Damage:
    """Bytes [start, end) that could not be used, why, and the frames lost with them (None: not known)."""

    start: int
    end: int
    reason: str
    frames: range | None = None

    def __str__(self) -> str:
        where = f"bytes {self.start}-{self.end - 1}" if self.end > self.start else f"byte {self.start}"
        lost = ""
        if self.frames is not None and len(self.frames):
            lost = f" (frames {self.frames.start}-{self.frames.stop - 1} lost)"
        return f"{where}: {self.reason}{lost}"


def read_file_bytes(source: str | os.PathLike) -> bytes:
    path = Path(source)
    if not path.exists():
        raise BitstreamError(f"{path}: no such file")
    if path.is_dir():
        raise BitstreamError(f"{path}: is a directory, not a .stv file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BitstreamError(f"{path}: cannot read ({exc.strerror or exc})") from None


class StvReader:
    def __init__(self, source: str | os.PathLike | bytes | bytearray | memoryview):
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.name = "<bytes>"
            self._data = bytes(source)
        else:
            self.name = str(source)
            self._data = read_file_bytes(source)
        try:
            self.header, self.header_size = decode_header(self._data)
        except BitstreamError as exc:
            raise BitstreamError(f"{self.name}: {exc}") from None
        self.chunks, self.damage = _scan_chunks(memoryview(self._data), self.header_size, self.header.frame_count)
        self._firsts = [c.first_frame for c in self.chunks]
        self._cached: tuple[ChunkInfo, np.ndarray] | None = None

    @property
    def file_size(self) -> int:
        return len(self._data)

    def __len__(self) -> int:
        if self.header.frame_count is not None:
            return self.header.frame_count
        return self.chunks[-1].frames.stop if self.chunks else 0

    def chunk_of(self, frame: int) -> ChunkInfo:
        """The intact chunk holding `frame`; BitstreamError naming the damage if none does."""
        k = bisect.bisect_right(self._firsts, frame) - 1
        if k >= 0 and frame in self.chunks[k].frames:
            return self.chunks[k]
        raise BitstreamError(f"{self.name}: frame {frame} is not available: {self._why_missing(frame)}")

    def _why_missing(self, frame: int) -> str:
        known = [d for d in self.damage if d.frames is not None and frame in d.frames]
        unsure = [d for d in self.damage if d.frames is None]  # damage whose lost frames could not be told
        return str((known or unsure)[0]) if known or unsure else "no chunk holds it"

    def chunk_records(self, chunk: ChunkInfo) -> np.ndarray:
        if self._cached is not None and self._cached[0] == chunk:
            return self._cached[1]
        payload = self._data[chunk.payload_offset : chunk.payload_offset + chunk.payload_size]
        try:
            records = decode_payload(payload, chunk.profile, chunk.count)
        except BitstreamError as exc:
            raise BitstreamError(f"{self.name}: chunk at byte {chunk.offset}: {exc}") from None
        self._cached = (chunk, records)
        return records

    def records(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """int16 records of frames [start, stop); every one must be available."""
        stop = len(self) if stop is None else stop
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"frame range {start}:{stop} outside 0:{len(self)}")
        parts, frame = [], start
        while frame < stop:
            chunk = self.chunk_of(frame)
            upto = min(stop, chunk.frames.stop)
            parts.append(self.chunk_records(chunk)[frame - chunk.first_frame : upto - chunk.first_frame])
            frame = upto
        return np.concatenate(parts) if parts else np.zeros((0, N_PARAMS), np.int16)

    def values(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Dequantised float64 values (n, 35) of frames [start, stop)."""
        return dequantise(self.records(start, stop), self.header.quant)

    def __getitem__(self, index: int) -> np.ndarray:
        n = len(self)
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError(f"frame {index} outside 0..{n - 1}")
        chunk = self.chunk_of(i)
        return dequantise(self.chunk_records(chunk)[i - chunk.first_frame], self.header.quant)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def iter_available(self) -> Iterator[tuple[int, np.ndarray]]:
        """Every intact frame as (index, values), in order, skipping what damage has lost."""
        for chunk in self.chunks:
            values = dequantise(self.chunk_records(chunk), self.header.quant)
            for j, row in enumerate(values):
                yield chunk.first_frame + j, row

    def validate(self) -> list[str]:
        """Every problem found, one line each: bad CRCs, undecodable payloads, missing or excess frames.

        Opening the file already checked every chunk (CRC and payload), so this is the damage list in words."""
        return [str(d) for d in self.damage]


class _ChunkScan:
    """Walks the chunks after the header, collecting intact chunks and the damaged byte ranges between them."""

    def __init__(self, data: memoryview, frame_count: int | None):
        self.data, self.frame_count = data, frame_count
        self.chunks: list[ChunkInfo] = []
        self.damage: list[Damage] = []
        self.next_frame = 0
        self.pending: tuple[int, int, str] | None = None  # damaged bytes; their lost frames known later

    def settle(self, upto_frame: int | None) -> None:
        """Record the pending damage as losing frames [next_frame, upto_frame) (None: not known)."""
        if self.pending is None:
            return
        lo, hi, why = self.pending
        frames = None if upto_frame is None else range(self.next_frame, max(self.next_frame, upto_frame))
        self.damage.append(Damage(lo, hi, why, frames))
        self.next_frame = max(self.next_frame, upto_frame or 0)
        self.pending = None

    def damaged(self, lo: int, hi: int, why: str) -> None:
        self.pending = (lo, hi, why) if self.pending is None else (self.pending[0], hi, self.pending[2])

    def run(self, pos: int) -> None:
        size = len(self.data)
        while pos < size:
            try:
                chunk = read_chunk_at(self.data, pos)
            except ChunkDamage as why:
                resync, cut = _resync(self.data, pos + 1)
                if resync is not None:
                    self.damaged(pos, resync, str(why))
                    pos = resync
                    continue
                if why.truncated:
                    cut = pos
                if cut is not None and cut > pos:  # damage, then a last chunk that the end of the file cuts
                    self.damaged(pos, cut, str(why))
                    self.settle(_claimed_first_frame(self.data, cut, self.next_frame, self.frame_count))
                truncated = f"truncated at byte {size}: file ends inside the chunk at byte {cut}"
                self.damaged(pos if cut is None else cut, size, str(why) if cut is None else truncated)
                break
            self.accept(chunk)
            pos = chunk.end
        self.settle(self.frame_count)
        if self.frame_count is not None and self.next_frame < self.frame_count:
            self.damage.append(Damage(size, size, f"truncated at byte {size}: file ends after frame "
                                      f"{self.next_frame - 1}, the header promises {self.frame_count} frames",
                                      range(self.next_frame, self.frame_count)))

    def accept(self, chunk: ChunkInfo) -> None:
        beyond = self.frame_count is not None and chunk.frames.stop > self.frame_count
        if chunk.first_frame < self.next_frame or beyond:
            self.settle(None)
            limit = f"the header's {self.frame_count} frames" if beyond else "frames already read"
            self.damage.append(Damage(chunk.offset, chunk.end, f"chunk holds frames {chunk.first_frame}-"
                                      f"{chunk.frames.stop - 1}, overlapping {limit}"))
            return
        if self.pending is not None:
            self.settle(chunk.first_frame)
        elif chunk.first_frame > self.next_frame:
            self.damage.append(Damage(chunk.offset, chunk.offset, "frames missing before this chunk",
                                      range(self.next_frame, chunk.first_frame)))
        self.chunks.append(chunk)
        self.next_frame = chunk.frames.stop


def _scan_chunks(data: memoryview, start: int, frame_count: int | None) -> tuple[list[ChunkInfo], list[Damage]]:
    scan = _ChunkScan(data, frame_count)
    scan.run(start)
    return scan.chunks, scan.damage


def _resync(data: memoryview, pos: int) -> tuple[int | None, int | None]:
    """(offset of the next intact chunk at or after pos, or None; if None, where a chunk cut by EOF starts)."""
    raw = data.obj if isinstance(data.obj, bytes) else bytes(data)
    cut = None
    while (pos := raw.find(SYNC, pos)) != -1:
        try:
            read_chunk_at(data, pos)
            return pos, None
        except ChunkDamage as why:
            if why.truncated and cut is None:
                cut = pos
            pos += 1
    return None, cut


def _claimed_first_frame(data: memoryview, offset: int, next_frame: int, frame_count: int | None) -> int | None:
    """The first-frame field of a chunk cut by EOF (its CRC cannot be checked), if it is plausible."""
    if offset + CHUNK_HEAD_SIZE > len(data):
        return None
    claimed = int.from_bytes(data[offset + 8 : offset + 12], "little")
    return claimed if next_frame <= claimed <= (frame_count if frame_count is not None else claimed) else None
