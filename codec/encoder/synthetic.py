"""A talking-head clip rendered by a generator from known parameters: the truth of the closed loops and of the
offline demo. Tracks are smooth (sums of slow sinusoids, seeded), like a face talking and turning."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from codec.decoder.render import render
from codec.encoder.pose_directions import moments_pose


@dataclass(frozen=True)
class SyntheticTruth:
    id_latent: torch.Tensor  # [n_latent, dim]
    style_indices: list[tuple[int, int]]
    alpha: np.ndarray  # [N, 32] StyleSpace units
    yaw: np.ndarray  # [N] pose units
    pitch: np.ndarray  # [N]
    roll: np.ndarray  # [N] degrees (0: the frames are rendered upright)


def frontal_id_latent(generator, editor, seed: int) -> torch.Tensor:
    """A sampled identity moved to the frontal pose of the tiny model's estimator (picture centroid centred), so
    that yaw = pitch = 0 is the most frontal frame of a clip."""
    with torch.no_grad():
        z = torch.randn(1, generator.config.style_dim, generator=torch.Generator().manual_seed(seed))
        latent = generator.mapping(z).expand(generator.n_latent, -1).clone()
        for _ in range(4):  # the estimator's response is calibrated to slope 1: a few Newton steps converge
            pose = moments_pose(generator(latent[None]))[0]
            latent = editor.edit(latent[None], -pose[:1], -pose[1:])[0]
    return latent


def smooth_tracks(n_frames: int, count: int, amplitude: np.ndarray | float, seed: int) -> np.ndarray:
    """[n_frames, count]: per track two sinusoids of random slow periods (1-4 s at 25 fps) and phases."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames)[:, None]
    out = np.zeros((n_frames, count))
    for _ in range(2):
        period = rng.uniform(25, 100, count)
        phase = rng.uniform(0, 2 * np.pi, count)
        out += 0.5 * np.sin(2 * np.pi * t / period + phase)
    return out * np.asarray(amplitude)


def make_truth(generator, editor, style_indices, channel_spread: np.ndarray, n_frames: int, seed: int,
               pose_amplitude: float = 8.0, alpha_amplitude: float = 1.2) -> SyntheticTruth:
    yaw_pitch = smooth_tracks(n_frames, 2, pose_amplitude, seed + 1)
    alpha = smooth_tracks(n_frames, len(style_indices), alpha_amplitude * channel_spread, seed + 2)
    return SyntheticTruth(frontal_id_latent(generator, editor, seed), list(style_indices), alpha,
                          yaw_pitch[:, 0], yaw_pitch[:, 1], np.zeros(n_frames))


def render_truth(generator, editor, truth: SyntheticTruth, batch: int = 16) -> torch.Tensor:
    """All frames [N, 3, R, R] in [-1, 1]."""
    out = []
    with torch.no_grad():
        for lo in range(0, len(truth.yaw), batch):
            hi = lo + batch
            out.append(render(generator, editor, truth.id_latent, truth.style_indices,
                              torch.tensor(truth.alpha[lo:hi], dtype=torch.float32),
                              torch.tensor(truth.yaw[lo:hi], dtype=torch.float32),
                              torch.tensor(truth.pitch[lo:hi], dtype=torch.float32)))
    return torch.cat(out)
