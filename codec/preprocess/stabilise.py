"""Rigid-head stabilisation: a robust parametric (affine) optical-flow registration of a frame to a key frame,
in the spirit of Black & Yacoob's parametric flow with a robust error norm.

Why our own estimator and not cv2.findTransformECC: the face carries non-rigid motion (mouth, eyes, brows) that
must not pull the rigid fit. ECC weighs every masked pixel equally; here an iteratively re-weighted
inverse-compositional Lucas-Kanade solves for the six affine parameters with Cauchy weights whose scale comes from
the residuals' median absolute deviation, so pixels that move on their own (a mouth opening) lose their vote even
inside the mask. A gain and bias are fitted alongside (auto-exposure is not motion). It runs coarse-to-fine on
a 3-level pyramid of the aligned crop (working size 256 px), so it catches motions of several pixels between the
key frame and the current one.

All images here are grayscale float32 in aligned-crop coordinates; transforms are 3x3 arrays mapping template
pixels to frame-crop pixels (pixel centres at integers).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

PYRAMID_LEVELS = 3
MAX_ITERATIONS = 40
# Stop when the update moves no template corner by more than this (pixels at the level being solved).
CONVERGED_PX = 1e-3
CAUCHY_C = 2.385  # the Cauchy norm's 95%-efficiency constant, in units of the robust residual scale
MAD_TO_SIGMA = 1.4826


@dataclasses.dataclass(frozen=True)
class Registration:
    warp: np.ndarray  # 3x3: template pixel -> frame-crop pixel
    residual_rms: float  # grey levels (0-255), over the mask, after the fit, unweighted by the robust norm
    converged: bool
    gain: float = 1.0  # image ~ gain * template + bias over the mask (exposure / lighting change)
    bias: float = 0.0


def _affine(params: np.ndarray) -> np.ndarray:
    p = params
    return np.array([[1 + p[0], p[2], p[4]], [p[1], 1 + p[3], p[5]], [0.0, 0.0, 1.0]])


def _scale(factor: float) -> np.ndarray:
    return np.diag([factor, factor, 1.0])


def _level_size_scale(level: int) -> float:
    return 0.5 ** level


def _pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    result = [image]
    for _ in range(levels - 1):
        result.append(cv2.pyrDown(result[-1]))
    return result


def _mask_pyramid(mask: np.ndarray, levels: int) -> list[np.ndarray]:
    result = [mask.astype(np.float32)]
    for _ in range(levels - 1):
        shrunk = cv2.resize(result[-1], (result[-1].shape[1] // 2 + result[-1].shape[1] % 2,
                                         result[-1].shape[0] // 2 + result[-1].shape[0] % 2),
                            interpolation=cv2.INTER_AREA)
        result.append((shrunk > 0.99).astype(np.float32))  # keep only pixels fully inside the region
    return result


def _steepest_descent(template: np.ndarray) -> np.ndarray:
    """N x 6 Jacobian images of the template under the affine warp (inverse compositional: computed once)."""
    gx = cv2.Sobel(template, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8)
    gy = cv2.Sobel(template, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8)
    ys, xs = np.mgrid[0:template.shape[0], 0:template.shape[1]].astype(np.float32)
    return np.stack([gx * xs, gy * xs, gx * ys, gy * ys, gx, gy], axis=-1).reshape(-1, 6)


def _cauchy_weights(error: np.ndarray, inside: np.ndarray) -> np.ndarray:
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(error[inside]))) + 1e-3
    return 1.0 / (1.0 + (error / (CAUCHY_C * sigma)) ** 2)


def _gain_and_bias(warped: np.ndarray, template: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Weighted least-squares fit warped ~ gain * template + bias: camera auto-exposure and lighting drift
    change brightness and contrast between frames, which is not motion and must not look like a failed fit."""
    total = weights.sum()
    if total <= 0:
        return 1.0, 0.0
    mean_t = (weights * template).sum() / total
    mean_w = (weights * warped).sum() / total
    var_t = (weights * (template - mean_t) ** 2).sum() / total
    if var_t < 1e-6:
        return 1.0, float(mean_w - mean_t)
    gain = (weights * (template - mean_t) * (warped - mean_w)).sum() / total / var_t
    gain = float(np.clip(gain, 0.5, 2.0))  # beyond this the frame is not the same scene lit differently
    return gain, float(mean_w - gain * mean_t)


def _warp_back(image: np.ndarray, warp: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.warpAffine(image, warp[:2], (shape[1], shape[0]), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE).reshape(-1).astype(np.float64)


def _solve_level(template, image, mask, warp, steepest, robust: bool) -> tuple[np.ndarray, float, float, bool]:
    """Alternate a photometric (gain, bias) fit with an inverse-compositional affine step, robustly weighted."""
    height, width = template.shape
    flat_template = template.reshape(-1).astype(np.float64)
    inside = mask.reshape(-1) > 0
    sd = steepest[inside]
    weights = inside.astype(np.float64)
    gain, bias = 1.0, 0.0
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], dtype=np.float64).T
    for _ in range(MAX_ITERATIONS):
        warped = _warp_back(image, warp, template.shape)
        gain, bias = _gain_and_bias(warped, flat_template, weights)
        error = (warped - bias) / gain - flat_template
        weights = (_cauchy_weights(error, inside) if robust else 1.0) * inside
        w = weights[inside]
        hessian = sd.T @ (sd * w[:, None])
        step = np.linalg.solve(hessian + 1e-9 * np.eye(6), sd.T @ (w * error[inside]))
        update = _affine(step)
        warp = warp @ np.linalg.inv(update)
        if np.abs((update - np.eye(3)) @ corners).max() < CONVERGED_PX:
            return warp, gain, bias, True
    return warp, gain, bias, False


def register_affine(template: np.ndarray, image: np.ndarray, mask: np.ndarray,
                    initial: np.ndarray | None = None, robust: bool = True) -> Registration:
    """Affine warp W with image(W x) ~ template(x) over `mask`, robust to pixels that move non-rigidly
    (robust=False: plain least squares, kept to show what the robust norm buys)."""
    template = template.astype(np.float32)
    image = image.astype(np.float32)
    warp = np.eye(3) if initial is None else np.asarray(initial, dtype=np.float64)
    templates = _pyramid(template, PYRAMID_LEVELS)
    images = _pyramid(image, PYRAMID_LEVELS)
    masks = _mask_pyramid(mask, PYRAMID_LEVELS)
    converged, gain, bias = False, 1.0, 0.0
    for level in reversed(range(PYRAMID_LEVELS)):
        to_level = _scale(_level_size_scale(level))
        level_warp = to_level @ warp @ np.linalg.inv(to_level)
        level_warp, gain, bias, converged = _solve_level(templates[level], images[level], masks[level], level_warp,
                                                         _steepest_descent(templates[level]), robust)
        warp = np.linalg.inv(to_level) @ level_warp @ to_level
    inside = mask.reshape(-1) > 0
    if not inside.any():
        return Registration(warp, float("inf"), False, gain, bias)
    corrected = (_warp_back(image, warp, template.shape) - bias) / gain
    residual = float(np.sqrt(np.mean((corrected[inside] - template.reshape(-1)[inside]) ** 2)))
    return Registration(warp, residual, converged, gain, bias)
