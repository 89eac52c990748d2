"""Rate-distortion control: each parameter's quantiser step from how much the picture moves with it, one quality
knob, and the measured cost of quantising in decoded PSNR.

Model. Rounding parameter k to a step D_k adds an error uniform in +-D_k/2, which moves the picture by about
s_k * D_k / sqrt(12) (RMS, 8-bit levels), s_k being the picture's RMS change per unit of the parameter. The
errors of the 35 parameters are independent, so they add in power: a step D_k = noise * sqrt(12 / 35) / s_k gives
every parameter the same share and a total quantisation noise of `noise` levels RMS. (Other shares were tried on
the 64-frame closed-loop clip: steps following s_k^-0.6 .. s_k^-1.2, and holding a value while it stays within
0.7-1.2 steps of the coder's prediction; none spent fewer bytes at the same measured loss.)

The quality knob sets that noise relative to the clip's own re-synthesis error (the RMS difference between the
frames and their rendering from the exact parameters), `noise_levels(quality, fit_error)`: a tenth of it at the
default quality 50, which costs 10 log10(1 + 0.1^2) = 0.043 dB of decoded PSNR on any clip; halved every +10
(0.011 dB at 60, 0.17 dB at 30). Noise well below what the generator already misses buys nothing: a face the
model re-synthesises at 22 dB tolerates 10 times the noise of one at 42 dB for the same loss. The noise never
goes below 0.1 levels at 50 (`NOISE_FLOOR_AT_DEFAULT`, a third of the 8-bit output's own rounding noise), so a
near-perfect fit does not ask for steps finer than any picture shows.
Sensitivities: the picture's derivative for each of the 35 parameters, by central differences on a few frames of
the clip (roll always applied: paste-back turns the face by it). Measured on the 16-frame closed-loop clip at a
noise of 0.1 levels: 15.6 bytes/frame (arith) at 0.024 dB, the model's own prediction being 0.026 dB. The alternative the
issue suggested, the channel table's gamma_region over the channel's spread (eq. 5's LPIPS per unit, calibrated to
pixels by one joint measurement; `use_gammas=True`), spent 15.1 bytes/frame for 0.087 dB on the same clip: eq. 5
is measured on other faces and in LPIPS, and its ratios to this face's pixel derivatives ran from 0.1 to 2.

Loss: the clip's PSNR (its mean squared error over all frames, 8-bit peak) rendered from the exact parameters
minus that rendered from the quantised ones, both against the frames the encoder fitted; `--max-loss-db D` raises
the quality until the measured loss is at most D (and starts from the quality the model predicts for D).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from codec.bitstream import N_PARAMS, QuantTable, SaturationReport, dequantise, quantise
from codec.decoder.render import apply_roll, render
from codec.encoder.frames import FrameSource, windows
from codec.errors import InputError

log = logging.getLogger(__name__)

N_ALPHA = 32
YAW, PITCH, ROLL = 32, 33, 34
DEFAULT_QUALITY = 50.0
QUALITY_RANGE = (0.0, 100.0)
NOISE_RATIO_AT_DEFAULT = 0.1  # quantisation noise / the clip's re-synthesis error (RMS) at quality 50: 0.043 dB
NOISE_FLOOR_AT_DEFAULT = 0.1  # 8-bit levels RMS: the least noise quality 50 asks for, however good the fit
QUALITY_PER_HALVING = 10.0
STEP_RANGE = (2.0**-12, 8.0)  # no finer than int16 needs, no coarser than a parameter's whole useful range
PROBE_FRAMES = 4  # frames the sensitivities are measured on
POSE_PROBE_STEP = (0.5, 0.5, 0.5)  # yaw, pitch (editor units) and roll (degrees) for the central differences
OFFSET_PROBE_STEP = 0.25  # offsets move by this many channel spreads for their measurement
QUALITY_SEARCH_STEP = 5.0  # --max-loss-db: quality added after each measured miss
MAX_QUALITY_TRIES = 12
CALIBRATION_TOLERANCE = 0.1  # log2: a measured noise within 7 % of the model's needs no correction
CALIBRATION_RANGE = (0.5, 2.0)  # the most one correction moves the steps


def noise_at_default(fit_error: float) -> float:
    """The quantisation noise (8-bit levels RMS) at quality 50 for a clip re-synthesised with `fit_error` levels
    RMS from its exact parameters."""
    return max(NOISE_FLOOR_AT_DEFAULT, NOISE_RATIO_AT_DEFAULT * float(fit_error))


def noise_levels(quality: float, fit_error: float) -> float:
    """The quantisation noise (8-bit levels RMS, model prediction) that a quality asks for."""
    return noise_at_default(fit_error) * 2.0 ** ((DEFAULT_QUALITY - quality) / QUALITY_PER_HALVING)


def quality_for_noise(noise: float, fit_error: float) -> float:
    return DEFAULT_QUALITY - QUALITY_PER_HALVING * math.log2(noise / noise_at_default(fit_error))


def check_quality(quality: float) -> float:
    if not QUALITY_RANGE[0] <= quality <= QUALITY_RANGE[1]:
        raise InputError(f"quality {quality:g} outside {QUALITY_RANGE[0]:g}..{QUALITY_RANGE[1]:g}")
    return float(quality)


def quantiser_steps(sensitivity: np.ndarray, noise: float) -> np.ndarray:
    """(35,) steps giving each parameter an equal share of `noise` levels RMS (float32, clamped to STEP_RANGE)."""
    share = noise * math.sqrt(12.0 / N_PARAMS)
    with np.errstate(divide="ignore"):
        steps = share / np.asarray(sensitivity, np.float64)
    return np.clip(np.nan_to_num(steps, nan=STEP_RANGE[1], posinf=STEP_RANGE[1]), *STEP_RANGE).astype(np.float32)


@dataclass
class ClipRenderer:
    """Renders (n, 35) parameters the way the decoder does, roll applied when the targets carry it."""

    generator: torch.nn.Module
    editor: object
    id_latent: torch.Tensor  # [rows, dim], the latent the stream will carry
    style_indices: Sequence[tuple[int, int]]
    with_roll: bool

    @torch.no_grad()
    def __call__(self, params: np.ndarray) -> torch.Tensor:
        device = self.id_latent.device
        p = torch.as_tensor(np.asarray(params, np.float32), device=device)
        images = render(self.generator, self.editor, self.id_latent, self.style_indices, p[:, :N_ALPHA],
                        p[:, YAW], p[:, PITCH])
        return apply_roll(images, p[:, ROLL]) if self.with_roll else images


def levels_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    """RMS difference of two image batches in [-1, 1], in 8-bit levels."""
    return float(((a - b).double() ** 2).mean().sqrt()) * 127.5


def probe_rows(params: np.ndarray) -> np.ndarray:
    index = np.unique(np.linspace(0, len(params) - 1, min(PROBE_FRAMES, len(params))).round().astype(int))
    return np.asarray(params, np.float64)[index]


def central_difference(renderer: Callable[[np.ndarray], torch.Tensor], base: np.ndarray, move: np.ndarray) -> float:
    """RMS picture change (levels) per unit length of `move` (35,), by a central difference at each base row."""
    change = levels_rms(renderer(base + move), renderer(base - move)) / 2.0
    return change / float(np.linalg.norm(move))


def parameter_sensitivity(renderer: Callable[[np.ndarray], torch.Tensor], params: np.ndarray,
                          gammas: Sequence[float | None], spread: np.ndarray, use_gammas: bool = False,
                          seed: int = 0) -> np.ndarray:
    """(35,) the picture's RMS change (8-bit levels) per unit of each parameter, on a few of the clip's frames.
    `renderer` should apply roll. The offsets are measured one by one, or with `use_gammas` (and a table that has
    them) scaled from eq. 5's gammas by one joint measurement."""
    base = probe_rows(params)
    sensitivity = np.zeros(N_PARAMS)
    for k, step in zip((YAW, PITCH, ROLL), POSE_PROBE_STEP):
        move = np.zeros(N_PARAMS)
        move[k] = step
        sensitivity[k] = central_difference(renderer, base, move)
    spread = np.asarray(spread, np.float64)
    if use_gammas and all(g is not None and g > 0 for g in gammas):
        per_unit = np.asarray(gammas, np.float64) / spread  # eq. 5: LPIPS per unit offset, up to a common factor
        rng = np.random.default_rng(seed)
        # all offsets at once, each by OFFSET_PROBE_STEP spreads with a random sign: the power of the change is
        # c^2 * sum(per_unit^2 * move^2) (cross terms average out), which fixes the common factor c
        factors = []
        for _ in range(2):
            move = np.zeros(N_PARAMS)
            move[:N_ALPHA] = OFFSET_PROBE_STEP * spread * rng.choice([-1.0, 1.0], N_ALPHA)
            change = levels_rms(renderer(base + move), renderer(base - move)) / 2.0
            factors.append(change / math.sqrt(float(np.sum((per_unit * move[:N_ALPHA]) ** 2))))
        sensitivity[:N_ALPHA] = float(np.mean(factors)) * per_unit
    else:
        for k in range(N_ALPHA):
            move = np.zeros(N_PARAMS)
            move[k] = OFFSET_PROBE_STEP * spread[k]
            sensitivity[k] = central_difference(renderer, base, move)
    return sensitivity


