"""What paste-back needs from the encoder, gathered while the frames stream past alignment: each frame's placement
in the source picture (format 1.2 `plac`), a few source frames for the background still (`bgnd`) and, with
`--background video`, every source frame into a low-rate AV1 encoder (format 1.3 `bgvd`).

Nothing here holds the clip: one placement per frame (three numbers), at most `samples` source frames, and the
video encoder's coded bytes (its own look-ahead aside).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from codec.bitstream.background import encode_background
from codec.bitstream.background_video import BackgroundVideoEncoder
from codec.bitstream.placement import Placement, encode_placement
from codec.preprocess.background import face_region, sample_indices, scene_still
from codec.preprocess.crop import crop_placement

BACKGROUND_SAMPLES = 9  # source frames the still is the median of


@dataclass
class SceneCollector:
    size: int  # the aligned crops' side (the generator's resolution)
    expected_frames: int  # how many frames will come (the probe's count), to spread the samples over them
    samples: int = BACKGROUND_SAMPLES
    centres: list[np.ndarray] = field(default_factory=list)
    sides: list[float] = field(default_factory=list)
    rolls: list[float] = field(default_factory=list)
    kept: dict[int, np.ndarray] = field(default_factory=dict)
    frame_shape: tuple[int, int] | None = None  # (height, width) of the source pictures
    video: BackgroundVideoEncoder | None = None  # codes every source frame (`--background video`), else None

    def __post_init__(self) -> None:
        self._wanted = set(sample_indices(self.expected_frames, self.samples))

    def add(self, source_frame: np.ndarray, crop_transform: np.ndarray, roll_deg: float) -> None:
        """The next frame: its source picture, its crop (input -> aligned pixels) and its roll."""
        index = len(self.sides)
        centre, side = crop_placement(crop_transform, self.size)
        self.centres.append(centre)
        self.sides.append(side)
        self.rolls.append(roll_deg)
        self.frame_shape = source_frame.shape[:2]
        if index in self._wanted:
            self.kept[index] = source_frame.copy()
        if self.video is not None:
            self.video.add(source_frame)

    def placement(self) -> bytes | None:
        """The `plac` extension's data, or None when no frame came."""
        if self.frame_shape is None:
            return None
        height, width = self.frame_shape
        return encode_placement(Placement(width, height, np.array(self.centres), np.array(self.sides)))

    def background(self, quality: int, codec: str = "webp") -> bytes | None:
        """The `bgnd` extension's data: the scene with the faces taken out, as a still picture."""
        if not self.kept:
            return None
        frames = [self.kept[i] for i in sorted(self.kept)]
        faces = [face_region(self.centres[i], self.sides[i], self.rolls[i], self.frame_shape) for i in sorted(self.kept)]
        return encode_background(scene_still(frames, faces), quality, codec)

    def background_video(self) -> bytes | None:
        """The `bgvd` extension's data: every source frame at a low rate, or None without a video encoder."""
        return None if self.video is None or self.frame_shape is None else self.video.finish()
