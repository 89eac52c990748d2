"""A synthetic talking-head clip rendered by the tiny generator from known parameters: the closed loop's truth.

The ID latent is made frontal for the tiny model's pose estimator (its picture's centroid at the centre), so
that the frame rendered with yaw = pitch = 0 is the clip's most frontal frame, the one eq. 1 should pick.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from codec import zoo
from codec.decoder.render import render
from codec.encoder.synthetic import frontal_id_latent

CLIP_SEED = 5
# Yaw/pitch tracks in tiny pose units (nominal range -20..20): frame 3 is frontal, every other frame is at least
# 4 units away from it, a turn the pose estimator resolves (it is calibrated to 1 unit per unit).
YAW = np.array([-8.0, -6.0, -4.0, 0.0, 4.0, 7.0, 9.0, 6.0], np.float32)
PITCH = np.array([3.0, 2.0, 1.0, 0.0, -1.0, -2.0, -4.0, -5.0], np.float32)
FRONTAL_FRAME = 3


@dataclass
class SyntheticClip:
    generator: torch.nn.Module
    editor: object
    id_latent: torch.Tensor  # [n_latent, dim]
    yaw: np.ndarray
    pitch: np.ndarray
    frames: torch.Tensor  # [N, 3, R, R] in [-1, 1]
    latents: torch.Tensor  # true W+ of each frame


def synthetic_clip() -> SyntheticClip:
    generator = zoo.load_generator("tiny")
    editor = zoo.load_pose_editor(None, "tiny")
    id_latent = frontal_id_latent(generator, editor, CLIP_SEED)
    yaw, pitch = torch.from_numpy(YAW), torch.from_numpy(PITCH)
    with torch.no_grad():
        latents = editor.edit(id_latent.expand(len(YAW), -1, -1), yaw, pitch)
        frames = render(generator, editor, id_latent, [], torch.zeros(len(YAW), 0), yaw, pitch)
    return SyntheticClip(generator, editor, id_latent, YAW, PITCH, frames, latents)


def tiny_models():
    """The tiny generator, its pose editor and its channel table: what the closed loops render with."""
    from codec.encoder.sensitivity import load_channel_table

    return (zoo.load_generator("tiny"), zoo.load_pose_editor(None, "tiny"),
            load_channel_table(zoo.WEIGHTS_DIR / "tiny-64-channels.json"))
