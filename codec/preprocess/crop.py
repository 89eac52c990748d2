"""The FFHQ crop as geometry: landmarks -> a similarity from input pixels to aligned pixels, its roll, its
rescaling, and the resampling of an image through it.

Coordinates: pixel centres at integers, x right, y down. Transforms are 3x3 arrays.
Roll convention: `roll_degrees` is the angle of the face's left-to-right axis in the input image, measured from
the image x axis towards y (clockwise as seen on screen); the aligned crop shows the face rotated back by it.
"""

from __future__ import annotations

import cv2
import numpy as np

from codec.preprocess.landmarks import EYE_LEFT, EYE_RIGHT, MOUTH_OUTER


def ffhq_transform(points: np.ndarray, output_size: int) -> np.ndarray:
    """Similarity (3x3) from input pixels to the FFHQ-aligned square of `output_size` pixels."""
    points = np.asarray(points, dtype=np.float64)
    eye_left = points[EYE_LEFT].mean(axis=0)
    eye_right = points[EYE_RIGHT].mean(axis=0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (points[MOUTH_OUTER][0] + points[MOUTH_OUTER][6]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    # The square's x axis blends the eye line with the perpendicular of the eye-to-mouth line; its half side is
    # the larger of 2x the eye distance and 1.8x the eye-to-mouth distance; its centre sits a tenth of the way
    # from the eyes to the mouth (ffhq-dataset's recipe).
    x_axis = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    x_axis *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8) / np.hypot(*x_axis)
    y_axis = np.array([-x_axis[1], x_axis[0]])
    centre = eye_avg + 0.1 * eye_to_mouth
    top_left = centre - x_axis - y_axis
    # The square's corners go to the aligned image's outer pixel edges: top_left to -0.5 (the edge of pixel 0)
    # and top_left + 2 x_axis to size - 0.5.
    linear = output_size * np.linalg.inv(np.column_stack([2 * x_axis, 2 * y_axis]))
    transform = np.eye(3)
    transform[:2, :2] = linear
    transform[:2, 2] = -linear @ top_left - 0.5
    return transform


def apply_transform(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points @ transform[:2, :2].T + transform[:2, 2]


def roll_degrees(transform: np.ndarray) -> float:
    """The roll removed by an input->aligned transform: the input direction that becomes the aligned x axis."""
    face_x = np.linalg.inv(transform[:2, :2]) @ np.array([1.0, 0.0])
    return float(np.degrees(np.arctan2(face_x[1], face_x[0])))


def crop_placement(transform: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """(centre, side) of the crop square in input pixels: the input point that lands on the aligned image's centre,
    and the side the `size`-pixel aligned square spans there (format_spec.md `plac`). With the roll, these fix the
    crop (crop_similarity); a registration's slight shear is what they leave out."""
    centre = np.linalg.solve(transform[:2, :2], np.full(2, (size - 1) / 2) - transform[:2, 2])
    side = size / float(np.sqrt(abs(np.linalg.det(transform[:2, :2]))))
    return centre, side


def crop_similarity(centre: np.ndarray, side: float, roll_deg: float, size: int) -> np.ndarray:
    """The input->aligned similarity of a crop square with this centre and side (input pixels) whose face axis
    lies at `roll_deg` (roll_degrees' convention): crop_placement's inverse, given the roll."""
    theta = np.radians(roll_deg)
    cos, sin = np.cos(theta), np.sin(theta)
    linear = (size / side) * np.array([[cos, sin], [-sin, cos]])  # R(-roll): the face axis onto aligned x
    transform = np.eye(3)
    transform[:2, :2] = linear
    transform[:2, 2] = np.full(2, (size - 1) / 2) - linear @ np.asarray(centre, np.float64)
    return transform


def scale_transform(transform: np.ndarray, from_size: int, to_size: int) -> np.ndarray:
    """The same crop for an aligned image of another size (pixel centres at integers)."""
    factor = to_size / from_size
    resize = np.array([[factor, 0, 0.5 * factor - 0.5], [0, factor, 0.5 * factor - 0.5], [0, 0, 1]])
    return resize @ transform


def warp_crop(image: np.ndarray, transform: np.ndarray, size: int,
              interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Resample `image` into the aligned square. Like ffhq-dataset, shrink first by a whole factor when the crop
    reduces by more than 2x, so that the final interpolation does not alias. Bicubic by default: Lanczos costs
    4x more (80 vs 19 ms for a 1024² crop here) for a difference the generator's inversion cannot see."""
    scale = float(np.sqrt(abs(np.linalg.det(transform[:2, :2]))))
    shrink = int(np.floor(0.5 / scale)) if scale > 0 else 1
    if shrink > 1:
        height, width = image.shape[:2]
        height, width = max(height // shrink, 1), max(width // shrink, 1)
        # an exact whole factor: drop the last rows/columns that do not fill a block
        image = cv2.resize(image[:height * shrink, :width * shrink], (width, height), interpolation=cv2.INTER_AREA)
        # small pixel q covers big pixels shrink*q .. shrink*q + shrink-1: its centre is shrink*q + (shrink-1)/2
        enlarge = np.array([[shrink, 0, (shrink - 1) / 2], [0, shrink, (shrink - 1) / 2], [0, 0, 1]])
        transform = transform @ enlarge
    return cv2.warpAffine(image, transform[:2], (size, size), flags=interpolation, borderMode=cv2.BORDER_REFLECT)


def unwarp_crop(aligned: np.ndarray, transform: np.ndarray, input_size: tuple[int, int],
                weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of warp_crop, for pasting a (re-rendered) aligned face back: `aligned` resampled into the
    input frame of `input_size` (height, width), with the float coverage to blend with: `weight` (an aligned-size
    float mask, e.g. a feathered face) carried the same way, or 1 inside the crop square; 0 outside it, fractional
    along its edge."""
    height, width = input_size
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    image = cv2.warpAffine(aligned, transform[:2], (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    inside = np.ones(aligned.shape[:2], np.float32) if weight is None else np.asarray(weight, np.float32)
    coverage = cv2.warpAffine(inside, transform[:2], (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return image, coverage
