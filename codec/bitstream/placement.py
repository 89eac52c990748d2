"""Where each frame's face crop sits in the source picture: the `plac` header extension (format_spec.md 1.2).

The decoder renders the face upright at the generator's size and turns it by the record's roll; placement then
says which axis-aligned square of the source picture that rendering covers (its centre and side, in source
pixels), so the face can be put back into the whole frame. It lives in the header (which every reader skips by
its length when it does not know the tag), so the 70-byte records and the chunks are exactly those of 1.1.

Layout: u16 source width, u16 source height, u32 frame count n, u32 Z, then a zstd frame of Z bytes declaring
exactly 6n bytes: the n x 3 u16 values (cx, cy, side) through the entropy profile's transform (per-column deltas,
zigzag, column-major byte planes). Quantisation, with M = max(width, height):

    centre x = width * (1.5 * cx / 65536 - 0.25),  centre y = height * (1.5 * cy / 65536 - 0.25)
    side     = 4 * M * side_q / 65536                               (side_q = 0: no placement)

so centres run from a quarter of the picture before it to a quarter after it, and sides up to 4M.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from codec.bitstream.chunk import delta_planes, undelta_planes
from codec.bitstream.compress import compress, decompress_exact
from codec.bitstream.header import EXT_PLACEMENT  # noqa: F401 - the tag, for callers of this module
from codec.errors import BitstreamError

MAX_PLACED_FRAMES = 1 << 22  # 6 x 4,194,304 = 25 MB decoded at most (§9), 39 hours at 30 fps
_HEAD = struct.Struct("<HHII")
_LEVELS = 65536


@dataclass(frozen=True)
class Placement:
    width: int  # the source picture, pixels
    height: int
    centre: np.ndarray  # [n, 2] float64 (x, y) in source pixels; NaN where a frame has none
    side: np.ndarray  # [n] float64 source pixels; NaN where a frame has none

    def __len__(self) -> int:
        return len(self.side)


def quantisation_error_px(width: int, height: int) -> tuple[float, float]:
    """The largest error quantisation makes, in source pixels: (centre, side). The face's outline moves by at most
    centre + side / 2."""
    return 1.5 * max(width, height) / _LEVELS / 2, 4 * max(width, height) / _LEVELS / 2


def quantise_placement(p: Placement) -> np.ndarray:
    """Placement -> u16 [n, 3] (cx, cy, side); ValueError for a centre or side outside the representable range."""
    centre = np.asarray(p.centre, np.float64).reshape(-1, 2)
    side = np.asarray(p.side, np.float64).reshape(-1)
    missing = ~np.isfinite(side) | ~np.isfinite(centre).all(axis=1)
    size = np.array([p.width, p.height], np.float64)
    q_centre = np.round((np.where(missing[:, None], 0.5 * size, centre) / size + 0.25) / 1.5 * _LEVELS)
    q_side = np.round(np.where(missing, 0.0, side) / (4 * max(p.width, p.height)) * _LEVELS)
    if (q_centre < 0).any() or (q_centre >= _LEVELS).any():
        raise ValueError("a face centre lies further than a quarter of the picture outside it")
    if ((q_side < 1) & ~missing).any() or (q_side >= _LEVELS).any():
        raise ValueError("a crop side is not between 1/16384 and 4 times the picture's larger side")
    return np.concatenate([q_centre, q_side[:, None]], axis=1).astype(np.uint16)


def encode_placement(p: Placement) -> bytes:
    """The `plac` extension's data."""
    if not (1 <= p.width <= 0xFFFF and 1 <= p.height <= 0xFFFF):
        raise ValueError(f"source picture {p.width}x{p.height} outside 1..65535")
    if len(p) > MAX_PLACED_FRAMES:
        raise ValueError(f"placement for {len(p)} frames; at most {MAX_PLACED_FRAMES}")
    values = quantise_placement(p)
    frame = compress(delta_planes(values.view(np.int16)))
    return _HEAD.pack(p.width, p.height, len(p), len(frame)) + frame


def decode_placement(data: bytes) -> Placement:
    """The `plac` extension's data -> Placement; BitstreamError (one line, what is wrong) if malformed."""
    if len(data) < _HEAD.size:
        raise BitstreamError(f"is {len(data)} bytes, shorter than its {_HEAD.size}-byte head")
    width, height, count, size = _HEAD.unpack_from(data)
    if width == 0 or height == 0:
        raise BitstreamError(f"gives a source picture of {width}x{height}")
    if count > MAX_PLACED_FRAMES:
        raise BitstreamError(f"covers {count} frames, more than {MAX_PLACED_FRAMES}")
    if _HEAD.size + size != len(data):
        raise BitstreamError(f"declares {size} bytes of values, but {len(data) - _HEAD.size} follow its head")
    if count == 0:
        raw = b""
        if size:
            raise BitstreamError("covers 0 frames but carries values")
    else:
        try:
            raw = decompress_exact(bytes(data[_HEAD.size:]), 6 * count, f"values of {count} frames")
        except BitstreamError as exc:
            raise BitstreamError(str(exc)) from None
    values = undelta_planes(raw, count, 3).view(np.uint16).astype(np.float64)
    size_xy = np.array([width, height], np.float64)
    centre = (1.5 * values[:, :2] / _LEVELS - 0.25) * size_xy
    side = values[:, 2] * 4 * max(width, height) / _LEVELS
    none = values[:, 2] == 0
    centre[none] = np.nan
    side[none] = np.nan
    return Placement(width, height, centre, side)
