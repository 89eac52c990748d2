"""The scene behind the face: the `bgnd` header extension (format_spec.md 1.2).

One still picture of the source's size, coded once by a standard still-image codec (WebP or AVIF, through Pillow),
over which a decoder pastes each frame's face (`plac`). Layout: u8 kind (1: still picture), then the picture's
file bytes. A reader checks what the file's own header says (format, size) without decoding its pixels, so a
small extension can never make it allocate a huge picture (format_spec.md §9: at most MAX_BACKGROUND_PIXELS).
"""

from __future__ import annotations

import io

import numpy as np

from codec.bitstream.header import EXT_BACKGROUND  # noqa: F401 - the tag, for callers of this module
from codec.errors import BitstreamError

KIND_STILL = 1
STILL_FORMATS = {"WEBP": "webp", "AVIF": "avif"}  # Pillow's format name -> the name users give
MAX_BACKGROUND_PIXELS = 1 << 26  # 67 M pixels (8K UHD is 33 M): 201 MB decoded at most


def encode_background(picture: np.ndarray, quality: int = 80, codec: str = "webp") -> bytes:
    """[H, W, 3] uint8 RGB -> the `bgnd` extension's data (a lossy still at `quality` 0..100)."""
    from PIL import Image

    formats = {v: k for k, v in STILL_FORMATS.items()}
    if codec not in formats:
        raise ValueError(f"unknown still codec {codec!r}; use {' or '.join(formats)}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(picture, np.uint8)).save(buffer, formats[codec], quality=int(quality))
    return bytes([KIND_STILL]) + buffer.getvalue()


def _opened(data: bytes):
    """The still picture opened (header read, pixels not decoded); BitstreamError saying what is wrong."""
    from PIL import Image, UnidentifiedImageError

    if len(data) < 1 or data[0] != KIND_STILL:
        raise BitstreamError(f"is of kind {data[0] if data else 'none'}, not a still picture (1)")
    try:
        image = Image.open(io.BytesIO(bytes(data[1:])), formats=list(STILL_FORMATS))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise BitstreamError("does not hold a WebP or AVIF picture") from None
    width, height = image.size
    if width * height > MAX_BACKGROUND_PIXELS:
        raise BitstreamError(f"holds a {width}x{height} picture, more than {MAX_BACKGROUND_PIXELS} pixels")
    return image


def parsed_for_source(parse, data: bytes, size: tuple[int, int] | None):
    """(what `parse` makes of a background extension's data, None), or (None, what is wrong): its own problem,
    or, with `size` None (no usable `plac`), that the background has no frame to go into."""
    try:
        parsed = parse(data)
    except BitstreamError as exc:
        return None, str(exc)
    if size is None:
        return None, "has no usable 'plac' to give the frame it belongs to"
    return parsed, None


def summary_of(parse, data: bytes, describe) -> str:
    """stvinfo's text for a background extension: describe(parsed), or 'malformed: PROBLEM'."""
    try:
        return describe(parse(data))
    except BitstreamError as exc:
        return f"malformed: {exc}"


def background_problem(data: bytes, size: tuple[int, int] | None) -> str | None:
    """What is wrong with a `bgnd` extension's data, or None; `size` (width, height) is the source picture's
    from `plac` (None: there is no usable `plac`, so the background has no frame to go into)."""
    image, problem = parsed_for_source(_opened, data, size)
    if problem is not None:
        return problem
    if image.size != tuple(size):
        return f"holds a {image.size[0]}x{image.size[1]} picture, but the source is {size[0]}x{size[1]}"
    return None


def decode_background(data: bytes) -> np.ndarray:
    """The `bgnd` picture as [H, W, 3] uint8 RGB; BitstreamError if it does not decode."""
    image = _opened(data)
    try:
        return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError):
        raise BitstreamError("holds a picture that does not decode") from None


def background_summary(data: bytes) -> str:
    return summary_of(_opened, data, lambda image: f"still {STILL_FORMATS[image.format]} {image.size[0]}x"
                                                   f"{image.size[1]}, {len(data) - 1} bytes")
