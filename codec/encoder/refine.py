"""Joint refinement (ours, after the paper's per-frame stages): the ID latent and every frame's yaw, pitch and 32
offsets, fitted together so that what the decoder renders (eq. 13) matches the frames themselves.

    min over L_ID, {p_t = (Y_t, P_t, alpha_t)}:  sum_t | G_ss(A(edit(L_ID, Y_t, P_t)) + alpha_t) - I_t |^2
                                                 + anchor * |L_ID - L_ID^0|^2

Why: the paper's stages compare against the inversions G(L_t), and its ID latent is one frame's inversion.
Inversion is ambiguous (many W+ render the same picture), so that latent carries its frame's expression and its
own error in directions the 32 channels do not span; every other frame then pays for it and the offsets absorb the
difference (tiny model, 16 frames: the offsets correlate 0.31 with the truth, 31.9 dB). The ID latent is the one
parameter all frames share, so it is fitted best by all frames together, through the decoder's own renderer.

The problem has the shape of bundle adjustment (a shared structure, small per-frame parameters), and is solved
the same way, in rounds that alternate:
- per frame, Levenberg-Marquardt on its 34 numbers with L_ID held: Jacobians (34 columns) are measured by finite
  differences, all perturbations of a frame in one batch, one Jacobian shared by `jacobian_stride` neighbouring
  frames, and each serves `chord_iterations` cheap updates (a chord method: an update costs one render, and a step
  that does not lower the frame's own error is shrunk, so none makes it worse);
- L-BFGS on L_ID with the frames' parameters held, on `latent_frames` frames spread over the clip (the result is
  kept only if the whole clip's error falls).
With the true L_ID the per-frame problem is well conditioned (tiny model: Jacobian condition number about 11) and
converges to the exact offsets in three Gauss-Newton steps; the rounds bring L_ID to where that holds.
The loss is pixel L2 (the paper's L_L2 term, and what PSNR measures), which is what makes Gauss-Newton apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from codec.decoder.render import apply_roll, render
from codec.encoder.cost import RenderCount
from codec.models.pose import PoseEditor


@dataclass(frozen=True)
class RefineSettings:
    # Defaults measured on a 16-frame tiny-model clip started from e4e + 15 pose steps + 5 attribute steps
    # (tools/bench_encode.py): 3 rounds reach 46.3 dB and offsets correlation 0.962 for 43 renders per frame;
    # 4 rounds (with 20 + 10 stage steps) 47.6 dB / 0.972 for 55 (a forward+backward counted as one forward;
    # weighed by its measured cost the 3 rounds are 89 full-forward equivalents per frame, most of it L_ID's).
    rounds: int = 3  # 0: no refinement (the paper's stages alone)
    chord_iterations: int = 2  # LM updates per frame and pass, on the measured Jacobians
    latent_evaluations: int = 20  # L-BFGS function evaluations on L_ID per round
    # L_ID is shared: a few frames spread over the clip fix it about as well as all of them, at a cost that does
    # not grow with the clip's length (measured: 4 frames of 16 as good as 8)
    latent_frames: int = 4
    # Neighbouring frames look alike, and so do their Jacobians: one is measured per `jacobian_stride` frames and
    # serves them all (a chord method: a step that does not lower a frame's error is shrunk, never taken).
    # Measured: a stride of 16 recovers the same offsets as 2 when the Jacobians are measured again each pass.
    jacobian_stride: int = 16
    fresh_jacobians: bool = True  # measure the Jacobians again on every pass (else once, on the first)
    final_frame_pass: bool = True  # one more per-frame pass after the last L_ID update
    batch_frames: int = 8
    # Size of the comparison: the generator's early exit at min(resolution, its size); None: always full size.
    # 256 keeps config-f's Jacobian batches (35 renders) within a GPU's memory; the tiny model runs at its 64.
    resolution: int | None = 256
    difference_step: float = 1e-2  # finite-difference step (pose units; alpha in units of each index's spread)
    damping: float = 1e-3  # Levenberg-Marquardt lambda, relative to the diagonal of J^T J
    # Largest change of any one number per update (pose units, index spreads): a channel the comparison barely sees
    # (e.g. a layer past the early exit) has a near-zero Jacobian column, and its least-squares step would be huge.
    max_step: float = 1.0
    # Pull of L_ID towards its start. Measured: 1e-4 held the clip at 40 dB (the pull outweighs a 1e-4 mean
    # squared error), 0 and 1e-7 both reached 43 dB; a trace keeps L_ID from drifting where no frame constrains it.
    anchor_weight: float = 1e-7


@dataclass(frozen=True)
class Refinement:
    id_latent: torch.Tensor  # [n_latent, dim]
    yaw: np.ndarray  # [N]
    pitch: np.ndarray  # [N]
    alpha: np.ndarray  # [N, K]
    roll: np.ndarray | None  # [N] degrees when fitted (refine's `roll` given), else None
    loss: np.ndarray  # mean squared error over frames after each half-round (start first)
    renders: RenderCount  # at `resolution`: Jacobians and LM steps without gradients, the L_ID pass with them


class _Problem:
    """The renderer as a function of (L_ID, per-frame parameters), against the targets at one resolution."""

    def __init__(self, generator, editor, style_indices, spread, targets, stop_at, batch_frames, fit_roll):
        self.generator, self.editor, self.style_indices = generator, editor, style_indices
        self.fit_roll = fit_roll
        self.spread, self.targets, self.stop_at, self.batch = spread, targets, stop_at, batch_frames
        self.renders = RenderCount()

    def render(self, latent: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """params [B, 2 + K (+ 1)]: yaw, pitch, alpha in units of each index's spread (, roll in degrees)."""
        if params.shape[0] > self.batch and not torch.is_grad_enabled():  # bounded memory (Jacobian batches)
            return torch.cat([self.render(latent, params[lo : lo + self.batch])
                              for lo in range(0, params.shape[0], self.batch)])
        graded = torch.is_grad_enabled() and latent.requires_grad  # the L_ID pass back-propagates each render
        self.renders += RenderCount(forwards=0 if graded else params.shape[0],
                                    gradient_steps=params.shape[0] if graded else 0)
        k = len(self.style_indices)
        images = render(self.generator, self.editor, latent, self.style_indices, params[:, 2 : 2 + k] * self.spread,
                        params[:, 0], params[:, 1], stop_at=self.stop_at)
        return apply_roll(images, params[:, -1]) if self.fit_roll else images

    def frame_errors(self, latent: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """[N] mean squared error of each frame."""
        with torch.no_grad():
            return torch.cat([
                (self.render(latent, params[lo : lo + self.batch]) - self.targets[lo : lo + self.batch])
                .pow(2).flatten(1).mean(1)
                for lo in range(0, len(params), self.batch)
            ])


def refine(
    generator: torch.nn.Module,
    editor: PoseEditor,
    id_latent: torch.Tensor,
    yaw: np.ndarray,
    pitch: np.ndarray,
    alpha: np.ndarray,
    frames: torch.Tensor,
    style_indices: Sequence[tuple[int, int]],
    channel_spread: np.ndarray,
    settings: RefineSettings = RefineSettings(),
    progress: bool = True,
    roll: np.ndarray | None = None,
) -> Refinement:
    """id_latent [n_latent, dim]; yaw, pitch [N]; alpha [N, K]; frames [N, 3, R, R] in [-1, 1] (area-resized to
    the comparison's resolution); channel_spread [K] (each index's typical spread, the unit of its step).
    roll [N] degrees: fit each frame's roll too, starting there; `frames` are then the frames as they are, rolled
    (the renders are rolled as the decoder rolls them), not the upright crops."""
    device = frames.device
    size = min(settings.resolution or generator.config.size, generator.config.size)
    targets = frames if frames.shape[-1] == size else F.interpolate(frames, size=(size, size), mode="area")
    spread = torch.as_tensor(channel_spread, dtype=torch.float32, device=device)
    problem = _Problem(generator, editor, style_indices, spread, targets,
                       None if size == generator.config.size else size, settings.batch_frames, roll is not None)
    start = id_latent.detach().float().to(device)
    latent = start.clone()
    params = torch.cat([torch.as_tensor(np.stack([yaw, pitch], 1), dtype=torch.float32, device=device),
                        torch.as_tensor(alpha, dtype=torch.float32, device=device) / spread], 1)
    if roll is not None:
        params = torch.cat([params, torch.as_tensor(roll, dtype=torch.float32, device=device)[:, None]], 1)
    errors = problem.frame_errors(latent, params)
    history = [float(errors.mean())]
    passes = settings.rounds + int(settings.final_frame_pass and settings.rounds > 0)
    solvers = None
    latent_rows = np.unique(np.linspace(0, len(params) - 1, min(settings.latent_frames, len(params))).round())
    latent_rows = torch.as_tensor(latent_rows.astype(np.int64), device=device)
    for round_no in tqdm(range(passes), desc="refine", unit="round", disable=not progress):
        if solvers is None or settings.fresh_jacobians:
            solvers = _jacobians(problem, latent, params, settings)
        params, errors = _frame_pass(problem, latent, params, errors, solvers, settings)
        history.append(float(errors.mean()))
        if round_no < settings.rounds:
            moved = _latent_pass(problem, latent, params, latent_rows, start, settings)
            moved_errors = problem.frame_errors(moved, params)
            # fitted on a few frames: kept only if the whole clip agrees
            if float(moved_errors.mean()) <= float(errors.mean()):
                latent, errors = moved, moved_errors
            history.append(float(errors.mean()))
    params = params.cpu().double()
    k = len(style_indices)
    return Refinement(latent.cpu(), params[:, 0].numpy(), params[:, 1].numpy(),
                      (params[:, 2 : 2 + k] * spread.cpu().double()).numpy(),
                      params[:, -1].numpy() if roll is not None else None, np.array(history), problem.renders)


def _jacobians(problem: _Problem, latent, params, settings: RefineSettings):
    """Per group of `jacobian_stride` frames: (J [pixels, count], Cholesky factor of the damped J^T J), measured by
    forward differences at the group's first frame, all perturbations of a frame rendered in one batch."""
    count = params.shape[1]
    eye = torch.eye(count, device=params.device)
    solvers = []
    with torch.no_grad():
        for t in range(0, len(params), settings.jacobian_stride):
            rendered = problem.render(latent, torch.cat([params[t : t + 1], params[t] + settings.difference_step * eye]))
            rendered = rendered.flatten(1)
            jacobian = ((rendered[1:] - rendered[:1]) / settings.difference_step).T
            normal = jacobian.T @ jacobian
            damped = normal + settings.damping * torch.diag(normal.diagonal()) + 1e-9 * eye
            solvers.append((jacobian, torch.linalg.cholesky(damped)))
    return solvers


def _frame_pass(problem: _Problem, latent, params, errors, solvers, settings: RefineSettings):
    """Levenberg-Marquardt chord steps on each frame's parameters, L_ID held (frames are independent given it),
    a batch of frames at a time. A frame keeps a step only if it lowers its own error."""
    params, errors = params.clone(), errors.clone()
    with torch.no_grad():
        for lo in range(0, len(params), problem.batch):
            rows = torch.arange(lo, min(lo + problem.batch, len(params)), device=params.device)
            targets = problem.targets[rows].flatten(1)
            current = problem.render(latent, params[rows]).flatten(1)
            for _ in range(settings.chord_iterations):
                steps = torch.stack([
                    torch.cholesky_solve((jacobian.T @ (targets[i] - current[i]))[:, None], factor)[:, 0]
                    for i, (jacobian, factor) in enumerate(solvers[int(t) // settings.jacobian_stride]
                                                           for t in rows)
                ])
                largest = steps.abs().amax(1, keepdim=True)
                steps = steps * (settings.max_step / largest.clamp_min(settings.max_step))
                pending = torch.ones(len(rows), dtype=torch.bool, device=params.device)
                for scale in (1.0, 0.5, 0.25):  # a step from a stale Jacobian may overshoot: shrink it
                    trial = params[rows[pending]] + scale * steps[pending]
                    rendered = problem.render(latent, trial).flatten(1)
                    error = (rendered - targets[pending]).pow(2).mean(1)
                    better = error < errors[rows[pending]]
                    which = pending.nonzero()[:, 0][better]
                    params[rows[which]], errors[rows[which]], current[which] = trial[better], error[better], rendered[better]
                    pending[which] = False
                    if not bool(pending.any()):
                        break
                if bool(pending.all()):
                    break  # no frame of the batch moves any more on these Jacobians
    return params, errors


def _latent_pass(problem: _Problem, latent, params, rows, start, settings: RefineSettings) -> torch.Tensor:
    """L-BFGS on L_ID over the frames `rows`, their parameters held."""
    latent = latent.clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([latent], lr=1.0, max_iter=settings.latent_evaluations, history_size=20,
                                  line_search_fn="strong_wolfe")
    params, targets, n_frames = params[rows], problem.targets[rows], len(rows)

    def closure():
        optimiser.zero_grad(set_to_none=True)
        total = settings.anchor_weight * (latent - start).pow(2).sum()
        total.backward()
        for lo in range(0, n_frames, problem.batch):
            loss = problem.render(latent, params[lo : lo + problem.batch]) - targets[lo : lo + problem.batch]
            loss = loss.pow(2).flatten(1).mean(1).sum() / n_frames
            loss.backward()
            total = total + loss.detach()
        return total

    optimiser.step(closure)
    return latent.detach()
