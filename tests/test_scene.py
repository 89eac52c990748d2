"""The encoder's scene collector (issue 13): placement and background gathered as frames stream past alignment."""

from __future__ import annotations

import numpy as np
import pytest

from codec.bitstream.background import decode_background
from codec.bitstream.placement import decode_placement
from codec.encoder.scene import SceneCollector
from codec.preprocess.crop import crop_placement

pytest.importorskip("dlib", reason="dlib is needed for face landmarks")

from codec.preprocess.align import align_video  # noqa: E402
from preprocess_fixtures import make_clip  # noqa: E402


def test_collector_keeps_each_frames_placement_and_a_still_without_the_face():
    clip = make_clip(count=5, size=320, max_angle=10.0)
    collector = SceneCollector(size=128, expected_frames=5, samples=3)
    aligned = list(align_video(iter(clip.frames), output_size=128))
    for frame, a in zip(clip.frames, aligned):
        collector.add(frame, a.crop_transform, a.roll_deg)
    assert sorted(collector.kept) == [0, 2, 4]  # only the samples are held
    placement = decode_placement(collector.placement())
    assert (placement.width, placement.height, len(placement)) == (320, 320, 5)
    for i, a in enumerate(aligned):
        centre, side = crop_placement(a.crop_transform, 128)
        assert np.abs(placement.centre[i] - centre).max() < 0.01 and abs(placement.side[i] - side) < 0.02
    still = decode_background(collector.background(quality=90))
    assert still.shape == (320, 320, 3)
    # far from the face the still is the median of the sampled frames (up to the still codec's loss); this clip's
    # whole picture turns, so that median is not any one frame
    corner = (slice(0, 40), slice(0, 40))
    median = np.median(np.stack([clip.frames[i][corner] for i in (0, 2, 4)]), axis=0)
    assert np.abs(still[corner].astype(float) - median).mean() < 4.0


def test_nothing_collected_gives_no_extensions():
    collector = SceneCollector(size=64, expected_frames=0)
    assert collector.placement() is None and collector.background(80) is None
