"""GAN inversion: aligned frames -> W+ latents, one function whatever the inverter.

Two inverters sit behind `invert`:
- "e4e": a feed-forward encoder (the official e4e, or the tiny e4e-shaped one trained for the tiny generator);
  one encoder pass per frame, no generator forwards.
- "project": optimisation of W+ under LPIPS + L2 against the frame (no encoder needed). It starts from the
  encoder's answer when an encoder is given, else from the generator's mean latent; batches of consecutive frames
  start from the previous batch's last solution, since neighbouring frames have neighbouring latents.
The paper's ablation (ReStyle vs e4e) shows the method does not depend on the inverter, only on the latents
staying in the editable part of W+; the projector keeps W+ rows tied to a shared mean by a small penalty for that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch

from codec.encoder.cost import RenderCount
from codec.encoder.frames import FrameSource, as_frame_source, windows
from codec.encoder.losses import lpips_distance, masked_l2
from codec.encoder.progress import Progress, frame_bar

Encoder = Callable[[torch.Tensor], torch.Tensor]  # frames [B,3,R,R] in [-1,1] -> W+ [B, n_latent, dim]


@dataclass(frozen=True)
class ProjectSettings:
    # Refining the tiny e4e's answer (23.6 dB on held-out samples) takes it to 31.0 dB in 20 steps and 34.5 dB in
    # 50 (weights/tiny-64-e4e.json). 20 kept the whole encoder at 54 full-forward equivalents per frame, 82
    # with 50, when a forward+backward counted as one forward (each step costs about 3.6 full forwards, measured
    # by tools/bench_encode.py); starting from the mean latent instead needs several hundred steps.
    steps: int = 20
    learning_rate: float = 0.05
    batch_frames: int = 8
    lpips_weight: float = 1.0
    l2_weight: float = 1.0
    # Pull of each W+ row towards the frame's mean row: keeps the inversion editable (e4e's motivation).
    row_spread_weight: float = 1e-3


@dataclass(frozen=True)
class Inversion:
    w_plus: torch.Tensor  # [N, n_latent, dim]
    renders: RenderCount  # full-resolution generator renders spent (none for e4e alone)


def invert(
    frames: FrameSource | torch.Tensor,
    generator: torch.nn.Module,
    method: Literal["e4e", "project"],
    encoder: Encoder | None = None,
    lpips_module: torch.nn.Module | None = None,
    settings: ProjectSettings = ProjectSettings(),
    progress: Progress = True,
    previous: torch.Tensor | None = None,
) -> Inversion:
    """frames [N, 3, R, R] in [-1, 1] at the generator's resolution (read `settings.batch_frames` at a time) ->
    W+ latents. previous [1, n_latent, dim]: the solution of the frame before these (a clip inverted a window at a
    time), where the projector starts without an encoder."""
    if method == "e4e":
        if encoder is None:
            raise ValueError("inverter 'e4e' needs an encoder")
        bar = frame_bar(progress, len(as_frame_source(frames)), "inversion")
        with torch.no_grad():
            latents = in_batches(encoder, frames, settings.batch_frames, bar.update)
        bar.close()
        return Inversion(latents, RenderCount())
    if method != "project":
        raise ValueError(f"unknown inverter {method!r} (expected 'e4e' or 'project')")
    if lpips_module is None:
        raise ValueError("inverter 'project' needs an LPIPS module")
    init = None
    if encoder is not None:
        with torch.no_grad():
            init = in_batches(encoder, frames, settings.batch_frames)
    return project(generator, frames, lpips_module, settings, init=init, progress=progress, previous=previous)


def in_batches(fn: Callable[[torch.Tensor], torch.Tensor], frames: FrameSource | torch.Tensor,
               batch: int, done: Callable[[int], object] | None = None) -> torch.Tensor:
    """fn over consecutive windows of `batch` rows, concatenated (bounded memory on long clips: only one window of
    a FrameSource is ever read); `done(n)` is told of each window's n rows."""
    source = as_frame_source(frames)
    out = []
    for lo, hi in windows(len(source), batch):
        out.append(fn(source.window(lo, hi)))
        if done is not None:
            done(hi - lo)
    return torch.cat(out)


def project(
    generator: torch.nn.Module,
    frames: FrameSource | torch.Tensor,
    lpips_module: torch.nn.Module,
    settings: ProjectSettings = ProjectSettings(),
    init: torch.Tensor | None = None,
    progress: Progress = True,
    previous: torch.Tensor | None = None,
) -> Inversion:
    frames = as_frame_source(frames)
    n_frames = len(frames)
    mean_latent = generator.latent_avg.detach().reshape(1, 1, -1).expand(1, generator.n_latent, -1)
    out = []
    previous = mean_latent if previous is None else previous
    bar = frame_bar(progress, n_frames, "inversion")
    for lo, hi in windows(n_frames, settings.batch_frames):
        start = init[lo:hi] if init is not None else previous.expand(hi - lo, -1, -1)
        solved = _project_batch(generator, frames.window(lo, hi), lpips_module, start, settings)
        out.append(solved)
        previous = solved[-1:]
        bar.update(hi - lo)
    bar.close()
    return Inversion(torch.cat(out), RenderCount(forwards=n_frames, gradient_steps=n_frames * settings.steps))


def _project_batch(generator, targets, lpips_module, start, settings: ProjectSettings) -> torch.Tensor:
    w_plus = start.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([w_plus], lr=settings.learning_rate)
    best_loss = torch.full((targets.shape[0],), float("inf"), device=targets.device)
    best = w_plus.detach().clone()
    for step in range(settings.steps + 1):
        with torch.set_grad_enabled(step < settings.steps):  # the last render only scores the last step
            images = generator(w_plus)
            loss = settings.l2_weight * masked_l2(images, targets) + settings.lpips_weight * lpips_distance(
                lpips_module, images, targets
            )
        with torch.no_grad():
            better = loss < best_loss
            best_loss[better], best[better] = loss[better], w_plus[better]
        if step == settings.steps:
            break
        spread = (w_plus - w_plus.mean(1, keepdim=True)).pow(2).flatten(1).mean(1)
        for group in optimiser.param_groups:  # cosine ramp-down: large moves first, fine ones at the end
            group["lr"] = settings.learning_rate * 0.5 * (1 + math.cos(math.pi * step / settings.steps))
        optimiser.zero_grad(set_to_none=True)
        (loss + settings.row_spread_weight * spread).sum().backward()
        optimiser.step()
    return best
