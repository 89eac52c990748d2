"""Fitting the linear pose editor: yaw and pitch directions in W+, from generator samples and a pose estimate.

1. Sample W = mapping(z) and render G(W) (all W+ rows equal: the generator's own distribution).
2. Estimate each image's (yaw, pitch) with a pose estimator.
3. Regress the estimate on W (least squares): the coefficient vector beta points where the estimate grows.
4. Calibrate: the direction d = beta / |beta|^2 predicts one unit per step, but correlation is not response, so
   walk sample latents along d (on the editor's rows only), measure the estimator's actual slope, and rescale d
   so that one editor unit moves the measured pose by exactly one unit.

Estimators:
- "landmarks": dlib's 68 points on the rendered face; yaw and pitch in degrees from the nose tip's offset against
  the face outline and the eye-mouth line (a geometric proxy, good to a few degrees near frontal; the official
  path uses StyleFlow, whose units are the Face API's degrees, and this keeps the linear editor on that scale).
- "moments": the intensity centroid of the image (x for yaw, y for pitch) in units of `MOMENT_UNIT_PX` pixels at
  64x64. The shipped tiny generator is untrained (no faces in its pictures), so its "head pose" is defined as this
  coarse, global, spatially smooth change: it behaves like a pose for the encoder (a low-dimensional geometric
  change, visible everywhere, controlled by the coarse rows) and it is measurable without landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

PoseEstimator = Callable[[torch.Tensor], torch.Tensor]  # images [B,3,H,W] in [-1,1] -> [B, 2] (yaw, pitch)

# One tiny-model pose unit = this many pixels of centroid shift at 64x64, so the nominal -20..20 range spans
# +-2 px: inside the range where the centroid responds linearly to the coarse rows (measured: +-2.7 px).
MOMENT_UNIT_PX = 0.1
# Coarse W+ rows a pose edit touches (StyleFlow keeps its edit on rows 0-3, DESIGN §7).
POSE_ROWS = (0, 1, 2, 3)


def moments_pose(images: torch.Tensor) -> torch.Tensor:
    """Intensity centroid offset from the image centre, in MOMENT_UNIT_PX at 64x64 scale -> [B, 2]."""
    luminance = ((images.mean(1) + 1) / 2).clamp_min(0)
    height, width = luminance.shape[-2:]
    xs = torch.arange(width, dtype=luminance.dtype, device=luminance.device) - (width - 1) / 2
    ys = torch.arange(height, dtype=luminance.dtype, device=luminance.device) - (height - 1) / 2
    mass = luminance.sum((1, 2)).clamp_min(1e-6)
    cx = (luminance * xs).sum((1, 2)) / mass * (64.0 / width)
    cy = (luminance * ys[:, None]).sum((1, 2)) / mass * (64.0 / height)
    return torch.stack([cx, cy], 1) / MOMENT_UNIT_PX


def landmarks_pose(images: torch.Tensor) -> torch.Tensor:
    """Yaw and pitch in degrees from dlib's 68 landmarks (NaN where no face is found)."""
    from codec.preprocess.landmarks import detect_landmarks

    out = []
    for image in images:
        rgb = ((image.permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
        try:
            points = detect_landmarks(rgb)
        except Exception:  # no face in this sample: the fit skips it
            points = None
        out.append(_pose_from_landmarks(points) if points is not None else (float("nan"), float("nan")))
    return torch.tensor(out, dtype=torch.float32)


def _pose_from_landmarks(points: np.ndarray) -> tuple[float, float]:
    nose_tip = points[30]
    left_outline, right_outline = points[0], points[16]
    eyes = points[36:48].mean(0)
    mouth = points[48:68].mean(0)
    half_width = max(np.linalg.norm(right_outline - left_outline) / 2, 1e-6)
    centre_x = (left_outline[0] + right_outline[0]) / 2
    yaw = np.degrees(np.arcsin(np.clip((nose_tip[0] - centre_x) / half_width, -1, 1)))
    # Where the nose tip sits between eyes and mouth: 0.55 on a frontal face (dlib's mean shape), more when the
    # head tilts down.
    ratio = (nose_tip[1] - eyes[1]) / max(mouth[1] - eyes[1], 1e-6)
    pitch = np.degrees(np.arcsin(np.clip((ratio - 0.55) * 2.0, -1, 1)))
    return float(yaw), float(pitch)


ESTIMATORS: dict[str, PoseEstimator] = {"moments": moments_pose, "landmarks": landmarks_pose}


@dataclass(frozen=True)
class DirectionFit:
    directions: torch.Tensor  # [2, n_latent, style_dim], zero outside `rows`
    rows: tuple[int, ...]
    r_squared: tuple[float, float]  # of the regression of (yaw, pitch) on W
    measured_slope: tuple[float, float]  # estimator units per editor unit after calibration (1.0 when exact)
    samples_used: int


def fit_pose_directions(
    generator: torch.nn.Module,
    estimator: PoseEstimator,
    samples: int = 2000,
    rows: Sequence[int] = POSE_ROWS,
    seed: int = 0,
    batch: int = 200,
    calibration_step: float = 2.0,
) -> DirectionFit:
    rows = tuple(rows)
    generator_rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = torch.randn(samples, generator.config.style_dim, generator=generator_rng)
        w = torch.cat([generator.mapping(z[i : i + batch]) for i in range(0, samples, batch)])
        pose = torch.cat([estimator(_render_w(generator, w[i : i + batch])) for i in range(0, samples, batch)])
    valid = torch.isfinite(pose).all(1)
    w, pose = w[valid], pose[valid].double()
    centred = (w - w.mean(0)).double()
    design = torch.cat([centred, torch.ones(len(w), 1, dtype=torch.float64)], 1)
    beta = torch.linalg.lstsq(design, pose - pose.mean(0)).solution[:-1]  # [dim, 2]
    predicted = centred @ beta
    r_squared = 1 - ((predicted - (pose - pose.mean(0))) ** 2).mean(0) / pose.var(0)
    directions = torch.zeros(2, generator.n_latent, w.shape[1])
    slopes = []
    for k in range(2):
        d = (beta[:, k] / beta[:, k].pow(2).sum()).float()
        slope = _measured_slope(generator, estimator, w[:64], d, rows, k, calibration_step)
        directions[k, list(rows)] = d / slope
        slopes.append(_measured_slope(generator, estimator, w[:64], d / slope, rows, k, calibration_step))
    return DirectionFit(directions, rows, (float(r_squared[0]), float(r_squared[1])),
                        (float(slopes[0]), float(slopes[1])), int(valid.sum()))


def _render_w(generator: torch.nn.Module, w: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
    w_plus = w[:, None].expand(-1, generator.n_latent, -1)
    return generator(w_plus if offsets is None else w_plus + offsets)


def _measured_slope(generator, estimator, w, direction, rows, component, step) -> float:
    """Mean change of the estimate per unit along `direction` (central difference over +-step)."""
    offsets = torch.zeros(generator.n_latent, w.shape[1])
    offsets[list(rows)] = direction
    with torch.no_grad():
        ahead = estimator(_render_w(generator, w, step * offsets))[:, component]
        behind = estimator(_render_w(generator, w, -step * offsets))[:, component]
    change = (ahead - behind) / (2 * step)
    return float(change[torch.isfinite(change)].mean())
