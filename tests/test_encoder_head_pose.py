"""Head-pose encoding (eq. 2) closed loop on the tiny model, and the stage cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codec.encoder.cost import RenderCount
from codec.encoder.encode import canonical_soft_masks
from codec.encoder.head_pose import PoseSettings, encode_head_pose
from codec.encoder.losses import make_lpips
from codec.encoder.workdir import cached_stage, stage_key
from encoder_fixtures import FRONTAL_FRAME, synthetic_clip

STOP_AT = 32


@pytest.fixture(scope="module")
def clip():
    return synthetic_clip()


def masks_at(resolution: int) -> dict[str, torch.Tensor]:
    """Soft region masks: drawn at 256 and area-averaged down, so that small regions (the pupils are 8 pixels at
    64x64 and vanish as binary masks at 32x32) keep their weight at the encoder's low resolution."""
    return canonical_soft_masks(resolution)


def test_head_pose_recovers_known_tracks(clip):
    """Targets are G(true L_t) at 32x32, as the pipeline's would be with a perfect inversion. Measured here:
    max error 0.54 units (40 steps, lr 1.5), correlation 0.9997. The bounds leave room for the seeded LPIPS
    backbone and thread-count differences, and still fail for a pose off by a tenth of the -20..20 range."""
    masks = masks_at(STOP_AT)
    with torch.no_grad():
        targets = clip.generator(clip.latents, stop_at=STOP_AT)
    track = encode_head_pose(clip.generator, clip.editor, clip.id_latent, targets, masks["face_rigid"],
                             masks["face"], make_lpips(), STOP_AT,
                             settings=PoseSettings(steps=40, learning_rate=1.5, batch_frames=8), progress=False)
    for got, truth in ((track.yaw, clip.yaw), (track.pitch, clip.pitch)):
        assert np.corrcoef(got, truth)[0, 1] >= 0.95
        assert np.sqrt(np.mean((got - truth) ** 2)) <= 1.0
    assert abs(track.yaw[FRONTAL_FRAME]) <= 1.0 and abs(track.pitch[FRONTAL_FRAME]) <= 1.0
    # 40 Adam steps with gradients per frame, and one check of the best poses without
    assert track.renders == RenderCount(forwards=len(clip.yaw), gradient_steps=len(clip.yaw) * 40)


def test_stage_cache_reuses_and_invalidates(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(3.0)}

    key = stage_key("video-digest", "invert", {"steps": 10})
    first = cached_stage(tmp_path, "invert", key, compute)
    again = cached_stage(tmp_path, "invert", key, compute)
    assert len(calls) == 1 and torch.equal(first["x"], again["x"])
    changed = stage_key("video-digest", "invert", {"steps": 11})
    cached_stage(tmp_path, "invert", changed, compute)
    assert len(calls) == 2
    assert not list(tmp_path.glob("*.part"))
