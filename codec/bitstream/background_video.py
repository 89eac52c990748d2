"""The scene behind the face as a low-rate video: the `bgvd` header extension (format_spec.md 1.3).

`stvenc --background video[:KBITS]` codes the whole source frames with AV1 (SVT-AV1 through PyAV) at a low rate;
the decoder pastes each frame's rendered face over the matching background frame, so body, hands and everything
else the 35 numbers do not carry keep their motion. The data is an IVF file (the plain container of the AV1 and
VP9 reference tools: a 32-byte head, then per frame a 12-byte head and the frame's bytes), so `stvinfo` and a
validating reader check it without any library: the head's codec, size and frame count, and that the frames fill
the data exactly. Only a decoder decodes pixels (dav1d through PyAV), one frame at a time, refusing a frame of
another size than the head's (format_spec.md §9: a picture of at most MAX_BACKGROUND_PIXELS).
"""

from __future__ import annotations

import fractions
import os
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from codec.bitstream.background import MAX_BACKGROUND_PIXELS, parsed_for_source, summary_of
from codec.errors import BitstreamError, StvError

IVF_HEAD = struct.Struct("<4sHH4sHHIII4x")  # signature, version, head size, fourcc, width, height, rate, scale, n
IVF_FRAME_HEAD = struct.Struct("<IQ")  # frame size, pts
IVF_SIGNATURE = b"DKIF"
AV1_FOURCC = b"AV01"
MAX_VIDEO_FRAMES = 1 << 22  # as many as `plac` can place (codec.bitstream.placement.MAX_PLACED_FRAMES)
MIN_CODED_SIDE = 64  # SVT-AV1 refuses smaller pictures: the writer pads a smaller source up to it
DEFAULT_KBITS = 100  # `--background video` without a rate (see README "The whole picture" for what it buys)
ENCODER = "libsvtav1"
ENCODER_PRESET = "10"  # SVT-AV1's fast end: 1280x720 codes at tens of frames/s on one core here
DECODER = "libdav1d"


@dataclass(frozen=True)
class VideoHead:
    width: int  # the coded picture (at least the source's; the decoder uses its top-left source-sized part)
    height: int
    rate: int  # frames per second = rate / scale (the stream's own rate: information only)
    scale: int
    count: int  # frames, all present (parse_video walked them)

    def __len__(self) -> int:
        return self.count


def parse_video(data: bytes) -> VideoHead:
    """The IVF head, after walking every frame's 12-byte head; BitstreamError (one line, what is wrong) if
    malformed. The walk keeps nothing per frame (format_spec.md §9: a claim of millions of frames allocates
    nothing), so it is bounded by the data's size in time and by nothing in memory."""
    if len(data) < IVF_HEAD.size:
        raise BitstreamError(f"is {len(data)} bytes, shorter than an IVF head ({IVF_HEAD.size})")
    signature, version, head_size, fourcc, width, height, rate, scale, count = IVF_HEAD.unpack_from(data)
    if signature != IVF_SIGNATURE or version != 0 or head_size != IVF_HEAD.size:
        raise BitstreamError("does not start with an IVF head (DKIF, version 0, 32 bytes)")
    if fourcc != AV1_FOURCC:
        raise BitstreamError(f"holds codec {fourcc.decode('latin-1')!r}, not AV1 ('AV01')")
    if width == 0 or height == 0 or width * height > MAX_BACKGROUND_PIXELS:
        raise BitstreamError(f"holds {width}x{height} pictures, not 1 to {MAX_BACKGROUND_PIXELS} pixels")
    if count > MAX_VIDEO_FRAMES:
        raise BitstreamError(f"declares {count} frames, more than {MAX_VIDEO_FRAMES}")
    walked, end = 0, IVF_HEAD.size
    for offset, size in _frames(data, count):
        walked, end = walked + 1, offset + size
    if walked != count or end != len(data):
        raise BitstreamError(f"declares {count} frames, but its data holds {walked} and {len(data) - end} more bytes")
    return VideoHead(width, height, rate, scale, count)


def _frames(data: bytes, count: int) -> Iterator[tuple[int, int]]:
    """(offset, size) of each frame's bytes, up to `count` frames or the end of the data; BitstreamError for a
    frame head cut by the end, or a frame of 0 bytes or more bytes than are left."""
    offset, index = IVF_HEAD.size, 0
    while offset < len(data) and index < count:
        if offset + IVF_FRAME_HEAD.size > len(data):
            raise BitstreamError(f"frame {index}'s head is cut by the end of the data")
        size, _ = IVF_FRAME_HEAD.unpack_from(data, offset)
        offset += IVF_FRAME_HEAD.size
        if size == 0 or offset + size > len(data):
            raise BitstreamError(f"frame {index} declares {size} bytes, {len(data) - offset} are left")
        yield offset, size
        offset, index = offset + size, index + 1


