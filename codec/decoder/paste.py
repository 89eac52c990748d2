"""Paste-back: a decoded face put back into the source picture, over a background (format 1.2 `plac`).

The decoder renders the face upright at the generator's size; the frame's placement (centre and side in source
pixels) and its roll rebuild the crop's similarity (codec.preprocess.crop.crop_similarity), which carries the
rendering into the source picture in one resampling. A feathered ellipse over the face, carried the same way,
blends it over the background, so the crop square's edge never shows.

What the face goes over (`Scene`): the background video's frame (1.3 `bgvd`) when the stream has one and it
reaches that frame, else the still (1.2 `bgnd`), else black. The blend runs with OpenCV on the host, or with torch
on the decoder's device (codec.decoder.paste_torch) when that is a GPU, so the rendering never leaves it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class Scene:
    """The picture behind each frame's face: the background video's frame (`video`, a
    codec.bitstream.background_video.BackgroundVideoDecoder) where it has one. The frames it does not give (it is
    shorter than the stream, or broke) are concealed, and counted: with the still when the stream has one, else
    with the video's last good picture (chunk damage's rule), else black."""

    still: np.ndarray | None  # [H, W, 3] uint8: the `bgnd` still; None: the stream has none
    shape: tuple[int, int]  # (height, width) of the source picture
    video: "BackgroundVideoDecoder | None" = None  # noqa: F821
    concealed: set[int] = field(default_factory=set)
    last_good: np.ndarray | None = None

    def __call__(self, index: int) -> np.ndarray:
        picture = None if self.video is None else self.video.frame(index)
        if picture is not None:
            self.last_good = picture
            return picture
        if self.video is not None:
            self.concealed.add(index)
        for fallback in (self.still, self.last_good):
            if fallback is not None:
                return fallback
        return np.zeros((*self.shape, 3), np.uint8)

    def warnings(self) -> list[str]:
        """What the background video could not give, once a decode is done (format_spec.md §10 "Decoders")."""
        if not self.concealed:
            return []
        why = self.video.error or f"the video holds {len(self.video)} frames"
        first, last = min(self.concealed), max(self.concealed)
        instead = "the background still" if self.still is not None else "the video's last good picture"
        return [f"header extension 'bgvd': {why}: {len(self.concealed)} frames ({first}-{last}) pasted over "
                f"{instead} instead"]


@dataclass(frozen=True)
class PasteBack:
    """What a decode needs to put faces back: the stream's placement and the pictures they go over."""

    placement: "Placement"  # noqa: F821 - codec.bitstream.placement.Placement
    background: np.ndarray | None  # [H, W, 3] uint8: the `bgnd` still; None: none (black, or the video's)
    size: tuple[int, int] | None = None  # (width, height) to resize the frames to; None: the source's
    video: "BackgroundVideoDecoder | None" = None  # noqa: F821 - the `bgvd` frames (format 1.3), if any
    device: "torch.device | None" = None  # noqa: F821 - blend with torch there; None: OpenCV on the host
    scene: Scene = field(init=False, compare=False)

    def __post_init__(self) -> None:
        shape = (self.placement.height, self.placement.width)
        object.__setattr__(self, "scene", Scene(self.background, shape, self.video))

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
                                 roll_deg, self.scene(index))
        if self.size is not None and self.size != (picture.shape[1], picture.shape[0]):
            picture = cv2.resize(picture, self.size, interpolation=cv2.INTER_AREA)
        return picture

    def frames_on_device(self, first: int, upright: "torch.Tensor", rolls: np.ndarray) -> np.ndarray:  # noqa: F821
        """Frames first, first + 1, ... from their upright renderings [B, S, S, 3] uint8 on `device`, blended
        there (codec.decoder.paste_torch); [B, H, W, 3] uint8 on the host."""
        from codec.decoder.paste_torch import paste_frames

        return paste_frames(self, first, upright, rolls)


def paste_back_for(header, size: tuple[int, int] | None = None) -> tuple[PasteBack | None, list[str]]:
    """The stream's paste-back (None: decode the face crop) and warnings. A malformed `plac` means the face crop;
    a missing or malformed `bgnd` a black background (format_spec.md §3); a malformed `bgvd` the still, or the
    face crop when there is no still either."""
    from codec.errors import BitstreamError

    try:
        placement = header.placement
    except BitstreamError as exc:
        return None, [f"{exc}: decoding the face crop instead of the whole picture"]
    if placement is None:
        return None, []
    source = (placement.width, placement.height)
    still, warnings = _still_for(header, source)
    video, problem = _video_for(header, source)
    if problem is not None and still is None:
        return None, [*warnings, f"header extension 'bgvd' {problem}, and there is no background still: decoding "
                                 "the face crop instead of the whole picture"]
    if problem is not None:
        warnings.append(f"header extension 'bgvd' {problem}: pasting over the background still")
    count = header.frame_count
    if video is not None and count is not None and len(video) != count:
        instead = "the background still" if still is not None else "its last picture"
        warnings.append(f"header extension 'bgvd' holds {len(video)} frames, the stream {count}: the frames it "
                        f"lacks are pasted over {instead}")
    return PasteBack(placement, still, size, video), warnings


def _still_for(header, source: tuple[int, int]) -> tuple[np.ndarray | None, list[str]]:
    """The `bgnd` still (None when absent or malformed) and its warning."""
    from codec.bitstream.background import EXT_BACKGROUND, background_problem, decode_background
    from codec.errors import BitstreamError

    data = header.extension(EXT_BACKGROUND)
    if data is None:
        return None, []
    problem = background_problem(data, source)
    if problem is None:
        try:
            return decode_background(data), []
        except BitstreamError as exc:
            problem = str(exc)
    return None, [f"header extension 'bgnd' {problem}: pasting over black"]


def _video_for(header, source: tuple[int, int]):
    """The `bgvd` video's decoder, or None and what is wrong with it (None, None: the stream has none). A frame
    count other than the stream's is not wrong here: the frames it lacks are concealed (Scene)."""
    from codec.bitstream.background_video import BackgroundVideoDecoder, background_video_problem
    from codec.bitstream.header import EXT_BACKGROUND_VIDEO

    data = header.extension(EXT_BACKGROUND_VIDEO)
    if data is None:
        return None, None
    problem = background_video_problem(data, source, None)
    return (None, problem) if problem is not None else (BackgroundVideoDecoder(data, source), None)
