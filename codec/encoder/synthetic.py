"""A talking-head clip rendered by a generator from known parameters: the truth of the closed loops and of the
offline demo. Tracks are smooth (sums of slow sinusoids, seeded), like a face talking and turning.

Two truths:
- matched (`make_truth`): rendered exactly as the decoder renders (the encoder's pose editor, the 32 channels, an
  identity sampled from the mapping network, upright, noise-free). Everything in it is representable, so it
  measures how well the encoder solves its own model, not how well that model fits a video.
- mismatched (`make_mismatched_truth` + `degrade`): rendered with what the encoder does not assume, each part
  measured on the truth itself (`MismatchReport`):
  * roll applied in the image, its track peaking at +-`roll_amplitude` degrees (the encoder must estimate and
    undo it);
  * `hidden_fraction` of the offsets' motion energy (in pixels) in StyleSpace channels outside the 32, which the
    stream cannot carry;
  * yaw/pitch through `BentPoseEditor`, not the encoder's linear editor: a real head turn is not a straight line
    in W+ on 4 rows (StyleFlow is a nonlinear flow), so the truth's turn leaves that line and bends;
  * an ID latent that is not a mapping sample: mapping(z) plus independent noise on every W+ row (real faces'
    inversions are neither equal-row nor from the mapping's distribution, which is all tiny-e4e was trained on);
  * sensor noise, then H.264 (CRF 18, yuv420p) in the clip the encoder reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from codec.decoder.render import apply_roll, render
from codec.encoder.pose_directions import moments_pose
from codec.models.pose import LinearPoseEditor


@dataclass(frozen=True)
class SyntheticTruth:
    id_latent: torch.Tensor  # [n_latent, dim]
    style_indices: list[tuple[int, int]]
    alpha: np.ndarray  # [N, 32] StyleSpace units
    yaw: np.ndarray  # [N] pose units
    pitch: np.ndarray  # [N]
    roll: np.ndarray  # [N] degrees (0: the frames are rendered upright)
    # offsets on StyleSpace channels outside style_indices (the mismatched truth): not representable
    hidden_indices: list[tuple[int, int]] = field(default_factory=list)
    hidden_alpha: np.ndarray | None = None  # [N, len(hidden_indices)]


def frontal_id_latent(generator, editor, seed: int, row_noise: float = 0.0) -> torch.Tensor:
    """A sampled identity moved to the frontal pose of the tiny model's estimator (picture centroid centred), so
    that yaw = pitch = 0 is the most frontal frame of a clip. row_noise > 0: each W+ row gets its own Gaussian
    noise of that many times the mapping's per-dimension spread (not a mapping sample any more)."""
    with torch.no_grad():
        rng = torch.Generator().manual_seed(seed)
        z = torch.randn(1, generator.config.style_dim, generator=rng)
        latent = generator.mapping(z).expand(generator.n_latent, -1).clone()
        if row_noise > 0:
            spread = _mapping_samples(generator, seed).std(0)
            latent += row_noise * spread * torch.randn(latent.shape, generator=rng)
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


def render_truth(generator, editor, truth: SyntheticTruth, batch: int = 16, shown: bool = True,
                 hidden: bool = True, roll: bool = True) -> torch.Tensor:
    """All frames [N, 3, R, R] in [-1, 1]; shown/hidden: include the offsets on the 32 channels / outside them;
    roll: rotate the pictures by the truth's roll."""
    n = len(truth.yaw)
    indices, alpha = list(truth.style_indices), truth.alpha * float(shown)
    if truth.hidden_indices:
        indices += truth.hidden_indices
        alpha = np.concatenate([alpha, truth.hidden_alpha * float(hidden)], 1)
    out = []
    with torch.no_grad():
        for lo in range(0, n, batch):
            hi = lo + batch
            out.append(render(generator, editor, truth.id_latent, indices,
                              torch.tensor(alpha[lo:hi], dtype=torch.float32),
                              torch.tensor(truth.yaw[lo:hi], dtype=torch.float32),
                              torch.tensor(truth.pitch[lo:hi], dtype=torch.float32)))
        frames = torch.cat(out)
        return apply_roll(frames, torch.tensor(truth.roll, dtype=torch.float32)) if roll else frames


