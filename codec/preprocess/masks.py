"""Region masks drawn from 68 aligned landmarks, at any resolution.

Regions (boolean HxW arrays, keys of the dict `region_masks` returns):
  mouth_jaw   mouth, chin and jaw below the nose (the mouth/chin attributes of the paper's Algorithm 1)
  eyes_brows  both eyes with their eyebrows
  pupils      an iris-sized disc in each eye, clipped to the eye opening: at the iris centre found in the pixels
              (pupils.py) when given, else at the centre of the eye's landmarks (dlib's 68 points carry no iris);
              radius 0.2 of the eye width, the ratio of a 11.7 mm iris to a ~30 mm eye opening
  face        the 81-point face: the 68-point jaw line closed over the forehead by 13 extra points
  face_rigid  face minus eyes_brows minus the mouth (the head-pose L2 of the paper ignores those non-rigid parts)

Coordinates: pixel centres at integers (OpenCV's convention). Landmarks given for an aligned image of
`source_size` pixels are rescaled to the mask resolution.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from codec.preprocess import landmarks as lm_index
from codec.preprocess.crop import apply_transform, ffhq_transform

REGIONS = ("mouth_jaw", "eyes_brows", "pupils", "face", "face_rigid")
# Forehead height above the eye line, as a fraction of the eye-line-to-chin distance: faces split in thirds
# (hairline-brow, brow-nose base, nose base-chin), which in dlib's mean shape puts the hairline at ~0.8 of the
# eye-to-chin distance above the eyes; 0.75 keeps the mask below a typical fringe.
FOREHEAD_RATIO = 0.75
FOREHEAD_JAW_POINTS = range(2, 15)  # 13 mirrored jaw points: 68 + 13 = 81
RENDER_MIN = 512
_SUBPIXEL_BITS = 4  # fillPoly/circle fixed-point precision: 1/16 pixel


def _eye_frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mid-eye point, unit vector along the eye line (image-left to image-right), unit vector towards the chin."""
    left = points[lm_index.EYE_LEFT].mean(axis=0)
    right = points[lm_index.EYE_RIGHT].mean(axis=0)
    along = (right - left) / np.linalg.norm(right - left)
    down = np.array([-along[1], along[0]])  # along rotated +90° in y-down image coordinates: points at the chin
    return (left + right) / 2, along, down


def forehead_points(points: np.ndarray) -> np.ndarray:
    """13 forehead points: jaw points 2..14 mirrored across the eye line, the top at FOREHEAD_RATIO."""
    centre, along, down = _eye_frame(points)
    jaw = points[list(FOREHEAD_JAW_POINTS)] - centre
    chin_depth = float((points[8] - centre) @ down)
    u = jaw @ along
    v = jaw @ down
    # Mirror across the eye line; the square root rounds the dome (a forehead is rounder than a jaw line).
    height = FOREHEAD_RATIO * chin_depth * np.clip(v / chin_depth, 0.0, None) ** 0.5
    return centre + np.outer(u, along) - np.outer(height, down)


def landmarks_81(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points, forehead_points(points)])


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(points * (1 << _SUBPIXEL_BITS)).astype(np.int32)


def _fill(shape: tuple[int, int], points: np.ndarray, convex: bool = True) -> np.ndarray:
    canvas = np.zeros(shape, np.uint8)
    polygon = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2) if convex else points
    cv2.fillPoly(canvas, [_fixed(polygon)], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return canvas


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    r = max(int(round(radius)), 0)
    if r == 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask, kernel)


