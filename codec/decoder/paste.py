"""Paste-back: a decoded face put back into the source picture, over a background (format 1.2 `plac`).

The decoder renders the face upright at the generator's size; the frame's placement (centre and side in source
pixels) and its roll rebuild the crop's similarity (codec.preprocess.crop.crop_similarity), which carries the
rendering into the source picture in one resampling. A feathered ellipse over the face, carried the same way,
blends it over the background, so the crop square's edge never shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
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


@dataclass(frozen=True)
class PasteBack:
    """What a decode needs to put faces back: the stream's placement and the picture they go over."""

    placement: "Placement"  # noqa: F821 - codec.bitstream.placement.Placement
    background: np.ndarray  # [H, W, 3] uint8: the `bgnd` still, or black
    size: tuple[int, int] | None = None  # (width, height) to resize the frames to; None: the source's

    @property
    def output_size(self) -> tuple[int, int]:
        return self.size or (self.placement.width, self.placement.height)

    def placed(self, frame: int) -> int | None:
        """The frame whose placement frame `frame` uses: itself, else the nearest earlier placed one, else the
        nearest later one (format_spec.md `plac`); None when no frame is placed."""
        sides = self.placement.side
        placed = np.flatnonzero(~np.isnan(sides))
        if len(placed) == 0:
            return None
        earlier = placed[placed <= frame]
        return int(earlier[-1]) if len(earlier) else int(placed[0])

    def frame(self, index: int, upright: np.ndarray, roll_deg: float) -> np.ndarray:
        """The upright rendering of frame `index` in the source picture, over the background."""
        source = self.placed(index)
        if source is None:
            picture = cv2.resize(upright, (self.placement.width, self.placement.height), interpolation=cv2.INTER_AREA)
        else:
            picture = paste_face(upright, self.placement.centre[source], float(self.placement.side[source]),
                                 roll_deg, self.background)
        if self.size is not None and self.size != (picture.shape[1], picture.shape[0]):
            picture = cv2.resize(picture, self.size, interpolation=cv2.INTER_AREA)
        return picture


def paste_back_for(header, size: tuple[int, int] | None = None) -> tuple[PasteBack | None, list[str]]:
    """The stream's paste-back (None when it has no placement) and warnings: a malformed `plac` means the face
    crop is decoded, a missing or malformed `bgnd` a black background (format_spec.md §3)."""
    from codec.bitstream.background import EXT_BACKGROUND, background_problem, decode_background
    from codec.errors import BitstreamError

    try:
        placement = header.placement
    except BitstreamError as exc:
        return None, [f"{exc}: decoding the face crop instead of the whole picture"]
    if placement is None:
        return None, []
    black = np.zeros((placement.height, placement.width, 3), np.uint8)
    data = header.extension(EXT_BACKGROUND)
    if data is None:
        return PasteBack(placement, black, size), []
    problem = background_problem(data, (placement.width, placement.height))
    if problem is None:
        try:
            return PasteBack(placement, decode_background(data), size), []
        except BitstreamError as exc:
            problem = str(exc)
    return PasteBack(placement, black, size), [f"header extension 'bgnd' {problem}: pasting over black"]
