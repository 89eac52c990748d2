"""68-point face landmarks offline: dlib's HOG face detector + the 68-point shape predictor that ships inside the
`face-recognition-models` package (no download at run time).

The package's own `__init__` imports `pkg_resources`, which recent setuptools no longer ship, so the model files
are located with `importlib.util.find_spec` (which does not execute the package).

Several faces: the tracker follows one face. On the first frame it takes the largest; afterwards the detection
that overlaps the previous face most (largest area breaks ties), so a second face entering the picture, or a
spurious detection (dlib reports one on scikit-image's astronaut), does not steal the track.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from pathlib import Path

import numpy as np

from codec.errors import InputError, ModelError

# Detection runs on a copy whose longer side is at most this: HOG cost grows with area, and faces of interest to a
# 1024² generator are large; the 68 points are then fitted on the full-resolution frame.
DETECT_MAX_SIDE = 640
# The standard 68-point index ranges (iBUG 300-W layout, as dlib's predictor emits them).
JAW = slice(0, 17)
BROW_LEFT, BROW_RIGHT = slice(17, 22), slice(22, 27)  # left/right as seen in the image
NOSE = slice(27, 36)
EYE_LEFT, EYE_RIGHT = slice(36, 42), slice(42, 48)
MOUTH_OUTER, MOUTH_INNER = slice(48, 60), slice(60, 68)


def _models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the package face-recognition-models is not installed (it ships the dlib landmark model)")
    return Path(spec.submodule_search_locations[0]) / "models"


def model_path(name: str) -> Path:
    path = _models_dir() / name
    if not path.is_file():
        raise ModelError(f"{path} is missing from face-recognition-models")
    return path


@functools.lru_cache(maxsize=1)
def _dlib_models():
    try:
        import dlib
    except ImportError as exc:
        raise ModelError("dlib is not installed (pip builds it from source: needs cmake and a C++ compiler)") from exc
    predictor = dlib.shape_predictor(str(model_path("shape_predictor_68_face_landmarks.dat")))
    return dlib, dlib.get_frontal_face_detector(), predictor


def mean_shape_68() -> np.ndarray:
    """The 68-point mean shape stored in dlib's predictor (its `initial_shape`), in units of the detection box.

    Read straight from the model file: dlib serialises the version as an integer, then the shape as a matrix of
    floats. dlib integers are one header byte (low nibble = byte count, bit 7 = sign) plus little-endian bytes; a
    float is an integer mantissa followed by an integer base-2 exponent.
    """
    data = model_path("shape_predictor_68_face_landmarks.dat").read_bytes()[:4096]
    pos = 0

    def read_int() -> int:
        nonlocal pos
        header = data[pos]
        size = header & 0x0F
        value = int.from_bytes(data[pos + 1:pos + 1 + size], "little")
        pos += 1 + size
        return -value if header & 0x80 else value

    if read_int() != 1:
        raise ModelError("unexpected shape predictor version in shape_predictor_68_face_landmarks.dat")
    rows, cols = abs(read_int()), abs(read_int())
    if (rows, cols) != (136, 1):
        raise ModelError(f"unexpected mean-shape size {rows}x{cols} in the 68-point predictor")
    values = []
    for _ in range(rows):
        mantissa = read_int()
        values.append(mantissa * 2.0 ** read_int())
    return np.array(values, dtype=np.float64).reshape(68, 2)


@dataclasses.dataclass(frozen=True)
class FaceBox:
    """A square face box in input pixels, as the detector gives it (dlib's HOG boxes are squares)."""

    centre_x: float
    centre_y: float
    size: float

    def moved(self, transform: np.ndarray) -> "FaceBox":
        """The box carried by a similarity (3x3): centre mapped, side scaled."""
        centre = transform[:2, :2] @ [self.centre_x, self.centre_y] + transform[:2, 2]
        scale = float(np.sqrt(abs(np.linalg.det(transform[:2, :2]))))
        return FaceBox(float(centre[0]), float(centre[1]), self.size * scale)


def _box_area(box) -> float:
    return float(max(box.width(), 0) * max(box.height(), 0))


def _overlap(a, b) -> float:
    inter = a.intersect(b)
    inter_area = _box_area(inter) if inter.width() > 0 and inter.height() > 0 else 0.0
    union = _box_area(a) + _box_area(b) - inter_area
    return inter_area / union if union > 0 else 0.0


class FaceTracker:
    """Detect the tracked face in each frame and fit the 68 landmarks (returned as 68x2 float, x then y)."""

    def __init__(self) -> None:
        self._dlib, self._detector, self._predictor = _dlib_models()
        self._previous = None  # dlib.rectangle of the face followed so far

    def _detect(self, image: np.ndarray) -> list:
        scale = min(1.0, DETECT_MAX_SIDE / max(image.shape[:2]))
        small = image
        if scale < 1.0:
            import cv2

            small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        boxes = self._detector(np.ascontiguousarray(small), 1)  # upsample once: finds faces down to ~40 px
        rect = self._dlib.rectangle
        return [rect(int(b.left() / scale), int(b.top() / scale), int(b.right() / scale), int(b.bottom() / scale))
                for b in boxes]

    def _choose(self, boxes: list):
        if self._previous is None:
            return max(boxes, key=_box_area)
        return max(boxes, key=lambda b: (_overlap(b, self._previous), _box_area(b)))

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """68x2 landmarks of the tracked face in input pixels, or None when no face is found in this frame."""
        boxes = self._detect(image)
        if not boxes:
            return None
        return self._fit(image, self._choose(boxes))

    def landmarks_in_box(self, image: np.ndarray, box: FaceBox) -> np.ndarray:
        """Fit the 68 points in a box predicted from the face's motion, skipping detection (~100x cheaper)."""
        half = box.size / 2
        rect = self._dlib.rectangle(int(round(box.centre_x - half)), int(round(box.centre_y - half)),
                                    int(round(box.centre_x + half)), int(round(box.centre_y + half)))
        return self._fit(image, rect)

    @property
    def last_box(self) -> FaceBox | None:
        box = self._previous
        if box is None:
            return None
        return FaceBox((box.left() + box.right()) / 2, (box.top() + box.bottom()) / 2,
                       float(np.sqrt(_box_area(box))))

    def _fit(self, image: np.ndarray, box) -> np.ndarray:
        self._previous = box
        shape = self._predictor(np.ascontiguousarray(image), box)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def detect_landmarks(image: np.ndarray) -> np.ndarray:
    """Landmarks of the largest face in one image; InputError if there is none."""
    points = FaceTracker().landmarks(image)
    if points is None:
        raise InputError("no face found in the image")
    return points