def region_masks(points: np.ndarray, resolution: int, source_size: int | None = None,
                 pupil_centres: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Boolean masks of every region in REGIONS, `resolution` pixels square, from 68 landmarks given in the pixel
    coordinates of a `source_size`-square aligned image (default: already at `resolution`). `pupil_centres`
    (2x2, same coordinates, e.g. from pupils.locate_pupils) place the pupil discs; default: the eye centres."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"expected 68x2 landmarks, got {points.shape}")
    # Small masks are drawn at >= RENDER_MIN pixels and area-averaged down: polygon filling includes every pixel
    # the outline touches, a bias of about half a pixel that would make a 64-pixel mask a different region.
    supersample = max(1, -(-RENDER_MIN // resolution))
    render = resolution * supersample

    def to_render(coords: np.ndarray) -> np.ndarray:
        return (np.asarray(coords, dtype=np.float64) + 0.5) * (render / (source_size or resolution)) - 0.5

    points = to_render(points)
    centres = to_render(pupil_centres) if pupil_centres is not None else None
    shape = (render, render)
    eye_distance = float(np.linalg.norm(points[lm_index.EYE_RIGHT].mean(0) - points[lm_index.EYE_LEFT].mean(0)))
    margin = 0.08 * eye_distance  # a little skin around eyes, brows and lips: their motion spills past the points

    lower = np.concatenate([points[3:14], points[lm_index.NOSE][4:9][::-1]])  # jaw 3..13 closed at the nose base
    mouth_jaw = _fill(shape, lower, convex=False) | _fill(shape, points[lm_index.MOUTH_OUTER])
    eyes_brows, pupils = _eye_regions(shape, points, centres)
    eyes_brows = _dilate(eyes_brows, margin)
    mouth = _dilate(_fill(shape, points[lm_index.MOUTH_OUTER]), margin)
    face = _fill(shape, landmarks_81(points))
    face_rigid = face & (1 - eyes_brows) & (1 - mouth)
    masks = {"mouth_jaw": mouth_jaw, "eyes_brows": eyes_brows, "pupils": pupils, "face": face,
             "face_rigid": face_rigid}
    return {name: _downsample(masks[name], supersample) for name in REGIONS}


def _eye_regions(shape: tuple[int, int], points: np.ndarray,
                 centres: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Eyes with brows (hull of each side, before the margin) and iris discs clipped to the eye openings."""
    eyes_brows = np.zeros(shape, np.uint8)
    pupils = np.zeros(shape, np.uint8)
    for side, (brow, eye) in enumerate(((lm_index.BROW_LEFT, lm_index.EYE_LEFT),
                                        (lm_index.BROW_RIGHT, lm_index.EYE_RIGHT))):
        eyes_brows |= _fill(shape, np.concatenate([points[brow], points[eye]]))
        eye_points = points[eye]
        width = float(np.linalg.norm(eye_points[3] - eye_points[0]))
        centre = eye_points.mean(axis=0) if centres is None else centres[side]
        disc = np.zeros(shape, np.uint8)
        cv2.circle(disc, tuple(_fixed(centre)), int(round(0.2 * width * (1 << _SUBPIXEL_BITS))),
                   1, thickness=-1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
        pupils |= disc & _dilate(_fill(shape, eye_points), 1)
    return eyes_brows, pupils


def _downsample(mask: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return mask.astype(bool)
    size = mask.shape[0] // factor
    return mask.reshape(size, factor, size, factor).mean(axis=(1, 3), dtype=np.float32) >= 0.5


@functools.lru_cache(maxsize=8)
def canonical_landmarks(resolution: int) -> np.ndarray:
    """The 68 points of an average face after FFHQ alignment to `resolution`: dlib's mean shape put through the
    same crop as real faces (the crop is similarity-invariant, so the box the mean shape is drawn in is free)."""
    mean = lm_index.mean_shape_68() * 1000.0
    result = apply_transform(ffhq_transform(mean, resolution), mean)
    result.setflags(write=False)
    return result


def canonical_masks(resolution: int) -> dict[str, np.ndarray]:
    """Region masks of the average FFHQ-aligned face: the region definition for generated images that hold no
    detectable face (e.g. an untrained generator's output)."""
    return region_masks(canonical_landmarks(resolution), resolution)


# The blend region in the aligned square (fractions of its side): an ellipse around the FFHQ-aligned face, hair
# line and chin included, whose weight falls from 1 to 0 over FEATHER of the side, inside the square's edge.
ELLIPSE_CENTRE = (0.5, 0.53)
ELLIPSE_AXES = (0.40, 0.45)
FEATHER = 0.10


def face_blend_mask(size: int) -> np.ndarray:
    """[size, size] float32 weights in [0, 1]: 1 over the face, 0 well inside the square's edge, a smooth ramp
    between (smoothstep of the distance to the ellipse, in units of the feather)."""
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size
    x = (coords[None, :] - ELLIPSE_CENTRE[0]) / ELLIPSE_AXES[0]
    y = (coords[:, None] - ELLIPSE_CENTRE[1]) / ELLIPSE_AXES[1]
    radius = np.sqrt(x * x + y * y)  # 1 on the ellipse
    outside = (radius - 1.0) * min(ELLIPSE_AXES) / FEATHER + 1.0  # 0 a feather inside the ellipse, 1 on it
    t = np.clip(1.0 - outside, 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)
