"""The scene behind the face, as one still picture (`stvenc --background still`, format 1.2 `bgnd`).

Per pixel, the median over a few frames spread over the clip of the values not covered by the face (the face
region of each frame: its blend ellipse carried into the source picture by its placement and roll, grown a
little); where every sampled frame has the face, the picture is filled in from around it (OpenCV's inpainting).
A decoder pastes each frame's face over it, so what the still shows under the face does not matter, as long as
it carries no face of its own and no edge.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from codec.preprocess.crop import crop_similarity
from codec.preprocess.masks import face_blend_mask

BAND_ROWS = 64  # the median runs over bands of rows: memory of K frames x 64 rows, not K whole frames
INPAINT_HOLE_SIDE = 32  # the hole's size (square root of its area, pixels) at which it is filled in
FACE_GROWTH = 1.25  # the face region: the blend ellipse's extent, grown so hair and shadows stay out of the still


def sample_indices(count: int, samples: int) -> list[int]:
    """Up to `samples` frame indices spread evenly over 0..count-1."""
    return sorted(set(np.linspace(0, count - 1, min(samples, count)).round().astype(int).tolist())) if count else []


def face_region(centre: np.ndarray, side: float, roll_deg: float, shape: tuple[int, int]) -> np.ndarray:
    """[H, W] bool: where the frame's face (the crop square's face ellipse, grown by FACE_GROWTH) lies in the
    source picture."""
    size = 256
    mask = face_blend_mask(size)
    grown = cv2.dilate((mask > 0).astype(np.uint8), cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (int(size * (FACE_GROWTH - 1)) | 1,) * 2))
    transform = crop_similarity(centre, side, roll_deg, size)
    region = cv2.warpAffine(grown.astype(np.float32), transform[:2], (shape[1], shape[0]),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
    return region > 0


def scene_still(frames: Sequence[np.ndarray], faces: Sequence[np.ndarray]) -> np.ndarray:
    """frames [H, W, 3] uint8 and their face regions [H, W] bool -> the scene [H, W, 3] uint8: the median of the
    uncovered values, inpainted where no frame uncovers the pixel."""
    height, width = frames[0].shape[:2]
    still = np.zeros((height, width, 3), np.uint8)
    never_seen = np.zeros((height, width), bool)
    for top in range(0, height, BAND_ROWS):
        rows = slice(top, min(top + BAND_ROWS, height))
        values = np.stack([f[rows].astype(np.float32) for f in frames])  # [K, b, W, 3]
        covered = np.stack([m[rows] for m in faces])[..., None]
        values[np.broadcast_to(covered, values.shape)] = np.nan
        seen = ~covered[..., 0].all(axis=0)
        with np.errstate(all="ignore"):
            median = np.nanmedian(np.where(seen[None, ..., None], values, 0.0), axis=0)
        still[rows] = np.clip(np.round(np.nan_to_num(median)), 0, 255).astype(np.uint8)
        never_seen[rows] = ~seen
    if never_seen.any():
        still = fill_hole(still, never_seen)
    return still


def fill_hole(picture: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """picture [H, W, 3] uint8 with `hole` [H, W] bool filled in from around it, smoothly.

    OpenCV's inpainting costs the hole's area times its radius squared: a face-sized hole at full size took 30 s
    (480x480 clip) and grows with the square of the area. The fill is a smooth guess that the face covers anyway,
    so it is made on a picture scaled down until the hole is about INPAINT_HOLE_SIDE pixels across, and only the
    hole's pixels take the scaled-up result."""
    side = float(np.sqrt(hole.sum()))
    scale = min(1.0, INPAINT_HOLE_SIDE / max(side, 1.0))
    height, width = hole.shape
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(picture, small_size, interpolation=cv2.INTER_AREA)
    small_hole = cv2.resize(hole.astype(np.uint8), small_size, interpolation=cv2.INTER_AREA)
    small_hole = cv2.dilate((small_hole > 0).astype(np.uint8), np.ones((3, 3), np.uint8))  # no hole pixel left out
    filled = cv2.inpaint(small, small_hole, 3, cv2.INPAINT_TELEA)
    filled = cv2.resize(filled, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.where(hole[..., None], filled, picture)
