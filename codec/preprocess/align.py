"""FFHQ-style face alignment with the roll measured and removed, stabilised over time.

Per frame: 68 landmarks -> the FFHQ crop (the oriented square NVIDIA's ffhq-dataset derives from eye and mouth
geometry) -> a similarity `crop_transform` from input pixels to aligned pixels. The square is oriented along the
face, so the aligned crop is upright: the face's in-plane rotation (roll) is removed and reported as `roll_deg`.

Landmarks jitter from frame to frame (dlib gives whole pixels, and eyes and mouth move on their own), and a crop
that follows them shakes. So, as the paper does (§3.2, after Black & Yacoob), only key frames take their crop
from the landmarks; every other frame is registered to the key frame by a robust affine optical flow over the rigid
part of the face, and inherits the key frame's crop through that registration. When the registration no longer
explains the frame (an out-of-plane head turn changes what is visible) the frame becomes the next key frame.

Coordinates and the roll convention: see crop.py (the geometry, re-exported here).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator

import cv2
import numpy as np

from codec.errors import InputError
from codec.preprocess import blink as blink_mod
from codec.preprocess.crop import (apply_transform, ffhq_transform, roll_degrees, scale_transform,
                                   warp_crop)
from codec.preprocess.landmarks import FaceBox, FaceTracker
from codec.preprocess.masks import region_masks
from codec.preprocess.pupils import locate_pupils
from codec.preprocess.stabilise import register_affine

WORK_SIZE = 256  # registration runs on a grayscale aligned crop of this size, whatever the output size
# A registered frame becomes a new key frame when the RMS grey-level residual over the rigid face exceeds this.
# Measured on the astronaut clips of the tests (face ~200 px in the frame): pure similarity motion leaves 1.8
# (no noise) to 2.3 (sensor noise sigma 2), 3.0-3.9 after H.264 CRF 18, and 5.0-5.6 with heavy noise (sigma 8):
# the 256-px working crop averages noise away. An out-of-plane turn (cylinder model, tests/preprocess_fixtures)
# adds about 0.9 per degree: 4.1 at 4°, 7.7 at 8°, 9.4 at 10°, and registration fails outright by 20°.
# 8 keeps every similarity-only frame registered even in heavy noise, and re-keys after roughly 8° of yaw (pitch
# was not measured).
KEY_RESIDUAL_RMS = 8.0


@dataclasses.dataclass
class AlignedFrame:
    index: int
    image: np.ndarray  # output_size x output_size x 3 uint8 RGB
    roll_deg: float
    crop_transform: np.ndarray  # 3x3, input pixels -> aligned pixels (its inverse pastes the face back)
    landmarks: np.ndarray  # 68x2 in input pixels, as detected
    landmarks_aligned: np.ndarray  # 68x2 in aligned pixels (the same points through crop_transform)
    pupils_aligned: np.ndarray  # 2x2 iris centres found in the aligned image (image-left eye first)
    is_key_frame: bool
    blink: bool
    eye_aspect_ratio: float
    face_detected: bool  # False when the detector missed on a key frame: the last landmarks were carried over
    registration_residual: float  # grey-level RMS of the affine registration to the key frame (0 on key frames)


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)


@dataclasses.dataclass
class _KeyFrame:
    template: np.ndarray  # grayscale aligned crop at WORK_SIZE
    mask: np.ndarray  # rigid-face mask at WORK_SIZE
    work: np.ndarray  # the key frame's input -> working-crop transform
    box: FaceBox  # the face box the key frame's landmarks were fitted in


def _make_key(frame: np.ndarray, work: np.ndarray, points: np.ndarray, box: FaceBox) -> _KeyFrame:
    template = warp_crop(_gray(frame), work, WORK_SIZE, cv2.INTER_LINEAR)
    mask = region_masks(apply_transform(work, points), WORK_SIZE)["face_rigid"]
    return _KeyFrame(template, mask.astype(np.uint8), work, box)


def _register(key: _KeyFrame, frame: np.ndarray, previous_work: np.ndarray,
              threshold: float) -> tuple[np.ndarray | None, float]:
    """This frame's input -> working-crop transform through registration to the key frame, or None when the
    registration fails (the frame must become a key frame)."""
    crop = warp_crop(_gray(frame), previous_work, WORK_SIZE, cv2.INTER_LINEAR)
    registration = register_affine(key.template, crop, key.mask)
    if not registration.converged or registration.residual_rms > threshold:
        return None, 0.0
    return np.linalg.inv(registration.warp) @ previous_work, registration.residual_rms


def align_video(frames: Iterable[np.ndarray], output_size: int = 1024, stabilise: bool = True,
                key_residual_rms: float = KEY_RESIDUAL_RMS, tracker: FaceTracker | None = None
                ) -> Iterator[AlignedFrame]:
    """Align a stream of RGB frames (see the module docstring). Raises InputError when the first frame shows no
    face; later key frames where the detector misses carry the last landmarks over (and are flagged).

    The face detector (the costly step) runs on key frames only: on registered frames the 68 points are fitted
    in the key frame's face box carried along by the registered motion."""
    tracker = tracker or FaceTracker()
    key: _KeyFrame | None = None
    previous_work: np.ndarray | None = None  # last frame's input -> working-crop transform
    points = None
    for index, frame in enumerate(frames):
        frame = _as_rgb(frame, index)
        work, residual = None, 0.0
        if stabilise and key is not None:
            work, residual = _register(key, frame, previous_work, key_residual_rms)
        if work is not None:
            detected = tracker.landmarks_in_box(frame, key.box.moved(np.linalg.inv(work) @ key.work))
        else:
            detected = tracker.landmarks(frame)
        if detected is None and points is None:
            raise InputError(f"no face found in frame {index}: the first frame must show the face")
        points = detected if detected is not None else points
        is_key = work is None
        if is_key:
            work = ffhq_transform(points, WORK_SIZE)
            if stabilise:
                key = _make_key(frame, work, points, tracker.last_box)
        previous_work = work
        yield _aligned_frame(index, frame, scale_transform(work, WORK_SIZE, output_size), output_size, points,
                             is_key or not stabilise, detected is not None, residual)


