"""ID-latent selection (paper eq. 1): the frame whose inversion best keeps the person's identity, preferring
near-frontal head poses (a frontal ID latent edits to both sides with the least distortion).

    score_t = ID_similarity(I_t, G(L_t)) - frontal_weight * (yaw_t^2 + pitch_t^2) / pose_scale^2

The pose term needs an estimate of each frame's head pose before pose encoding runs: from landmarks on real
video, or from the pose editor's own reading of the latent (the linear editor projects onto its directions).
Without one, the choice is identity similarity alone, as in eq. 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class IdChoice:
    frame: int
    scores: np.ndarray  # [N] the combined score of every frame
    identity_similarity: np.ndarray  # [N]


def select_id_frame(
    identity_similarity: np.ndarray,
    yaw: np.ndarray | None = None,
    pitch: np.ndarray | None = None,
    frontal_weight: float = 0.5,
    pose_scale: float = 20.0,
) -> IdChoice:
    """identity_similarity [N] (cosine, higher is better); yaw/pitch [N] in pose units, or None."""
    similarity = np.asarray(identity_similarity, dtype=np.float64)
    if similarity.ndim != 1 or similarity.size == 0:
        raise ValueError("select_id_frame needs one similarity per frame (at least one frame)")
    scores = similarity.copy()
    if yaw is not None and pitch is not None:
        off_frontal = (np.asarray(yaw, np.float64) ** 2 + np.asarray(pitch, np.float64) ** 2) / pose_scale**2
        scores -= frontal_weight * off_frontal
    # First best frame on ties: deterministic, and earlier frames are cheaper to seek to.
    return IdChoice(int(np.argmax(scores)), scores, similarity)
