"""Paste-back geometry (issue 13): a frame's stored placement and roll put its aligned crop back where it came from.

Known truth: instead of a generator's render, paste the encoder's own aligned crops: inside the face the input
frame returns (up to two resamplings and the quantisation of placement and roll), outside it the background is
untouched."""

from __future__ import annotations

import numpy as np
import pytest

from codec.bitstream.placement import Placement, decode_placement, encode_placement
from codec.decoder.paste import paste_face
from codec.preprocess.masks import face_blend_mask
from codec.preprocess.crop import crop_placement, crop_similarity, ffhq_transform, roll_degrees, unwarp_crop

pytest.importorskip("dlib", reason="dlib is needed for face landmarks")

from codec.preprocess.align import align_video  # noqa: E402
from preprocess_fixtures import make_clip  # noqa: E402

SIZE = 256
ROLL_STEP = 2.0 ** -6  # the record's roll quantisation (format_spec.md §5 default step)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


def test_placement_and_roll_rebuild_the_crop():
    import codec.preprocess.landmarks as landmarks

    face = landmarks.mean_shape_68() * 120 + [200, 90]
    turn = np.radians(17.0)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    transform = ffhq_transform((face - 250) @ rotation.T + 250, SIZE)
    centre, side = crop_placement(transform, SIZE)
    rebuilt = crop_similarity(centre, side, roll_degrees(transform), SIZE)
    np.testing.assert_allclose(rebuilt, transform, atol=1e-9)
    assert abs(roll_degrees(transform) - 17.0) < 1.0  # the mean shape's own tilt is small


def test_pasting_the_aligned_crops_back_reproduces_the_input_inside_the_face():
    clip = make_clip(count=6, size=320, max_angle=15.0)
    height, width = clip.frames[0].shape[:2]
    aligned = list(align_video(iter(clip.frames), output_size=SIZE))
    placements = [crop_placement(a.crop_transform, SIZE) for a in aligned]
    stored = decode_placement(encode_placement(Placement(width, height, np.array([c for c, _ in placements]),
                                                         np.array([s for _, s in placements]))))
    mask = face_blend_mask(SIZE)
    background = np.full_like(clip.frames[0], 7)
    for i, (frame, a) in enumerate(zip(clip.frames, aligned)):
        roll = np.round(a.roll_deg / ROLL_STEP) * ROLL_STEP
        pasted = paste_face(a.image, stored.centre[i], stored.side[i], roll, background, mask)
        transform = crop_similarity(stored.centre[i], stored.side[i], roll, SIZE)
        _, alpha = unwarp_crop(a.image, transform, (height, width), mask)
        inside, outside = alpha > 0.999, alpha == 0
        assert inside.sum() > 0.05 * height * width and outside.sum() > 0.2 * height * width
        # Bound: two bicubic resamplings of a 320-px photo through a 256-px crop, with the crop's registration
        # shear dropped (placement keeps a similarity) and placement and roll quantised. Measured 51.5-52.3 dB;
        # 45 dB (an RMS of 1.4 levels) leaves room for other machines' arithmetic, and a placement off by half a
        # pixel falls well below it (next test).
        quality = psnr(pasted[inside], frame[inside])
        assert quality > 45.0, (i, quality)
        assert np.array_equal(pasted[outside], background[outside])


def test_a_half_pixel_placement_error_is_caught():
    # the bound above can fail: the same paste with the centre moved by half a pixel
    clip = make_clip(count=1, size=320)
    (a,) = list(align_video(iter(clip.frames), output_size=SIZE))
    centre, side = crop_placement(a.crop_transform, SIZE)
    background = np.zeros_like(clip.frames[0])
    good = paste_face(a.image, centre, side, a.roll_deg, background)
    shifted = paste_face(a.image, centre + [0.5, 0.5], side, a.roll_deg, background)
    inside = paste_face(np.full_like(a.image, 255), centre, side, a.roll_deg, background)[..., 0] == 255
    frame = clip.frames[0]
    assert psnr(good[inside], frame[inside]) > 45.0 > psnr(shifted[inside], frame[inside])


def test_the_blend_mask_is_whole_over_the_face_and_zero_at_the_square_edge():
    mask = face_blend_mask(SIZE)
    edges = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    assert edges.max() == 0.0 and mask[SIZE // 2, SIZE // 2] == 1.0  # no seam: the square's edge never shows
    assert ((mask > 0) & (mask < 1)).mean() > 0.05  # a feathered ramp, not a hard cut