class BentPoseEditor:
    """The mismatched truth's head turn: the encoder's linear editor, plus a component along random W+ directions
    on rows 0-7 (`off_axis` times the pose direction's norm per unit; a real turn also moves the middle rows, which
    the encoder's editor leaves alone) and a quadratic bend on rows 0-3 that equals `bend` times the linear part at
    `scale` units. Seeded."""

    def __init__(self, base: LinearPoseEditor, seed: int, off_axis: float = 0.5, bend: float = 0.25,
                 scale: float = 8.0, rows: int = 8):
        rng = torch.Generator().manual_seed(seed)
        d = base.directions
        norm = d.flatten(1).norm(dim=1).reshape(2, 1, 1)
        off = torch.randn(d.shape, generator=rng)
        off[:, rows:] = 0
        curve = torch.randn(d.shape, generator=rng)
        curve[:, 4:] = 0
        self.base = base
        self.off_axis = off * (off_axis * norm / off.flatten(1).norm(dim=1).reshape(2, 1, 1))
        self.curve = curve * (bend * norm / scale / curve.flatten(1).norm(dim=1).reshape(2, 1, 1))

    def edit(self, w_plus: torch.Tensor, yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
        yaw = torch.as_tensor(yaw).to(w_plus).reshape(-1, 1, 1)
        pitch = torch.as_tensor(pitch).to(w_plus).reshape(-1, 1, 1)
        (off_yaw, off_pitch), (curve_yaw, curve_pitch) = self.off_axis.to(w_plus), self.curve.to(w_plus)
        return (self.base.edit(w_plus, yaw.flatten(), pitch.flatten()) + yaw * off_yaw + pitch * off_pitch
                + yaw.square() * curve_yaw + pitch.square() * curve_pitch)


def _mapping_samples(generator, seed: int, count: int = 512) -> torch.Tensor:
    with torch.no_grad():
        z = torch.randn(count, generator.config.style_dim, generator=torch.Generator().manual_seed(seed + 7919))
        return generator.mapping(z)


def hidden_channels(generator, style_indices, count: int, seed: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    """`count` StyleSpace channels outside `style_indices` (seeded, any layer) and each one's spread over the
    mapping's samples."""
    with torch.no_grad():
        styles = generator.styles(_mapping_samples(generator, seed))
    taken = set(map(tuple, style_indices))
    pool = [(layer, c) for layer, s in enumerate(styles) for c in range(s.shape[1]) if (layer, c) not in taken]
    chosen = [pool[i] for i in np.random.default_rng(seed).choice(len(pool), count, replace=False)]
    return chosen, np.array([float(styles[layer][:, c].std()) for layer, c in chosen])


def motion_energy(generator, editor, truth: SyntheticTruth, shown: bool, hidden: bool) -> float:
    """Mean squared pixel change the offsets make over the clip: the change they make to each frame (pose held
    at the frame's own, no roll), less its mean over the clip (a constant change is the identity's, which the
    ID latent absorbs)."""
    still = render_truth(generator, editor, truth, shown=False, hidden=False, roll=False)
    change = render_truth(generator, editor, truth, shown=shown, hidden=hidden, roll=False) - still
    return float((change - change.mean(0)).pow(2).mean())


def make_mismatched_truth(generator, editor: LinearPoseEditor, style_indices, channel_spread: np.ndarray,
                          n_frames: int, seed: int, pose_amplitude: float = 8.0, alpha_amplitude: float = 1.2,
                          roll_amplitude: float = 15.0, hidden_fraction: float = 0.2, hidden_count: int = 32,
                          id_row_noise: float = 0.5) -> tuple[SyntheticTruth, BentPoseEditor]:
    """The truth and the editor that renders it (see the module docstring). The hidden channels' amplitude is set
    so that they carry `hidden_fraction` of the offsets' motion energy in pixels (`motion_energy`; StyleSpace
    units are not comparable between channels, what they do to the picture is)."""
    truth_editor = BentPoseEditor(editor, seed + 3)
    matched = make_truth(generator, truth_editor, style_indices, channel_spread, n_frames, seed, pose_amplitude,
                         alpha_amplitude)
    indices, spread = hidden_channels(generator, style_indices, hidden_count, seed)
    unit = smooth_tracks(n_frames, hidden_count, alpha_amplitude * spread, seed + 5)
    unit -= unit.mean(0)  # motion only: a constant offset would be part of the identity
    roll = smooth_tracks(n_frames, 1, 1.0, seed + 4)[:, 0]
    roll *= roll_amplitude / np.abs(roll).max()  # a short clip's slow track barely moves: its peak is the amplitude
    truth = SyntheticTruth(frontal_id_latent(generator, truth_editor, seed, id_row_noise), matched.style_indices,
                           matched.alpha, matched.yaw, matched.pitch, roll, indices, unit)
    shown = motion_energy(generator, truth_editor, truth, shown=True, hidden=False)
    scale = 1.0
    for _ in range(3):  # the energy is about quadratic in the amplitude: a few fixed-point steps
        hidden = motion_energy(generator, truth_editor, _with_hidden(truth, unit * scale), shown=False, hidden=True)
        scale *= np.sqrt(hidden_fraction / (1 - hidden_fraction) * shown / hidden)
    return _with_hidden(truth, unit * scale), truth_editor


def _with_hidden(truth: SyntheticTruth, hidden_alpha: np.ndarray) -> SyntheticTruth:
    return SyntheticTruth(truth.id_latent, truth.style_indices, truth.alpha, truth.yaw, truth.pitch, truth.roll,
                          truth.hidden_indices, hidden_alpha)


def degrade(frames: torch.Tensor, noise_levels: float, seed: int) -> np.ndarray:
    """[N, 3, R, R] in [-1, 1] -> [N, R, R, 3] uint8 with Gaussian sensor noise of `noise_levels` 8-bit levels
    (the H.264 step is the writer's: `codec.preprocess.video.write_video(..., lossless=False)`)."""
    pixels = (frames.clamp(-1, 1) + 1) * 127.5
    noise = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(seed)) * noise_levels
    return (pixels + noise).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
