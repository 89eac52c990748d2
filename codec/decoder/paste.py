"""Paste-back: a decoded face put back into the source picture, over a background (format 1.2 `plac`).

The decoder renders the face upright at the generator's size; the frame's placement (centre and side in source
pixels) and its roll rebuild the crop's similarity (codec.preprocess.crop.crop_similarity), which carries the
rendering into the source picture in one resampling. A feathered ellipse over the face, carried the same way,
blends it over the background, so the crop square's edge never shows.
"""

from __future__ import annotations

import numpy as np

from codec.preprocess.crop import crop_similarity, unwarp_crop

# The blend region in the aligned square (fractions of its side): an ellipse around the FFHQ-aligned face, hair
# line and chin included, whose weight falls from 1 to 0 over FEATHER of the side, inside the square's edge.
ELLIPSE_CENTRE = (0.5, 0.53)
ELLIPSE_AXES = (0.40, 0.45)
FEATHER = 0.10


def face_blend_mask(size: int) -> np.ndarray:
    """[size, size] float32 weights in [0, 1]: 1 over the face, 0 well inside the square's edge, a smooth ramp
    between (smoothstep of the distance to the ellipse, in units of the feather)."""
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size
    x = (coords[None, :] - ELLIPSE_CENTRE[0]) / ELLIPSE_AXES[0]
    y = (coords[:, None] - ELLIPSE_CENTRE[1]) / ELLIPSE_AXES[1]
    radius = np.sqrt(x * x + y * y)  # 1 on the ellipse
    outside = (radius - 1.0) * min(ELLIPSE_AXES) / FEATHER + 1.0  # 0 a feather inside the ellipse, 1 on it
    t = np.clip(1.0 - outside, 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def paste_face(face: np.ndarray, centre: np.ndarray, side: float, roll_deg: float, background: np.ndarray,
               mask: np.ndarray | None = None) -> np.ndarray:
    """face [S, S, 3] uint8, upright (no roll applied); background [H, W, 3] uint8 -> the frame [H, W, 3] uint8
    with the face placed at `centre`/`side` (source pixels), turned by `roll_deg`, blended by `mask`
    (face_blend_mask(S) by default)."""
    size = face.shape[0]
    weight = face_blend_mask(size) if mask is None else mask
    transform = crop_similarity(centre, side, roll_deg, size)
    placed, alpha = unwarp_crop(face, transform, background.shape[:2], weight)
    alpha = alpha[..., None]
    blended = alpha * placed.astype(np.float32) + (1.0 - alpha) * background.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)