@dataclass(frozen=True)
class QuantisationLoss:
    """The clip's PSNR (dB, its MSE over all frames) from the exact and from the quantised parameters."""

    psnr_exact_db: float
    psnr_quantised_db: float

    @property
    def loss_db(self) -> float:
        return self.psnr_exact_db - self.psnr_quantised_db


def psnr_of_mse(mse: float) -> float:
    return 10.0 * math.log10(4.0 / max(mse, 1e-20))


def clip_mse(renderer: Callable[[np.ndarray], torch.Tensor], targets: FrameSource, params: np.ndarray,
             window: int) -> float:
    total, count = 0.0, 0
    for start, stop in windows(len(targets), window):
        images = renderer(params[start:stop])
        target = targets.window(start, stop).to(images.device, images.dtype)
        total += float(((images - target).double() ** 2).sum())
        count += images.numel()
    return total / count


@dataclass(frozen=True)
class QuantisationChoice:
    table: QuantTable
    records: np.ndarray  # int16 (n, 35)
    saturation: SaturationReport
    quality: float
    loss: QuantisationLoss
    steps: np.ndarray  # (35,) the steps asked for (the table's scale is never finer)
    calibration: float = 1.0  # the noise measured at the model's steps over the noise they were meant to give


def noise_for_loss(loss_db: float, fit_error: float) -> float:
    """The quantisation noise (levels RMS) that costs `loss_db` on a clip re-synthesised with `fit_error` levels
    RMS, or that a measured loss implies: the model's loss 10 log10(1 + noise^2 / fit_error^2), inverted."""
    return fit_error * math.sqrt(max(10.0 ** (loss_db / 10.0) - 1.0, 0.0))


