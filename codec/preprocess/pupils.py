"""Iris centres from pixels: dlib's 68 points outline the eye opening but not the iris, so gaze is invisible to
them. Within each eye opening the iris is the darkest disc of about 0.4 eye widths (an 11.7 mm iris in a ~30 mm
opening); a disc filter over the inverted image finds it, and a parabola through the peak gives subpixel
precision. Lashes and lid shadows are dark too, but thin: a disc-shaped average dilutes them.
"""

from __future__ import annotations

import cv2
import numpy as np

from codec.preprocess.landmarks import EYE_LEFT, EYE_RIGHT

IRIS_RADIUS_PER_EYE_WIDTH = 0.2


def _parabola_peak(minus: float, centre: float, plus: float) -> float:
    curvature = minus - 2 * centre + plus
    return 0.0 if curvature >= 0 else float(np.clip(0.5 * (minus - plus) / curvature, -0.5, 0.5))


def _locate_one(gray: np.ndarray, eye_points: np.ndarray) -> np.ndarray:
    width = float(np.linalg.norm(eye_points[3] - eye_points[0]))
    radius = max(IRIS_RADIUS_PER_EYE_WIDTH * width, 1.0)
    margin = int(np.ceil(2 * radius)) + 2
    x0, y0 = np.floor(eye_points.min(axis=0)).astype(int) - margin
    x1, y1 = np.ceil(eye_points.max(axis=0)).astype(int) + margin
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, gray.shape[1] - 1), min(y1, gray.shape[0] - 1)
    patch = gray[y0:y1 + 1, x0:x1 + 1].astype(np.float32)
    opening = np.zeros(patch.shape, np.uint8)
    cv2.fillPoly(opening, [np.round(eye_points - [x0, y0]).astype(np.int32)], 1)
    if opening.sum() == 0:
        return eye_points.mean(axis=0)
    # darkness relative to the brightest part of the opening (the sclera), zero outside the opening
    bright = np.percentile(patch[opening > 0], 95)
    darkness = np.clip(bright - patch, 0, None) * opening
    size = 2 * int(np.ceil(radius)) + 1
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)).astype(np.float32)
    response = cv2.filter2D(darkness, cv2.CV_32F, disc / disc.sum(), borderType=cv2.BORDER_CONSTANT)
    # the centre must lie in the opening (a lid shadow next to it can be as dark)
    response[opening == 0] = -np.inf
    row, col = np.unravel_index(int(np.argmax(response)), response.shape)
    dx = dy = 0.0
    if 0 < col < response.shape[1] - 1 and np.isfinite(response[row, col - 1:col + 2]).all():
        dx = _parabola_peak(*response[row, col - 1:col + 2])
    if 0 < row < response.shape[0] - 1 and np.isfinite(response[row - 1:row + 2, col]).all():
        dy = _parabola_peak(*response[row - 1:row + 2, col])
    return np.array([x0 + col + dx, y0 + row + dy])


def locate_pupils(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """2x2 iris centres (image-left eye first) in the pixel coordinates of `image` (RGB aligned crop), given the
    68 landmarks in the same coordinates."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    points = np.asarray(points, dtype=np.float64)
    return np.array([_locate_one(gray, points[eye]) for eye in (EYE_LEFT, EYE_RIGHT)])
