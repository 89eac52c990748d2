"""`StvWriter`: stream frames into a .stv file chunk by chunk.

    with StvWriter("out.stv", header, profile="entropy", chunk_frames=250) as w:
        w.append(params)          # float (n, 35) -> quantised with header.quant; or int16 records as they are
    w.saturation                  # SaturationReport over everything appended (never silent)

Given a path, the writer fills a temporary file beside it, patches the frame count into the header (and its CRC)
when it closes, and renames it onto the path; on an exception the temporary file is removed and the path is left
untouched. Given an open binary stream it writes straight into it; the frame count stays "unknown" unless the
stream is seekable. `profile` may be changed between chunks (a file can mix profiles). `groups` are the `arith`
profile's facial regions (consecutive parameters; codec.bitstream.arith). A file with an `arith` chunk says minor
version 3 (a seekable output switched to `arith` after its header was written gets it patched when it closes).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import numpy as np

from codec.bitstream.arith import DEFAULT_GROUPS, check_groups
from codec.bitstream.chunk import encode_chunk
from codec.bitstream.header import MINOR_VERSION_1_3, StvHeader, encode_header, header_crc
from codec.bitstream.quant import SaturationReport, quantise
from codec.bitstream.schema import (
    CRC_SIZE,
    FRAME_COUNT_OFFSET,
    FRAME_COUNT_UNKNOWN,
    MAX_CHUNK_FRAMES,
    N_PARAMS,
    PROFILE_ARITH,
    PROFILE_CODES,
)
from codec.errors import BitstreamError


class StvWriter:
    def __init__(
        self,
        target: str | os.PathLike | BinaryIO,
        header: StvHeader,
        profile: str = "raw",
        chunk_frames: int = 250,
        groups: tuple[int, ...] = DEFAULT_GROUPS,
    ):
        if not 1 <= chunk_frames <= MAX_CHUNK_FRAMES:
            raise BitstreamError(f"chunk_frames must be in 1..{MAX_CHUNK_FRAMES}")
        self.profile = profile
        self.groups = check_groups(groups)
        if self._code_of(profile) == PROFILE_ARITH:
            header = replace(header, version=(header.version[0], max(header.version[1], MINOR_VERSION_1_3)))
        self.header = header
        self.chunk_frames = chunk_frames
        self.frames_written = 0
        self.saturation = SaturationReport(np.zeros(N_PARAMS, np.int64))
        self._pending: list[np.ndarray] = []
        self._pending_count = 0
        self._head = bytearray(encode_header(_with_unknown_count(header)))
        self._path: Path | None = None
        self._tmp: Path | None = None
        if isinstance(target, (str, os.PathLike)):
            self._path = Path(target)
            fd, tmp = tempfile.mkstemp(prefix=f".{self._path.name}.", suffix=".part", dir=self._path.parent)
            self._tmp = Path(tmp)
            os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the file ordinary permissions
            self._out: BinaryIO = os.fdopen(fd, "wb")
        else:
            self._out = target
        self._start = self._out.tell() if self._out.seekable() else 0
        self._out.write(self._head)
        self._closed = False

    @staticmethod
    def _code_of(profile: str) -> int:
        if profile not in PROFILE_CODES:
            raise BitstreamError(f"unknown profile {profile!r}; choose one of {sorted(PROFILE_CODES)}")
        return PROFILE_CODES[profile]

    def append(self, frames: np.ndarray) -> None:
        """Add frames: float parameters (n, 35) or (35,) are quantised; int16 records are written as they are."""
        if self._closed:
            raise BitstreamError("cannot append to a closed StvWriter")
        frames = np.asarray(frames)
        if frames.ndim == 1:
            frames = frames[None, :]
        if frames.ndim != 2 or frames.shape[1] != N_PARAMS:
            raise BitstreamError(f"frames must have shape (n, {N_PARAMS}), got {frames.shape}")
        if frames.dtype == np.int16:
            records = frames
        elif np.issubdtype(frames.dtype, np.integer):
            raise BitstreamError(f"integer frames must be int16 records, got {frames.dtype}")
        else:
            records, _, sat = quantise(frames, self.header.quant)
            self.saturation = SaturationReport(self.saturation.per_param + sat.per_param)
        self._pending.append(records)
        self._pending_count += len(records)
        while self._pending_count >= self.chunk_frames:
            self._write_chunk(self.chunk_frames)

    def flush(self) -> None:
        """Write whatever is buffered as a (possibly short) chunk, e.g. to bound latency when streaming."""
        if self._pending_count:
            self._write_chunk(self._pending_count)
        self._out.flush()

    def _write_chunk(self, count: int) -> None:
        buffered = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        chunk, rest = buffered[:count], buffered[count:]
        if self.frames_written + count >= FRAME_COUNT_UNKNOWN:
            raise BitstreamError(f"a .stv file holds fewer than {FRAME_COUNT_UNKNOWN} frames")
        code = self._code_of(self.profile)
        if code == PROFILE_ARITH and self._head[9] < MINOR_VERSION_1_3:
            self._head[9] = MINOR_VERSION_1_3  # reaches the file with the frame count, when it can be patched
        self._out.write(encode_chunk(chunk, self.frames_written, code, self.groups))
        self.frames_written += count
        self._pending = [rest] if len(rest) else []
        self._pending_count = len(rest)

    def close(self) -> None:
        """Write the last chunk, patch the frame count (seekable outputs), and publish the file atomically."""
        if self._closed:
            return
        self.flush()
        if self._tmp is not None or self._out.seekable():
            self._patch_frame_count()
        if self._tmp is not None:
            self._out.flush()
            os.fsync(self._out.fileno())
            self._out.close()
            os.replace(self._tmp, self._path)
            self._tmp = None
        self._closed = True

    def abort(self) -> None:
        """Give up: remove the temporary file (path mode); the target path is not touched."""
        self._closed = True
        if self._tmp is not None:
            self._out.close()
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def _patch_frame_count(self) -> None:
        head = self._head
        head[FRAME_COUNT_OFFSET : FRAME_COUNT_OFFSET + 4] = self.frames_written.to_bytes(4, "little")
        head[-CRC_SIZE:] = header_crc(bytes(head[:-CRC_SIZE]))
        end = self._out.tell()
        self._out.seek(self._start)
        self._out.write(head)
        self._out.seek(end)

    def __enter__(self) -> "StvWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _with_unknown_count(header: StvHeader) -> StvHeader:
    return replace(header, frame_count=None)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
