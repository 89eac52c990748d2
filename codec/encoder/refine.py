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
from codec.encoder.frames import FrameSource, as_frame_source, windows
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
    """The renderer as a function of (L_ID, per-frame parameters), against the targets at one resolution. The
    targets are the frames area-resized to that resolution, read a batch at a time (a long clip's frames are never
    all resident), except the few that the L_ID pass fits on, which it reads on every evaluation."""

    def __init__(self, generator, editor, style_indices, spread, frames: FrameSource, size: int, batch_frames,
                 fit_roll, latent_rows: torch.Tensor):
        self.generator, self.editor, self.style_indices = generator, editor, style_indices
        self.fit_roll = fit_roll
        self.frames, self.size = frames, size
        self.spread, self.batch = spread, batch_frames
        self.render_batch = batch_frames  # renders per call without gradients; see `size_render_batch`
        self.stop_at = None if size == generator.config.size else size
        self.renders = RenderCount()
        self.latent_rows = latent_rows
        self.latent_targets = torch.cat([self.targets(int(t), int(t) + 1) for t in latent_rows])

    def targets(self, start: int, stop: int) -> torch.Tensor:
        """Frames [start, stop) at the comparison's resolution."""
        frames = self.frames.window(start, stop)
        if frames.shape[-1] == self.size:
            return frames
        return F.interpolate(frames, size=(self.size, self.size), mode="area")

    def render(self, latent: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """params [B, 2 + K (+ 1)]: yaw, pitch, alpha in units of each index's spread (, roll in degrees)."""
        if params.shape[0] > self.render_batch and not torch.is_grad_enabled():  # bounded memory (Jacobians)
            return torch.cat([self.render(latent, params[lo : lo + self.render_batch])
                              for lo in range(0, params.shape[0], self.render_batch)])
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
                (self.render(latent, params[lo:hi]) - self.targets(lo, hi)).pow(2).flatten(1).mean(1)
                for lo, hi in windows(len(params), self.batch)
            ])


def refine(
    generator: torch.nn.Module,
    editor: PoseEditor,
    id_latent: torch.Tensor,
    yaw: np.ndarray,
    pitch: np.ndarray,
    alpha: np.ndarray,
    frames: FrameSource | torch.Tensor,
    style_indices: Sequence[tuple[int, int]],
    channel_spread: np.ndarray,
    settings: RefineSettings = RefineSettings(),
    progress: bool = True,
    roll: np.ndarray | None = None,
) -> Refinement:
    """id_latent [n_latent, dim]; yaw, pitch [N]; alpha [N, K]; frames [N, 3, R, R] in [-1, 1] (area-resized to
    the comparison's resolution, read `settings.batch_frames` at a time); channel_spread [K] (each index's typical
    spread, the unit of its step).
    roll [N] degrees: fit each frame's roll too, starting there; `frames` are then the frames as they are, rolled
    (the renders are rolled as the decoder rolls them), not the upright crops."""
    frames = as_frame_source(frames)
    device = next(generator.parameters()).device
    size = min(settings.resolution or generator.config.size, generator.config.size)
    spread = torch.as_tensor(channel_spread, dtype=torch.float32, device=device)
    n_frames = len(frames)
    latent_rows = np.unique(np.linspace(0, n_frames - 1, min(settings.latent_frames, n_frames)).round())
    latent_rows = torch.as_tensor(latent_rows.astype(np.int64), device=device)
    problem = _Problem(generator, editor, style_indices, spread, frames, size, settings.batch_frames,
                       roll is not None, latent_rows)
    start = id_latent.detach().float().to(device)
    latent = start.clone()
    params = torch.cat([torch.as_tensor(np.stack([yaw, pitch], 1), dtype=torch.float32, device=device),
                        torch.as_tensor(alpha, dtype=torch.float32, device=device) / spread], 1)
    if roll is not None:
        params = torch.cat([params, torch.as_tensor(roll, dtype=torch.float32, device=device)[:, None]], 1)
    problem.render_batch = size_render_batch(problem, latent, params, settings.batch_frames)
    errors = problem.frame_errors(latent, params)
    history = [float(errors.mean())]
    passes = settings.rounds + int(settings.final_frame_pass and settings.rounds > 0)
    jacobians = _Jacobians(problem, settings)
    for round_no in tqdm(range(passes), desc="refine", unit="round", disable=not progress):
        if settings.fresh_jacobians:
            jacobians.forget()
        params, errors = _frame_pass(problem, latent, params, errors, jacobians, settings)
        history.append(float(errors.mean()))
        if round_no < settings.rounds:
            moved = _latent_pass(problem, latent, params, start, settings)
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


