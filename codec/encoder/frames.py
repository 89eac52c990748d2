"""The aligned clip as the encoder's stages read it: a window of frames at a time, never the whole clip as floats.

At the official generator's 1024², one aligned frame is 12.6 MB as float32: a minute of video (1800 frames) is
23 GB. So the aligned crops are kept as uint8 (3 MB a frame at 1024²) in a file, written one frame at a time as
alignment yields them, and each stage asks for the frames it needs as `window(start, stop)`: a float tensor in
[-1, 1] on the encoder's device, built from the file's bytes and dropped after use.

The file is read with plain reads, not through a memory map: the pages of a map that have been read stay mapped
(and count in the process's resident memory) until it is unmapped, so reading a whole clip through one map grows
the resident set with the clip after all.

Streaming alone does not keep the resident set flat under glibc: each decoded source picture (0.7 MB at 480x480,
6 MB at 1080p) is freed a moment after it is made, and glibc then raises its mmap threshold above that size, so
the next pictures come from the heap, between the small tensors that live for the whole clip (the region masks),
which the heap cannot give back. Aligning d6's 1008 frames grew the process by 0.64 MB a frame that way.
`fixed_mmap_threshold` pins the threshold, so large blocks keep going to the system and back.
"""

from __future__ import annotations

import ctypes
import platform
import sys
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import torch

from codec.decoder.render import apply_roll


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter: setting it also turns its dynamic raising off
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value


def fixed_mmap_threshold() -> bool:
    """Pin glibc's mmap threshold for this process (see the module docstring); False where the C library is not
    glibc (macOS, musl) or refuses."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


class FrameSource(Protocol):
    """N aligned frames; `window(a, b)` gives frames [a, b) as a float tensor [b - a, 3, R, R] in [-1, 1]."""

    def __len__(self) -> int: ...

    def window(self, start: int, stop: int) -> torch.Tensor: ...


def windows(count: int, size: int) -> Iterator[tuple[int, int]]:
    """[start, stop) of consecutive windows of at most `size` frames covering `count` frames."""
    if size < 1:
        raise ValueError(f"a window holds at least one frame, got {size}")
    for start in range(0, count, size):
        yield start, min(start + size, count)


def uint8_to_float(images: np.ndarray) -> torch.Tensor:
    """[N, R, R, 3] uint8 RGB -> [N, 3, R, R] float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


class TensorFrames:
    """A clip already held as one tensor (tests, tools, short clips): windows are slices of it."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def window(self, start: int, stop: int) -> torch.Tensor:
        return self.images[start:stop]


class AlignedFrames:
    """uint8 RGB frames [N, R, R, 3] in a file, appended one at a time, read back a window at a time (as floats
    on `device`). The file belongs to the caller (a work dir or a temporary dir)."""

    def __init__(self, path: Path, size: int, device: str | torch.device = "cpu", frames: int | None = None):
        """A new file, filled by `append`; or with `frames`, the finished file of an earlier run holding that
        many frames, read back as it is (a resumed encode)."""
        self.path = Path(path)
        self.size = size
        self.device = device
        self.frame_bytes = size * size * 3
        if frames is not None:
            self._writer, self._count = None, frames
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = open(self.path, "wb")  # noqa: SIM115 (closed by `finish`)
        self._count = 0

    def append(self, image: np.ndarray) -> None:
        if image.shape != (self.size, self.size, 3) or image.dtype != np.uint8:
            raise ValueError(f"expected a {self.size}x{self.size}x3 uint8 frame, got {image.shape} {image.dtype}")
        self._writer.write(np.ascontiguousarray(image).tobytes())
        self._count += 1

    def finish(self) -> "AlignedFrames":
        """No more frames: flush them to the file (windows read what is on disk)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return self

    def __len__(self) -> int:
        return self._count

    def uint8_window(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) as stored: [n, R, R, 3] uint8."""
        if not 0 <= start <= stop <= self._count:
            raise IndexError(f"window [{start}, {stop}) outside the {self._count} frames stored")
        if self._writer is not None:
            self._writer.flush()
        with open(self.path, "rb") as f:
            f.seek(start * self.frame_bytes)
            data = np.fromfile(f, np.uint8, (stop - start) * self.frame_bytes)
        return data.reshape(stop - start, self.size, self.size, 3)

    def window(self, start: int, stop: int) -> torch.Tensor:
        return uint8_to_float(self.uint8_window(start, stop)).to(self.device)

    def remove(self) -> None:
        self.finish()
        self.path.unlink(missing_ok=True)


class FrameRange:
    """Frames [start, stop) of another source, numbered from 0 (what a stage run on one window of a clip reads)."""

    def __init__(self, source: FrameSource, start: int, stop: int):
        self.source, self.start, self.stop = source, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def window(self, start: int, stop: int) -> torch.Tensor:
        return self.source.window(self.start + start, self.start + stop)


def checkpoint_window(window: int, batch: int) -> int:
    """Frames per resumable window of a stage that works in batches of `batch` frames: whole batches (at least
    one), so that the batches, and so the results, are those of an uninterrupted run."""
    return max(1, window // batch) * batch


class RolledFrames:
    """Another source's frames, each turned by its own angle (degrees, the decoder's `apply_roll` convention):
    the upright view of rolled crops, computed per window rather than stored twice."""

    def __init__(self, source: FrameSource, roll_deg: np.ndarray):
        self.source, self.roll_deg = source, np.asarray(roll_deg, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.source)

    def window(self, start: int, stop: int) -> torch.Tensor:
        images = self.source.window(start, stop)
        angles = torch.tensor(self.roll_deg[start:stop], dtype=torch.float32, device=images.device)
        return apply_roll(images, angles)


def as_frame_source(frames: FrameSource | torch.Tensor) -> FrameSource:
    """Stages take a FrameSource; a tensor of the whole clip is wrapped (callers that hold one)."""
    return TensorFrames(frames) if isinstance(frames, torch.Tensor) else frames


def default_window(frame_float_bytes: int, device: str | torch.device, share: float = 0.125,
                   most: int = 64) -> int:
    """Frames per window from the memory free on `device`: `share` of it for one window of float frames, at
    least 1 and at most `most` (beyond the stages' batches a bigger window buys nothing)."""
    free = _free_bytes(torch.device(device))
    return int(max(1, min(most, share * free // max(frame_float_bytes, 1))))


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:  # MemAvailable counts the page cache the kernel would give back; "free" pages alone undercount
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):  # not Linux: assume a small machine
        return 2 << 30
