"""What paste-back needs from the encoder, gathered while the frames stream past alignment: each frame's placement
in the source picture (format 1.2 `plac`) and a few source frames for the background still (`bgnd`).

Nothing here holds the clip: one placement per frame (three numbers) and at most `samples` source frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from codec.bitstream.background import encode_background
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