def background_video_problem(data: bytes, size: tuple[int, int] | None, frame_count: int | None) -> str | None:
    """What is wrong with a `bgvd` extension's data, or None. `size` (width, height) is the source picture's from
    `plac` (None: no usable `plac`); `frame_count` the stream's (None: unknown), which the video should match."""
    head, problem = parsed_for_source(parse_video, data, size)
    if problem is not None:
        return problem
    if head.width < size[0] or head.height < size[1]:
        return f"holds {head.width}x{head.height} pictures, smaller than the {size[0]}x{size[1]} source"
    if frame_count is not None and len(head) != frame_count:
        return f"holds {len(head)} frames, the stream {frame_count}"
    return None


def background_video_summary(data: bytes) -> str:
    return summary_of(parse_video, data,
                      lambda head: f"video av1 {head.width}x{head.height}, {len(head)} frames, {len(data)} bytes")


def background_video_bytes(data: bytes) -> Iterator[bytes]:
    """Each frame's coded bytes, in order (the data checked first: BitstreamError if malformed)."""
    for offset, size in _frames(data, parse_video(data).count):
        yield bytes(data[offset : offset + size])


# --- pixels (PyAV, imported only here: stvinfo and the reader never decode) ---------------------------------

def encode_background_video(frames: Iterable[np.ndarray], fps: fractions.Fraction, kbits: int) -> bytes:
    """[H, W, 3] uint8 RGB frames -> the `bgvd` extension's data, AV1 at about `kbits` kbit/s. Deterministic (one
    encoder thread: SVT-AV1's threads otherwise change the bytes from run to run)."""
    encoder = BackgroundVideoEncoder(fps, kbits)
    for frame in frames:
        encoder.add(frame)
    return encoder.finish()


class BackgroundVideoEncoder:
    """Frames in, one at a time (the encoder streams: nothing holds the clip), the IVF bytes out at the end."""

    def __init__(self, fps: fractions.Fraction, kbits: int):
        if kbits < 1:
            raise ValueError(f"background video rate must be at least 1 kbit/s, got {kbits}")
        self.fps, self.kbits = fractions.Fraction(fps), kbits
        self.context = None
        self.size: tuple[int, int] | None = None  # (width, height) of the source frames
        self.packets: list[bytes] = []
        self.count = 0

    def add(self, frame: np.ndarray) -> None:
        import av

        height, width = frame.shape[:2]
        if self.context is None:
            self.size = (width, height)
            self.context = _open_encoder(*coded_size(width, height), self.fps, self.kbits)
        elif (width, height) != self.size:
            raise ValueError(f"background frame {self.count} is {width}x{height}, the first was "
                             f"{self.size[0]}x{self.size[1]}")
        picture = av.VideoFrame.from_ndarray(_padded(frame, self.context.width, self.context.height), format="rgb24")
        picture.pts = self.count
        self.count += 1
        with _scheduling_kept():
            self.packets += [bytes(p) for p in self.context.encode(picture)]

    def finish(self) -> bytes:
        if self.context is None:
            raise ValueError("no background frame to code")
        context, self.context = self.context, None  # freed on return, with its threads
        with _scheduling_kept():
            self.packets += [bytes(p) for p in context.encode(None)]
        if len(self.packets) != self.count:  # the layout promises one temporal unit per frame
            raise StvError(f"the AV1 encoder gave {len(self.packets)} coded frames for {self.count} frames")
        return ivf_file(self.packets, context.width, context.height, self.fps)


@contextmanager
def _scheduling_kept() -> Iterator[None]:
    """Run SVT-AV1 and put the calling thread's scheduling back as it was. Run as root (containers), SVT-AV1
    switches the thread that feeds it to real-time scheduling (SCHED_FIFO, priority 99), and everything the thread
    does afterwards inherits that: the rest of the encode, torch's worker threads, the processes it starts. Two
    stv-batch workers started from such a thread spin-waited on each other at FIFO 99, six times slower."""
    if not hasattr(os, "sched_getscheduler"):  # not Linux
        yield
        return
    policy, priority = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    try:
        yield
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) != (policy, priority):
            os.sched_setscheduler(0, policy, os.sched_param(priority))


def coded_size(width: int, height: int) -> tuple[int, int]:
    return max(width, MIN_CODED_SIDE), max(height, MIN_CODED_SIDE)