def _quantised_at(renderer: Callable[[np.ndarray], torch.Tensor], targets: FrameSource, params: np.ndarray,
                  sensitivity: np.ndarray, quality: float, calibration: float, fit_error: float, exact_mse: float,
                  window: int) -> QuantisationChoice:
    """`params` quantised with the steps for `quality`'s noise over `calibration`, and the loss measured."""
    steps = quantiser_steps(sensitivity, noise_levels(quality, fit_error) / calibration)
    table = QuantTable.from_data(params, steps=steps)
    records, _, saturation = quantise(params, table)
    quantised_mse = clip_mse(renderer, targets, dequantise(records, table), window)
    loss = QuantisationLoss(psnr_of_mse(exact_mse), psnr_of_mse(quantised_mse))
    return QuantisationChoice(table, records, saturation, quality, loss, steps, calibration)


def choose_quantisation(renderer: Callable[[np.ndarray], torch.Tensor], targets: FrameSource, params: np.ndarray,
                        sensitivity: np.ndarray, quality: float = DEFAULT_QUALITY, max_loss_db: float | None = None,
                        window: int = 16) -> QuantisationChoice:
    """Quantise `params` at `quality`; with `max_loss_db`, at the lowest quality (from the model's estimate
    upwards, QUALITY_SEARCH_STEP at a time) whose measured loss is at most that.

    The first quantisation is measured against the model: when the noise it implies is off by more than
    CALIBRATION_TOLERANCE (sensitivities probed on a few frames, steps as coarse as a parameter's whole swing),
    every later step is scaled by the ratio once, so a quality costs the same loss on every clip (the real clip d0
    at quality 50: 0.051 dB measured where the model predicted 0.043)."""
    exact_mse = clip_mse(renderer, targets, params, window)
    fit_error = math.sqrt(exact_mse) * 127.5
    if max_loss_db is not None:
        if max_loss_db <= 0:
            raise InputError(f"--max-loss-db must be positive, got {max_loss_db:g}")
        quality = float(np.clip(quality_for_noise(noise_for_loss(max_loss_db, fit_error), fit_error),
                                *QUALITY_RANGE))
    calibration = 1.0
    for attempt in range(MAX_QUALITY_TRIES):
        choice = _quantised_at(renderer, targets, params, sensitivity, quality, calibration, fit_error, exact_mse,
                               window)
        loss = choice.loss
        log.info("quality %.1f: quantisation loss %.4f dB (%.2f -> %.2f dB)", quality, loss.loss_db,
                 loss.psnr_exact_db, loss.psnr_quantised_db)
        off = noise_for_loss(loss.loss_db, fit_error) / noise_levels(quality, fit_error)
        if attempt == 0 and off > 0 and abs(math.log2(off)) > CALIBRATION_TOLERANCE:
            calibration = float(np.clip(off, *CALIBRATION_RANGE))
            choice = _quantised_at(renderer, targets, params, sensitivity, quality, calibration, fit_error,
                                   exact_mse, window)
            log.info("quality %.1f: the noise model was off by x%.2f; corrected, loss %.4f dB", quality, off,
                     choice.loss.loss_db)
        if max_loss_db is None or choice.loss.loss_db <= max_loss_db or quality >= QUALITY_RANGE[1]:
            break
        quality = min(QUALITY_RANGE[1], quality + QUALITY_SEARCH_STEP)
    return choice
