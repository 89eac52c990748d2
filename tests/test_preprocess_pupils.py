"""Iris centres from pixels, with known truth: irises painted at known places into the real eyes of the photo."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("dlib", reason="dlib (built from source) is needed for face landmarks")

from codec.preprocess.align import align_video  # noqa: E402
from codec.preprocess.landmarks import EYE_LEFT, EYE_RIGHT  # noqa: E402
from codec.preprocess.masks import region_masks  # noqa: E402
from codec.preprocess.pupils import locate_pupils  # noqa: E402
from preprocess_fixtures import make_clip  # noqa: E402


@pytest.fixture(scope="module")
def aligned():
    return next(align_video(make_clip(count=1, max_angle=0.0).frames, 512))


def _paint_eye(image, eye_points, centre, sclera=(225, 220, 215), iris=(70, 50, 40)):
    """Repaint the eye opening as sclera with a dark iris disc at `centre`, clipped by the lids."""
    width = np.linalg.norm(eye_points[3] - eye_points[0])
    opening = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(opening, [np.round(eye_points).astype(np.int32)], 1)
    disc = np.zeros_like(opening)
    cv2.circle(disc, tuple(np.round(centre * 16).astype(int)), int(0.2 * width * 16), 1, -1, cv2.LINE_AA, shift=4)
    image[opening > 0] = sclera
    image[(disc > 0) & (opening > 0)] = iris


def test_painted_irises_are_found(aligned):
    rng = np.random.default_rng(0)
    points = aligned.landmarks_aligned
    worst = 0.0
    for _ in range(6):
        image = aligned.image.copy()
        truth = []
        for eye in (EYE_LEFT, EYE_RIGHT):
            width = np.linalg.norm(points[eye][3] - points[eye][0])
            # gaze left/right up to 15% of the eye width, a little up/down
            centre = points[eye].mean(axis=0) + [rng.uniform(-0.15, 0.15) * width, rng.uniform(-0.03, 0.03) * width]
            _paint_eye(image, points[eye], centre)
            truth.append(centre)
        error = np.linalg.norm(locate_pupils(image, points) - np.array(truth), axis=1).max()
        worst = max(worst, error / width)
    print(f"worst iris error {worst:.3f} eye widths")
    # The lids clip the disc, so the visible dark mass is off the true centre by up to ~3% of the eye width.
    assert worst < 0.05


def test_real_irises_are_darker_than_the_eye_centre_guess(aligned):
    # On the unpainted photo (the astronaut looks at the camera) the located centres lie near the landmark
    # centres, an iris-sized disc around them is darker than the eye opening as a whole (a catchlight may sit
    # right at the centre, so the disc, not the pixel, is compared), and the pupil masks follow them.
    gray = cv2.cvtColor(aligned.image, cv2.COLOR_RGB2GRAY).astype(float)
    points = aligned.landmarks_aligned
    found = aligned.pupils_aligned
    for side, eye in enumerate((EYE_LEFT, EYE_RIGHT)):
        width = np.linalg.norm(points[eye][3] - points[eye][0])
        assert np.linalg.norm(found[side] - points[eye].mean(axis=0)) < 0.2 * width
        opening = np.zeros(gray.shape, np.uint8)
        cv2.fillPoly(opening, [np.round(points[eye]).astype(np.int32)], 1)
        disc = np.zeros_like(opening)
        cv2.circle(disc, tuple(np.round(found[side]).astype(int)), int(0.2 * width), 1, -1)
        inside = (disc > 0) & (opening > 0)
        assert gray[inside].mean() < 0.8 * gray[opening > 0].mean()
    masks = region_masks(points, 512, pupil_centres=found)
    assert all(masks["pupils"][r, c] for c, r in np.round(found).astype(int))