def _padded(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """The frame grown to width x height by repeating its right column and bottom row (what the decoder drops)."""
    rows, cols = height - frame.shape[0], width - frame.shape[1]
    frame = np.ascontiguousarray(frame, np.uint8)
    return frame if rows == cols == 0 else np.pad(frame, ((0, rows), (0, cols), (0, 0)), mode="edge")


def _open_encoder(width: int, height: int, fps: fractions.Fraction, kbits: int):
    import av

    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner and settings to stderr otherwise
    try:
        context = av.CodecContext.create(ENCODER, "w")
    except (av.FFmpegError, ValueError):
        raise StvError(f"--background video needs PyAV's {ENCODER} (AV1) encoder, which this PyAV lacks; use "
                       "--background still") from None
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    context.time_base = fractions.Fraction(fps.denominator, fps.numerator)
    context.framerate = fps
    context.bit_rate = kbits * 1000
    context.options = {"preset": ENCODER_PRESET, "svtav1-params": "lp=1"}
    return context


def ivf_file(packets: list[bytes], width: int, height: int, fps: fractions.Fraction) -> bytes:
    """The IVF container around AV1 temporal units (one per shown frame; pts = frame index)."""
    head = IVF_HEAD.pack(IVF_SIGNATURE, 0, IVF_HEAD.size, AV1_FOURCC, width, height, fps.numerator,
                         fps.denominator, len(packets))
    return head + b"".join(IVF_FRAME_HEAD.pack(len(p), k) + p for k, p in enumerate(packets))


class BackgroundVideoDecoder:
    """The `bgvd` frames as [H, W, 3] uint8 RGB (W x H the source's: the coded picture's top-left), decoded in
    order as they are asked for. A frame that does not decode, or decodes to another size than the head says,
    ends the video there: `error` says where, and every later frame is None (the caller conceals them).

    The AV1 decoder runs on the calling thread (no worker threads) and its generator holds no reference back to
    this object, so dropping the decoder frees it at once: a decoder left for the garbage collector, with threads
    of its own, would hang a forked child process that collects it (the threads do not exist there)."""

    def __init__(self, data: bytes, size: tuple[int, int]):
        self.data, self.size = data, size
        self.head = parse_video(data)
        self._errors: list[str] = []  # what broke the video, shared with the decoding generator
        self._restart()

    def __len__(self) -> int:
        return len(self.head)

    @property
    def error(self) -> str | None:
        return self._errors[0] if self._errors else None

    def frame(self, index: int) -> np.ndarray | None:
        """Background frame `index`, or None when the video does not reach it or broke before it."""
        if index < self._next - 1:  # asked for an earlier frame (a concealment seed): decode again from the start
            self._restart()
        while self._next <= index and self._current is not None:
            self._current = next(self._frames, None)
            self._next += 1
        return self._current if self._next - 1 == index else None

    def _restart(self) -> None:
        self._frames = _decoded_pictures(self.data, self.head, self.size, self._errors)
        self._current = next(self._frames, None)
        self._next = 1


def _decoded_pictures(data: bytes, head: VideoHead, size: tuple[int, int], errors: list[str]) -> Iterator[np.ndarray]:
    """Each frame's picture, one temporal unit in, one picture out (dav1d without frame delay, so a unit that
    gives no picture is caught at once and later frames never slide into its place); on failure, what went wrong
    is appended to `errors` and the pictures end."""
    import av

    try:
        context = av.CodecContext.create(DECODER, "r")
    except (av.FFmpegError, ValueError):
        errors.append(f"cannot be decoded here: this PyAV has no {DECODER} decoder")
        return
    context.thread_count = 1
    # dav1d's own bound on a picture's size (the AV1 sequence header could claim more than the IVF head)
    context.options = {"max_pixels": str(head.width * head.height), "max_frame_delay": "1"}
    width, height = size
    for index, coded in enumerate(background_video_bytes(data)):
        try:
            pictures = context.decode(av.Packet(coded))
        except (av.FFmpegError, ValueError) as exc:
            errors.append(f"frame {index} does not decode ({type(exc).__name__})")
            return
        if len(pictures) != 1 or (pictures[0].width, pictures[0].height) != (head.width, head.height):
            shapes = ", ".join(f"{p.width}x{p.height}" for p in pictures) or "no picture"
            errors.append(f"frame {index} decodes to {shapes}, not one {head.width}x{head.height} picture")
            return
        yield pictures[0].to_ndarray(format="rgb24")[:height, :width]
