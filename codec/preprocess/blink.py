"""Blink detection from the eye aspect ratio (EAR) of the 68 landmarks (Soukupová & Čech, 2016).

EAR = (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|) over the six points of an eye: about 0.25-0.35 for an open eye,
near 0.1 or below when closed, and unchanged by scale, roll and translation. The threshold 0.2 is the fixed value
that paper reports working across its datasets; an eye narrowed by a smile stays above it, a closing lid drops
through it within a frame or two at 25-30 fps. The mean of both eyes is
used (as in that paper), which averages out landmark noise.
"""

from __future__ import annotations

import numpy as np

from codec.preprocess.landmarks import EYE_LEFT, EYE_RIGHT

BLINK_EAR = 0.2


def eye_aspect_ratio(points: np.ndarray) -> float:
    """Mean EAR of both eyes from 68x2 landmarks (any coordinate frame related to the image by a similarity)."""
    ratios = []
    for eye in (EYE_LEFT, EYE_RIGHT):
        p = np.asarray(points, dtype=np.float64)[eye]
        vertical = np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])
        ratios.append(vertical / (2.0 * np.linalg.norm(p[0] - p[3])))
    return float(np.mean(ratios))


def is_blink(points: np.ndarray) -> bool:
    return eye_aspect_ratio(points) < BLINK_EAR
