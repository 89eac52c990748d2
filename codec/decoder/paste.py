"""Paste-back: a decoded face put back into the source picture, over a background (format 1.2 `plac`).

The decoder renders the face upright at the generator's size; the frame's placement (centre and side in source
pixels) and its roll rebuild the crop's similarity (codec.preprocess.crop.crop_similarity), which carries the
rendering into the source picture in one resampling. A feathered ellipse over the face, carried the same way,
blends it over the background, so the crop square's edge never shows.
"""

from __future__ import annotations

import numpy as np

from codec.preprocess.crop import crop_similarity, unwarp_crop
from codec.preprocess.masks import face_blend_mask


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
