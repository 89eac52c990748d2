"""The compact ID latent's quantisation (format 1.3 `idpc`): one step per W+ row, as coarse as a PSNR budget allows.

Each row's step is inversely proportional to how much the picture moves per unit change of that row (measured
by central differences along a random unit direction, on a few frames), so every row adds the same noise; one
common factor is then lowered (in steps of 2^(1/4)) from the noise model's estimate until the measured loss - the
clip's PSNR with the float32 latent minus its PSNR with the rebuilt compact one, parameters unquantised, on up to
`LOSS_FRAMES` frames spread over the clip - is at most the budget.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from codec.bitstream.latent import CompactLatent, LatentBasis, compact_latent, reconstruct
from codec.encoder.frames import FrameSource
from codec.encoder.rate import levels_rms, probe_rows, psnr_of_mse

log = logging.getLogger(__name__)

DEFAULT_LATENT_LOSS_DB = 0.02  # the compact latent's share of the 0.05 dB the issue allows
LOSS_FRAMES = 32
ROW_PROBE_STEP = 0.05  # W units along a random unit direction (a W row spans a few units)
MAX_TRIES = 16


@dataclass(frozen=True)
class LatentChoice:
    compact: CompactLatent
    latent: np.ndarray  # float32 (R, D): what a decoder rebuilds
    loss_db: float  # measured against the float32 latent
    psnr_exact_db: float


def row_sensitivity(render_with: Callable[[np.ndarray, np.ndarray], torch.Tensor], latent: np.ndarray,
                    params: np.ndarray, seed: int = 0) -> np.ndarray:
    """(R,) the picture's RMS change (8-bit levels) per unit norm change of each latent row."""
    base = probe_rows(params)
    rng = np.random.default_rng(seed)
    out = np.zeros(len(latent))
    for r in range(len(latent)):
        direction = rng.normal(size=latent.shape[1])
        move = np.zeros_like(latent)
        move[r] = ROW_PROBE_STEP * direction / np.linalg.norm(direction)
        out[r] = levels_rms(render_with(latent + move, base), render_with(latent - move, base)) / (2 * ROW_PROBE_STEP)
    return out


def sample_mse(render_with: Callable[[np.ndarray, np.ndarray], torch.Tensor], latent: np.ndarray,
               targets: FrameSource, params: np.ndarray) -> float:
    index = np.unique(np.linspace(0, len(params) - 1, min(LOSS_FRAMES, len(params))).round().astype(int))
    images = render_with(latent, params[index])
    target = torch.cat([targets.window(int(i), int(i) + 1) for i in index]).to(images.device, images.dtype)
    return float(((images - target).double() ** 2).mean())


def choose_compact_latent(render_with: Callable[[np.ndarray, np.ndarray], torch.Tensor], latent: np.ndarray,
                          targets: FrameSource, params: np.ndarray, basis: LatentBasis, basis_sha256: bytes,
                          max_loss_db: float = DEFAULT_LATENT_LOSS_DB) -> LatentChoice:
    """`render_with(latent (R, D), params (n, 35)) -> images`: quantise `latent` within `max_loss_db`."""
    latent = np.asarray(latent, np.float32)
    exact_mse = sample_mse(render_with, latent, targets, params)
    sensitivity = np.maximum(row_sensitivity(render_with, latent, params), 1e-6)
    rows, dim = latent.shape
    # the model: uniform rounding of all D coefficients of row r at step d_r moves the picture by
    # sensitivity_r * d_r * sqrt(D / 12) RMS; rows share the budget's noise equally
    noise = math.sqrt(exact_mse * (10 ** (max_loss_db / 10) - 1)) * 127.5
    factor = noise * math.sqrt(12.0 / (rows * dim)) * 2.0  # start coarser than the model: it is checked below
    for _ in range(MAX_TRIES):
        steps = (factor / sensitivity).astype(np.float32)
        compact = compact_latent(latent, basis, basis_sha256, steps)
        rebuilt = reconstruct(compact, basis)
        loss = psnr_of_mse(exact_mse) - psnr_of_mse(sample_mse(render_with, rebuilt, targets, params))
        log.info("compact ID latent, row steps %.3g..%.3g: loss %.4f dB", steps.min(), steps.max(), loss)
        if loss <= max_loss_db:
            break
        factor /= 2.0 ** 0.25
    return LatentChoice(compact, rebuilt, float(loss), psnr_of_mse(exact_mse))

