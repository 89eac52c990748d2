"""Region masks, the canonical (mean FFHQ-aligned) template, and blink from the eye aspect ratio."""

from __future__ import annotations

import numpy as np
import pytest

from codec.preprocess import landmarks as idx
from codec.preprocess.crop import apply_transform, ffhq_transform
from codec.preprocess.blink import BLINK_EAR, eye_aspect_ratio, is_blink
from codec.preprocess.masks import REGIONS, canonical_landmarks, canonical_masks, landmarks_81, region_masks


def _inside(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    cols, rows = np.round(points).astype(int).T
    return mask[rows, cols]


def _indices(*slices) -> list[int]:
    return [i for s in slices for i in range(68)[s]]


def test_mean_shape_from_dlib_model_is_a_symmetric_face():
    mean = idx.mean_shape_68()
    assert mean.shape == (68, 2)
    # jaw point i mirrors jaw point 16-i about the vertical axis through the chin (x = 0.5 in box units)
    mirrored = 1.0 - mean[idx.JAW][::-1, 0]
    assert np.abs(mirrored - mean[idx.JAW, 0]).max() < 0.01
    assert mean[8, 1] > mean[57, 1] > mean[33, 1] > mean[27, 1] > mean[19, 1]  # chin, lip, nose, bridge, brow


def test_canonical_landmarks_sit_where_ffhq_puts_a_face():
    points = canonical_landmarks(1024)
    eyes = np.array([points[idx.EYE_LEFT].mean(0), points[idx.EYE_RIGHT].mean(0)])
    # FFHQ crops put the eye line level, centred, at ~47% height, and the mouth corners at ~73%
    assert abs(eyes[0, 1] - eyes[1, 1]) < 0.5 and abs(eyes[:, 0].mean() - 511.5) < 0.5
    assert 0.44 < eyes[0, 1] / 1024 < 0.5
    assert 0.70 < points[48, 1] / 1024 < 0.77
    np.testing.assert_allclose(canonical_landmarks(256), (points + 0.5) / 4 - 0.5, atol=1e-9)


@pytest.mark.parametrize("resolution", [64, 256, 1024])
def test_canonical_masks_cover_the_right_landmarks(resolution):
    points = canonical_landmarks(resolution)
    masks = canonical_masks(resolution)
    assert set(masks) == set(REGIONS) and all(m.shape == (resolution, resolution) for m in masks.values())
    assert _inside(masks["mouth_jaw"], points[_indices(idx.MOUTH_OUTER, idx.MOUTH_INNER)]).all()
    # the jaw line is the region's outline: points just inside it (8% towards the mouth, >1 px at 64²) belong to it
    jaw_inside = points[4:13] * 0.92 + points[66] * 0.08
    assert _inside(masks["mouth_jaw"], jaw_inside).all()
    assert not _inside(masks["mouth_jaw"], points[_indices(idx.EYE_LEFT, idx.EYE_RIGHT, slice(27, 31))]).any()
    assert _inside(masks["eyes_brows"], points[_indices(idx.EYE_LEFT, idx.EYE_RIGHT,
                                                        idx.BROW_LEFT, idx.BROW_RIGHT)]).all()
    assert not _inside(masks["eyes_brows"], points[_indices(idx.MOUTH_OUTER, slice(30, 36))]).any()
    eye_centres = np.array([points[idx.EYE_LEFT].mean(0), points[idx.EYE_RIGHT].mean(0)])
    assert _inside(masks["pupils"], eye_centres).all()
    assert not (masks["pupils"] & ~masks["eyes_brows"]).any()  # pupils lie within the eyes
    assert _inside(masks["face"], points[slice(17, 68)]).all()  # everything inside the jaw line
    rigid = masks["face_rigid"]
    assert _inside(rigid, points[[27, 28, 29, 30, 31, 35]]).all()  # nose: rigid
    assert not _inside(rigid, points[_indices(idx.EYE_LEFT, idx.EYE_RIGHT, idx.MOUTH_OUTER, idx.BROW_LEFT)]).any()
    # forehead: the face mask reaches well above the brows (the 81-point extension)
    forehead = landmarks_81(points)[68:]
    assert forehead[:, 1].min() < points[idx.BROW_LEFT, 1].min() - 0.1 * resolution
    assert _inside(masks["face"], forehead * 0.92 + points[27] * 0.08).all()


def test_masks_agree_across_resolutions():
    # The same face drawn at 512 and at 128 must be the same region: IoU after downsampling near 1
    # (the loss is the boundary ring: 4 pixels wide at 512 is 1 at 128).
    big = canonical_masks(512)
    small = canonical_masks(128)
    for name in ("face", "mouth_jaw", "eyes_brows", "face_rigid"):
        down = big[name].reshape(128, 4, 128, 4).mean(axis=(1, 3)) > 0.5
        iou = (down & small[name]).sum() / (down | small[name]).sum()
        assert iou > 0.93, (name, iou)


def test_region_masks_follow_landmarks_given_at_another_size():
    points_256 = canonical_landmarks(256)
    from_256 = region_masks(points_256, 512, source_size=256)
    direct = canonical_masks(512)
    for name in REGIONS:
        assert (from_256[name] ^ direct[name]).sum() <= 0.01 * direct[name].sum() + 4, name


def test_ffhq_crop_is_invariant_to_how_the_face_sits_in_the_frame():
    # Known truth: move the face by a similarity; the aligned landmarks must not change at all.
    face = idx.mean_shape_68() * 180 + [60, 40]
    angle = np.radians(17.0)
    motion = np.array([[1.3 * np.cos(angle), -1.3 * np.sin(angle), 25.0],
                       [1.3 * np.sin(angle), 1.3 * np.cos(angle), -12.0], [0, 0, 1]])
    moved = apply_transform(motion, face)
    aligned = apply_transform(ffhq_transform(face, 256), face)
    aligned_moved = apply_transform(ffhq_transform(moved, 256), moved)
    np.testing.assert_allclose(aligned_moved, aligned, atol=1e-9)


def test_eye_aspect_ratio_and_blink():
    open_eyes = canonical_landmarks(256).copy()
    ear_open = eye_aspect_ratio(open_eyes)
    assert ear_open > BLINK_EAR + 0.05 and not is_blink(open_eyes)
    closed = open_eyes.copy()
    for eye in (idx.EYE_LEFT, idx.EYE_RIGHT):
        centre_y = closed[eye, 1].mean()
        closed[eye, 1] = centre_y + 0.15 * (closed[eye, 1] - centre_y)  # lids 85% closed
    assert is_blink(closed) and eye_aspect_ratio(closed) < 0.2 * ear_open + 1e-9
    half_closed = open_eyes.copy()
    for eye in (idx.EYE_LEFT, idx.EYE_RIGHT):
        centre_y = half_closed[eye, 1].mean()
        half_closed[eye, 1] = centre_y + 0.75 * (half_closed[eye, 1] - centre_y)  # a squint is not a blink
    assert not is_blink(half_closed)
    # invariant to a similarity of the image
    turned = apply_transform(np.array([[0, -2.0, 5], [2.0, 0, 7], [0, 0, 1]]), closed)
    assert abs(eye_aspect_ratio(turned) - eye_aspect_ratio(closed)) < 1e-12


def test_crop_round_trip_pastes_the_face_back():
    # Known truth: cut the aligned square out of a real photo and paste it back: inside the square the photo
    # returns (up to two bicubic resamplings), outside the coverage is zero.
    from codec.preprocess.crop import unwarp_crop, warp_crop
    from preprocess_fixtures import base_photo

    photo = base_photo()
    face = idx.mean_shape_68() * 110 + [170, 60]  # a face-sized set of points over the astronaut's face
    transform = ffhq_transform(face, 512)  # ~2.3x enlargement: no shrink step, pure resampling
    aligned = warp_crop(photo, transform, 512)
    back, coverage = unwarp_crop(aligned, transform, photo.shape[:2])
    inside = coverage > 0.999
    assert inside.sum() > 150 * 150 and coverage[0, 0] == 0 and coverage[-1, -1] == 0
    error = np.abs(back[inside].astype(int) - photo[inside].astype(int)).mean()
    print(f"paste-back round trip: mean error {error:.2f} grey levels over {inside.sum()} pixels")
    assert error < 1.0  # measured 0.09 (two bicubic resamplings); a half-pixel shift of the paste gives 3.9