def renders_that_fit(render_bytes: int, free_bytes: int, least: int, most: int, share: float = 0.5) -> int:
    """Renders per batch: as many as `share` of the free memory holds at `render_bytes` each, within [least, most]."""
    return int(max(least, min(most, share * free_bytes // max(render_bytes, 1))))


def size_render_batch(problem: _Problem, latent: torch.Tensor, params: torch.Tensor, least: int) -> int:
    """How many renders a no-gradient call may batch. On a GPU: a Jacobian's renders (one per parameter, plus the
    point) in one batch when free memory allows (one launch sequence instead of several), measured from one
    render's peak memory. On the CPU batches buy little and the result stays what it was: `least`."""
    device = params.device
    if device.type != "cuda":
        return least
    counted = problem.renders  # the measurement is not the refinement's work
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        problem.render(latent, params[:1])
    render_bytes = torch.cuda.max_memory_allocated(device) - before
    free, _ = torch.cuda.mem_get_info(device)
    problem.renders = counted
    return renders_that_fit(render_bytes, free, least, most=params.shape[1] + 1)


class _Jacobians:
    """Per group of `jacobian_stride` frames: (J [pixels, count], Cholesky factor of the damped J^T J), measured by
    forward differences at the group's first frame, all perturbations of a frame rendered in one batch.

    A group's pair is measured when a frame pass first reaches the group, before that pass has moved the group's
    first frame: the same point as measuring every group at the start of the pass. With fresh Jacobians only the
    groups of the batch at hand are kept (config-f's J at 256² is 27 MB: all of a long clip's would grow with the
    clip); `fresh_jacobians=False` reuses every pass's first measurement, so it keeps them all."""

    def __init__(self, problem: _Problem, settings: RefineSettings):
        self.problem, self.settings = problem, settings
        self.groups: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def forget(self) -> None:
        self.groups = {}

    def solver(self, frame: int, latent, params) -> tuple[torch.Tensor, torch.Tensor]:
        group = frame // self.settings.jacobian_stride
        if group not in self.groups:
            if self.settings.fresh_jacobians:
                self.forget()
            self.groups[group] = self._measure(latent, params, group * self.settings.jacobian_stride)
        return self.groups[group]

    def _measure(self, latent, params, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        step = self.settings.difference_step
        eye = torch.eye(params.shape[1], device=params.device)
        with torch.no_grad():
            rendered = self.problem.render(latent, torch.cat([params[t : t + 1], params[t] + step * eye]))
            rendered = rendered.flatten(1)
            jacobian = ((rendered[1:] - rendered[:1]) / step).T
            normal = jacobian.T @ jacobian
            damped = normal + self.settings.damping * torch.diag(normal.diagonal()) + 1e-9 * eye
            return jacobian, torch.linalg.cholesky(damped)


def _frame_pass(problem: _Problem, latent, params, errors, jacobians: _Jacobians, settings: RefineSettings):
    """Levenberg-Marquardt chord steps on each frame's parameters, L_ID held (frames are independent given it),
    a batch of frames at a time. A frame keeps a step only if it lowers its own error."""
    params, errors = params.clone(), errors.clone()
    with torch.no_grad():
        for lo, hi in windows(len(params), problem.batch):
            rows = torch.arange(lo, hi, device=params.device)
            targets = problem.targets(lo, hi).flatten(1)
            current = problem.render(latent, params[rows]).flatten(1)
            solvers = [jacobians.solver(t, latent, params) for t in range(lo, hi)]
            for _ in range(settings.chord_iterations):
                steps = torch.stack([
                    torch.cholesky_solve((jacobian.T @ (targets[i] - current[i]))[:, None], factor)[:, 0]
                    for i, (jacobian, factor) in enumerate(solvers)
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


def _latent_pass(problem: _Problem, latent, params, start, settings: RefineSettings) -> torch.Tensor:
    """L-BFGS on L_ID over the frames `problem.latent_rows`, their parameters held."""
    latent = latent.clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([latent], lr=1.0, max_iter=settings.latent_evaluations, history_size=20,
                                  line_search_fn="strong_wolfe")
    params, targets, n_frames = params[problem.latent_rows], problem.latent_targets, len(problem.latent_rows)

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
