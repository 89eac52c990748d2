"""Robust affine registration on real pixels with a known warp."""

from __future__ import annotations

import cv2
import numpy as np

from codec.preprocess.stabilise import register_affine
from preprocess_fixtures import base_photo

SIZE = 256


def _template() -> np.ndarray:
    gray = cv2.cvtColor(base_photo(), cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray[20:270, 90:340], (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)


def _moved(template: np.ndarray, warp: np.ndarray, noise: float, seed: int = 0) -> np.ndarray:
    """An image with image(warp x) = template(x): the template pushed forward by `warp`, plus noise."""
    image = cv2.warpAffine(template, warp[:2], (SIZE, SIZE), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return image + np.random.default_rng(seed).normal(0, noise, image.shape).astype(np.float32)


def _corner_error(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Largest displacement between two warps over the mask's bounding box corners, in pixels."""
    rows, cols = np.nonzero(mask)
    corners = np.array([[cols.min(), rows.min(), 1], [cols.max(), rows.min(), 1],
                        [cols.min(), rows.max(), 1], [cols.max(), rows.max(), 1]], dtype=np.float64).T
    return float(np.abs((a - b) @ corners).max())


def _mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.ellipse(mask, (128, 128), (80, 100), 0, 0, 360, 1, -1)
    return mask


def test_recovers_a_known_affine_warp_to_a_twentieth_of_a_pixel():
    template = _template()
    angle = np.radians(3.0)
    truth = np.array([[1.03 * np.cos(angle), -np.sin(angle), 4.5], [np.sin(angle), 0.98 * np.cos(angle), -3.2],
                      [0, 0, 1]])
    result = register_affine(template, _moved(template, truth, noise=2.0), _mask())
    error = _corner_error(result.warp, truth, _mask())
    print(f"affine recovery: max corner error {error:.4f} px, residual {result.residual_rms:.2f} grey levels")
    assert result.converged
    assert error < 0.05  # bilinear resampling + noise sigma 2 on a 256² textured face: ~0.01 px expected
    # residual ~ noise of both images (sigma 2 each -> 2.8) plus interpolation: a failed fit leaves > 15
    assert result.residual_rms < 4.0


def test_robust_norm_ignores_a_region_that_moves_on_its_own():
    # A "mouth" patch inside the mask is replaced with other content: the rigid fit must not follow it.
    template = _template()
    truth = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 1.5], [0, 0, 1]])
    image = _moved(template, truth, noise=2.0)
    image[170:215, 95:165] = np.flipud(image[170:215, 95:165]) * 0.6 + 80  # non-rigid change, 12% of the mask
    mask = _mask()
    robust = register_affine(template, image, mask)
    error = _corner_error(robust.warp, truth, mask)
    plain_error = _corner_error(register_affine(template, image, mask, robust=False).warp, truth, mask)
    print(f"with a non-rigid patch: max corner error {error:.4f} px robust, {plain_error:.4f} px least squares")
    assert error < 0.15
    assert plain_error > 3 * error  # the robust norm is what keeps the patch from pulling the fit


def test_exposure_change_is_not_motion():
    # The camera's auto-exposure brightens the frame by 25% and lifts the black level: same geometry.
    template = _template()
    truth = np.array([[1.0, 0.01, -2.5], [-0.01, 1.0, 3.0], [0, 0, 1]])
    image = _moved(template, truth, noise=2.0) * 1.25 + 12
    result = register_affine(template, image, _mask())
    error = _corner_error(result.warp, truth, _mask())
    print(f"exposure x1.25 +12: corner error {error:.4f} px, gain {result.gain:.3f}, bias {result.bias:.1f}, "
          f"residual {result.residual_rms:.2f}")
    assert error < 0.05 and abs(result.gain - 1.25) < 0.02
    assert result.residual_rms < 4.0  # as without the exposure change: it must not trigger a new key frame
