"""Test clips with known truth: a real face photo (scikit-image's astronaut) moved by known similarity transforms.

Every frame is the photo warped by a 3x3 similarity `base -> frame`, so any point of the photo (for instance its
landmarks, detected once on the clean photo) has an exactly known position in every frame.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from codec.preprocess.video import read_frames, write_video

FACE_CENTRE = np.array([224.0, 115.0])  # between the astronaut's eyes (y 103) and mouth (y 140), in the 512² photo


def base_photo() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[:, :, :3])


def similarity(angle_deg: float, scale: float, shift: tuple[float, float], frame_size: int) -> np.ndarray:
    """base -> frame: rotate by `angle_deg` (counter-clockwise on screen, OpenCV's convention) and scale about the
    face centre, which lands at the frame centre plus `shift`."""
    rotation = cv2.getRotationMatrix2D((float(FACE_CENTRE[0]), float(FACE_CENTRE[1])), angle_deg, scale)
    matrix = np.vstack([rotation, [0, 0, 1]])
    matrix[:2, 2] += (frame_size - 1) / 2 + np.asarray(shift) - FACE_CENTRE
    return matrix


@dataclasses.dataclass
class Clip:
    frames: list[np.ndarray]
    transforms: list[np.ndarray]  # base -> frame, 3x3
    angles_deg: np.ndarray


def make_clip(count: int = 12, size: int = 320, max_angle: float = 20.0, drift_px: float = 6.0,
              scale_range: float = 0.04, noise_sigma: float = 2.0, seed: int = 0, face_scale: float = 0.9) -> Clip:
    """A head that turns in plane from -max_angle to +max_angle, drifts and breathes in scale, with sensor noise.

    Each frame is warped from the photo directly (never from the previous frame), so errors do not accumulate in
    the truth; the default 0.9 scale keeps the face (FFHQ crop ~200 px) comfortably inside a 320 px frame."""
    rng = np.random.default_rng(seed)
    photo = base_photo()
    angles = np.linspace(-max_angle, max_angle, count)
    frames, transforms = [], []
    for t, angle in enumerate(angles):
        phase = 2 * np.pi * t / max(count, 2)
        shift = (drift_px * np.sin(phase), drift_px * np.cos(1.3 * phase))
        scale = face_scale * (1 + scale_range * np.sin(0.7 * phase))
        matrix = similarity(angle, scale, shift, size)
        frame = cv2.warpAffine(photo, matrix[:2], (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        noisy = frame.astype(np.float32) + rng.normal(0.0, noise_sigma, frame.shape)
        frames.append(np.clip(np.round(noisy), 0, 255).astype(np.uint8))
        transforms.append(matrix)
    return Clip(frames, transforms, angles)


def through_h264(frames: list[np.ndarray], directory: Path) -> list[np.ndarray]:
    """The frames after an H.264 (CRF 18) encode and decode: the compression a real input carries."""
    path = Path(directory) / "clip.mp4"
    write_video(path, frames, Fraction(25))
    return list(read_frames(path))


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=np.float64) @ matrix[:2, :2].T + matrix[:2, 2]


def turn_head(photo: np.ndarray, yaw_deg: float, radius: float = 75.0) -> np.ndarray:
    """A stand-in for an out-of-plane head turn that no affine map can undo: the face region is treated as a
    vertical cylinder of `radius` px around FACE_CENTRE and rotated about its axis (one cheek shrinks, the other
    grows, the middle shifts)."""
    height, width = photo.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    across = np.clip((xs - FACE_CENTRE[0]) / radius, -1.0, 1.0)
    surface_angle = np.clip(np.arcsin(across) - np.radians(yaw_deg), -np.pi / 2, np.pi / 2)
    source_x = np.where(np.abs(xs - FACE_CENTRE[0]) < radius, FACE_CENTRE[0] + radius * np.sin(surface_angle), xs)
    return cv2.remap(photo, source_x.astype(np.float32), ys, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
