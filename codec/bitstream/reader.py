"""`StvReader`: random access, iteration and recovery over a .stv file.

    r = StvReader("in.stv")       # or StvReader(raw_bytes)
    r.header                      # StvHeader
    len(r)                        # N, the frames the file presents (format_spec.md §9a): never more than its bytes
                                  # back, even when the header's count promises more (a truncation)
    r[i]                          # 35 dequantised float64 values of frame i (order: PARAM_NAMES)
    r.records(a, b)               # int16 records (b - a, 35)
    for values in r: ...          # frames in order; BitstreamError at the first frame that is not available
    r.iter_available()            # (index, values) of every intact frame, skipping damaged ranges
    r.damage                      # list[Damage]: damaged byte ranges, why, and which frames they cost

Opening reads the header (fatal if damaged: without it no frame can be decoded), then walks the chunks checking
every CRC and that every payload decodes. A chunk that fails is recorded as damage and the reader resyncs on the
next sync word that starts an intact chunk. A file cut short keeps every whole chunk before the cut; asking for a
later frame raises BitstreamError naming the byte offset where the file ends. Memory: the file's bytes plus one
decoded chunk; nothing is sized by a count a field claims (len(r) is bounded by the bytes, see __len__).
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from codec.bitstream.chunk import ChunkDamage, ChunkInfo, decode_payload, read_chunk_at
from codec.bitstream.crc import SliceCrc
from codec.bitstream.header import decode_header, extension_problems
from codec.bitstream.quant import dequantise
from codec.bitstream.schema import CHUNK_HEAD_SIZE, CHUNK_OVERHEAD, N_PARAMS, SYNC
from codec.errors import BitstreamError


@dataclass(frozen=True)
class Damage:
    """Bytes [start, end) that could not be used, why, and the frames lost with them.

    `frames` None: no frames are known to be lost with it, unless `unknown_from` is set: frames from that index
    on are lost, how many is unknown (a file of unknown frame count that ends in damage)."""

    start: int
    end: int
    reason: str
    frames: range | None = None
    unknown_from: int | None = None

    def __str__(self) -> str:
        """format_spec.md §10 "Messages": "bytes A-B" inclusive, "at byte A" for an empty range."""
        where = f"bytes {self.start}-{self.end - 1}" if self.end > self.start else f"at byte {self.start}"
        lost = ""
        if self.frames is not None and len(self.frames) == 1:
            lost = f" (frame {self.frames.start} lost)"
        elif self.frames is not None and len(self.frames):
            lost = f" (frames {self.frames.start}-{self.frames.stop - 1} lost)"
        elif self.unknown_from is not None:
            lost = f" (frames from {self.unknown_from} on lost, how many is unknown)"
        return f"{where}: {self.reason}{lost}"

    def loses(self, frame: int) -> bool:
        if self.frames is not None:
            return frame in self.frames
        return self.unknown_from is not None and frame >= self.unknown_from


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
        scan = _scan_chunks(memoryview(self._data), self.header_size, self.header.frame_count)
        self.chunks, self.damage, self._presented = scan.chunks, scan.damage, scan.presented
        self._firsts = [c.first_frame for c in self.chunks]
        self._cached: tuple[ChunkInfo, np.ndarray] | None = None

    @property
    def file_size(self) -> int:
        return len(self._data)

    def __len__(self) -> int:
        """N, the frames the file presents: the header's count when every chunk is there; with lost chunks at the
        end, only as many as the bytes after the last intact chunk could hold (none when the file ends on a chunk
        boundary); with an unknown count, up to the last intact chunk. Lost frames below N are for a decoder to
        conceal; frames the header promises past N are a truncation, reported in `damage`."""
        return self._presented

    @property
    def truncated(self) -> range:
        """Frames the header promises past N (empty when none, and always for an unknown count)."""
        count = self.header.frame_count
        return range(len(self), len(self) if count is None else count)

    def chunk_of(self, frame: int) -> ChunkInfo:
        """The intact chunk holding `frame`; BitstreamError naming the damage if none does."""
        k = bisect.bisect_right(self._firsts, frame) - 1
        if k >= 0 and frame in self.chunks[k].frames:
            return self.chunks[k]
        raise BitstreamError(f"{self.name}: frame {frame} is not available: {self._why_missing(frame)}")

    def _why_missing(self, frame: int) -> str:
        known = [d for d in self.damage if d.loses(frame)]
        return str(known[0]) if known else "no chunk holds it"

    def _check_range(self, start: int, stop: int, shown: object) -> None:
        """IndexError outside 0..N, except that a frame the header promises past N names the truncation."""
        if 0 <= start <= stop <= len(self):
            return
        count = self.header.frame_count
        missing = max(start, len(self))
        if 0 <= start <= stop and (count is None or stop <= count) and self._why_missing(missing) != "no chunk holds it":
            raise BitstreamError(f"{self.name}: frame {missing} is not available: {self._why_missing(missing)}")
        raise IndexError(f"frame {shown} outside 0..{len(self) - 1}")

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
        self._check_range(start, stop, f"range {start}:{stop}")
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
        i = index + len(self) if index < 0 else index
        self._check_range(i, i + 1, index)
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
        """Every problem found, one line each: a malformed known extension, bad CRCs, undecodable payloads, missing
        or excess frames, a truncation.

        Opening the file already checked every chunk (CRC and payload), so this is mostly the damage list in words."""
        return extension_problems(self.header) + [str(d) for d in self.damage]


class _ChunkScan:
    """Walks the chunks after the header (format_spec.md §10): the intact chunks it accepts, the damage around
    them, and N, the number of frames the file presents."""

    def __init__(self, data: memoryview, start: int, frame_count: int | None):
        self.data, self.frame_count = data, frame_count
        self.chunks: list[ChunkInfo] = []  # accepted chunks of a profile this reader decodes
        self.damage: list[Damage] = []
        self.next_frame = 0  # the frame after the last accepted chunk
        self.last_end = start  # the byte after the last accepted chunk (the header's end before any)
        self.largest = 0  # the largest record count of an accepted chunk of a profile this reader decodes
        self.open: list[int] = []  # damage entries since the last accepted chunk that lose its following frames
        self.split: int | None = None  # first frame claimed by the head of a chunk that the end of the file cuts
        self.presented = 0
        self.slice_crc: SliceCrc | None = None

    def run(self, pos: int) -> None:
        size = len(self.data)
        while pos < size:
            try:
                chunk = read_chunk_at(self.data, pos)
            except ChunkDamage as why:
                if self.slice_crc is None:  # built at the first damage: intact files never need it
                    self.slice_crc = SliceCrc(self.data)
                resync, cut = _resync(self.data, pos + 1, self.slice_crc)
                if resync is not None:
                    self.add(Damage(pos, resync, str(why)), loses_frames=True)
                    pos = resync
                    continue
                self.tail(pos, pos if why.truncated else cut, str(why))
                break
            self.place(chunk)
            pos = chunk.end
        self.finish()

    def add(self, damage: Damage, loses_frames: bool = False) -> None:
        if loses_frames:
            self.open.append(len(self.damage))
        self.damage.append(damage)

    def lose(self, k: int, frames: range | None, unknown_from: int | None = None) -> None:
        self.damage[k] = replace(self.damage[k], frames=frames, unknown_from=unknown_from)

    def place(self, chunk: ChunkInfo) -> None:
        first, stop, e = chunk.first_frame, chunk.frames.stop, self.next_frame
        # The lost bytes could have held one chunk per 20 bytes plus one without a trace, each of at most as many
        # frames as the largest decodable chunk seen, this one included (an unknown profile's count proves nothing:
        # with 65535 here, 6 KB of damage let a fuzz input jump 16.5 M frames ahead).
        largest = max(self.largest, chunk.count if chunk.known else 0)
        room = largest * (1 + (chunk.offset - self.last_end) // CHUNK_OVERHEAD)
        said = f"chunk holds frames {first}-{stop - 1}"
        if first < e:
            self.add(Damage(chunk.offset, chunk.end, f"{said}, overlapping frames already read (up to {e - 1})"))
            return
        if self.frame_count is not None and stop > self.frame_count:
            self.add(Damage(chunk.offset, chunk.end, f"{said}, beyond the header's {self.frame_count} frames"))
            return
        if first - e > room:
            self.add(Damage(chunk.offset, chunk.end, f"{said}, but at most {room} frames can be missing before it "
                            f"({chunk.offset - self.last_end} bytes since the last chunk accepted)"))
            return
        if self.open:  # the first damaged range of the gap takes the frames lost in it
            self.lose(self.open[0], range(e, first))
        elif first > e:
            self.damage.append(Damage(chunk.offset, chunk.offset, "frames missing before this chunk", range(e, first)))
        self.open = []
        if chunk.known:
            self.chunks.append(chunk)
            # only a decodable chunk's count says what bytes can hold: one of an unknown profile may claim 65535
            # frames in 20 bytes (a 6 KB fuzz input presented 16.5 M frames through such counts)
            self.largest = max(self.largest, chunk.count)
        else:
            self.damage.append(Damage(chunk.offset, chunk.end, f"chunk profile {chunk.profile} is not known to this "
                                      "reader, stepped over", chunk.frames))
        self.next_frame, self.last_end = stop, chunk.end

    def tail(self, pos: int, cut: int | None, why: str) -> None:
        """No intact chunk starts after `pos`: damaged bytes [pos, cut), then a chunk that the end of the file cuts
        at `cut` (None: the damage runs to the end of the file)."""
        size = len(self.data)
        if cut is None:
            self.add(Damage(pos, size, why), loses_frames=True)
            return
        if cut > pos:
            self.add(Damage(pos, cut, why), loses_frames=True)
            self.split = _claimed_first_frame(self.data, cut, self.next_frame, self.frame_count)
        self.add(Damage(cut, size, f"truncated at byte {size}: the file ends inside the chunk at byte {cut}"),
                 loses_frames=True)

    def finish(self) -> None:
        size, e, count = len(self.data), self.next_frame, self.frame_count
        if not self.open and count is not None and e < count:
            after = f"after frame {e - 1}" if e else "before frame 0"
            self.add(Damage(size, size, f"truncated at byte {size}: the file ends {after}, the header promises "
                            f"{count} frames"), loses_frames=True)
        if self.open:
            lost_from = e
            if self.split is not None and len(self.open) == 2:  # the cut chunk's unchecked head splits the report
                self.lose(self.open[0], range(e, self.split))
                lost_from = self.split
            if count is None:
                self.lose(self.open[-1], None, unknown_from=lost_from)
            else:
                self.lose(self.open[-1], range(lost_from, count))
        # N: past the last accepted chunk, frames are presented (for a decoder to conceal) only with a known count
        # and only as far as the bytes after that chunk could hold chunks of the largest count accepted.
        behind = size - self.last_end
        if count is None or behind == 0:
            self.presented = e
        else:
            self.presented = min(count, e + self.largest * (1 + behind // CHUNK_OVERHEAD))


def _scan_chunks(data: memoryview, start: int, frame_count: int | None) -> _ChunkScan:
    scan = _ChunkScan(data, start, frame_count)
    scan.run(start)
    return scan


def _resync(data: memoryview, pos: int, slice_crc: SliceCrc) -> tuple[int | None, int | None]:
    """(offset of the next intact chunk at or after pos, or None; if None, where a chunk cut by EOF starts).

    Linear in the bytes searched, whatever the candidates claim: each one's CRC comes from `slice_crc`."""
    raw = data.obj if isinstance(data.obj, bytes) else bytes(data)
    cut = None
    while (pos := raw.find(SYNC, pos)) != -1:
        try:
            read_chunk_at(data, pos, slice_crc)
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
