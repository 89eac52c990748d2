"""Video in and out through PyAV (FFmpeg bundled in its wheel).

Why PyAV and not OpenCV: on this platform opencv-python's FFmpeg backend cannot open an H.264 encoder (its wheel
carries no libx264; `VideoWriter(..., 'avc1')` fails), while PyAV's wheel ships libx264 and FFV1. PyAV also gives
the exact rational frame rate, the stream's frame count and the display-rotation side data of phone clips, which
OpenCV hides or rounds.

Conventions: frames are HxWx3 uint8 RGB, already turned upright when the file carries a display rotation (a
portrait phone clip stored as landscape + a 90° display matrix comes out portrait). Grayscale sources come out as
RGB with three equal channels. Reading streams one frame at a time: memory does not grow with clip length.
Frames come in presentation order, one per decoded picture; a variable-frame-rate file is read as its frames at
its average rate (the timestamps are not kept).
"""

from __future__ import annotations

import contextlib
import dataclasses
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from codec.cli.common import atomic_output
from codec.errors import InputError

# Container names by file suffix: the writer goes through a temporary file whose suffix FFmpeg cannot guess from.
_CONTAINER_BY_SUFFIX = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    width: int  # upright (after display rotation), as read_frames yields them
    height: int
    fps: Fraction
    frame_count: int
    codec: str
    rotation_deg: int = 0  # counter-clockwise display rotation stored in the file (0, 90, 180, 270)


@contextlib.contextmanager
def _open_video(path: str | Path) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: is a directory, not a video" if path.is_dir() else f"{path}: no such file")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable video ({_reason(exc)})") from exc
    try:
        if not container.streams.video:
            raise InputError(f"{path}: contains no video stream")
        yield container, container.streams.video[0]
    finally:
        container.close()


def _reason(exc: Exception) -> str:
    """FFmpeg's words for an error, without its errno and the file name ('invalid data found when ...')."""
    text = getattr(exc, "strerror", None) or str(exc) or "unknown error"
    return text[:1].lower() + text[1:]


def _display_rotation(stream: av.video.stream.VideoStream, first_frame: av.VideoFrame | None) -> int:
    """Counter-clockwise display rotation in degrees, a multiple of 90 (odd angles are not in real files)."""
    angle = first_frame.rotation if first_frame is not None else 0
    return int(round(angle / 90.0)) % 4 * 90


def _count_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """Count by demuxing (no decoding) when the container does not store the count (mkv, webm, y4m)."""
    container.seek(0)
    return sum(1 for packet in container.demux(stream) if packet.size > 0)


def probe(path: str | Path) -> VideoInfo:
    """Size, exact frame rate, frame count and codec of the first video stream. Raises InputError if unusable."""
    with _open_video(path) as (container, stream):
        first = _first_frame(container, stream, path)
        rotation = _display_rotation(stream, first)
        count = stream.frames or _count_frames(container, stream)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise InputError(f"{path}: the video stream states no frame rate")
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(width, height, Fraction(rate), int(count), stream.codec_context.name, rotation)


def _first_frame(container, stream, path) -> av.VideoFrame:
    try:
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError as exc:
        raise InputError(f"{path}: video data cannot be decoded ({_reason(exc)})") from exc
    raise InputError(f"{path}: the video has no frames")


def read_frames(path: str | Path, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Yield frames [start, stop) as upright HxWx3 uint8 RGB arrays, one at a time."""
    with _open_video(path) as (container, stream):
        stream.thread_type = "AUTO"
        index = 0
        try:
            for frame in container.decode(stream):
                if stop is not None and index >= stop:
                    return
                if index >= start:
                    quarter_turns = _display_rotation(stream, frame) // 90
                    image = frame.to_ndarray(format="rgb24")
                    yield np.ascontiguousarray(np.rot90(image, quarter_turns)) if quarter_turns else image
                index += 1
        except av.error.FFmpegError as exc:
            raise InputError(f"{path}: video data cannot be decoded after frame {index} ({_reason(exc)})") from exc
        if index == 0:
            raise InputError(f"{path}: the video has no frames")


class VideoWriter:
    """Write RGB frames to a video file, atomically (temporary file renamed on a clean exit).

    lossless=False: H.264 (libx264, CRF 18, yuv420p; width and height must be even), for .mp4/.mov/.mkv.
    lossless=True: FFV1 storing RGB exactly (pixel format bgr0), in .mkv: bit-exact round trips for tests.
    `display_rotation` (degrees counter-clockwise) stores a display matrix, as phones do for portrait clips.
    """

    def __init__(self, path: str | Path, fps: Fraction, size: tuple[int, int], lossless: bool = False,
                 display_rotation: int = 0):
        self.path = Path(path)
        self.fps = Fraction(fps)
        self.width, self.height = size
        self.lossless = lossless
        self.display_rotation = display_rotation
        suffix = self.path.suffix.lower()
        if suffix not in _CONTAINER_BY_SUFFIX:
            raise InputError(f"{self.path}: unsupported container {suffix!r}; "
                             f"use one of {sorted(_CONTAINER_BY_SUFFIX)}")
        if lossless and suffix != ".mkv":
            raise InputError(f"{self.path}: lossless (FFV1) output needs a .mkv file")
        if not lossless and (self.width % 2 or self.height % 2):
            raise InputError(f"H.264 yuv420p needs even width and height, got {self.width}x{self.height}")
        self._format = _CONTAINER_BY_SUFFIX[suffix]
        self._atomic = None
        self._container = None
        self._stream = None
        self._count = 0

    def __enter__(self) -> "VideoWriter":
        self._atomic = atomic_output(self.path)
        tmp_path = self._atomic.__enter__()
        self._container = av.open(str(tmp_path), "w", format=self._format)
        if self.lossless:
            stream = self._container.add_stream("ffv1", rate=self.fps)
            stream.pix_fmt = "bgr0"
        else:
            stream = self._container.add_stream("libx264", rate=self.fps, options={"crf": "18"})
            stream.pix_fmt = "yuv420p"
        stream.width, stream.height = self.width, self.height
        stream.time_base = 1 / self.fps
        if self.display_rotation:
            stream.set_display_rotation(self.display_rotation)
        self._stream = stream
        return self

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"expected a {self.height}x{self.width}x3 uint8 frame, got {frame.shape} {frame.dtype}")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self._count
        self._container.mux(self._stream.encode(video_frame))
        self._count += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                self._container.mux(self._stream.encode(None))  # flush delayed frames
            self._container.close()
        finally:
            self._atomic.__exit__(exc_type, exc, tb)
        return False


def write_video(path: str | Path, frames, fps: Fraction, lossless: bool = False) -> int:
    """Write an iterable of equally sized RGB frames; returns how many were written."""
    writer = None
    count = 0
    with contextlib.ExitStack() as stack:
        for frame in frames:
            if writer is None:
                writer = stack.enter_context(VideoWriter(path, fps, (frame.shape[1], frame.shape[0]), lossless))
            writer.write(frame)
            count += 1
    if writer is None:
        raise InputError(f"{path}: no frames to write")
    return count