def align_video_with_sources(frames: Iterable[np.ndarray], **options) -> Iterator[tuple[np.ndarray, AlignedFrame]]:
    """align_video's frames, each with the source picture it came from (for placement, background samples or
    drawing), while the source frames stream past: only the current one is held."""
    current: list[np.ndarray] = []

    def remembered(source: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for frame in source:
            current[:] = [frame]
            yield frame

    for aligned in align_video(remembered(frames), **options):
        yield current[0], aligned


def _aligned_frame(index: int, frame: np.ndarray, transform: np.ndarray, output_size: int, points: np.ndarray,
                   is_key: bool, face_detected: bool, residual: float) -> AlignedFrame:
    aligned_points = apply_transform(transform, points)
    image = warp_crop(frame, transform, output_size)
    ear = blink_mod.eye_aspect_ratio(points)
    return AlignedFrame(index=index, image=image, roll_deg=roll_degrees(transform), crop_transform=transform,
                        landmarks=points, landmarks_aligned=aligned_points,
                        pupils_aligned=locate_pupils(image, aligned_points), is_key_frame=is_key,
                        blink=ear < blink_mod.BLINK_EAR, eye_aspect_ratio=ear, face_detected=face_detected,
                        registration_residual=residual)


def _as_rgb(frame: np.ndarray, index: int) -> np.ndarray:
    """Accept RGB, RGBA and single-channel frames (grayscale clips): the detector and the generator want RGB."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise InputError(f"frame {index}: expected uint8 pixels, got {frame.dtype}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return np.repeat(frame.reshape(frame.shape[0], frame.shape[1], 1), 3, axis=2)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return np.ascontiguousarray(frame[:, :, :3])
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    raise InputError(f"frame {index}: expected an HxWx3 image, got shape {frame.shape}")
