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


def test_with_a_video_encoder_every_frame_goes_into_the_background_video():
    from fractions import Fraction

    from codec.bitstream.background_video import BackgroundVideoDecoder, BackgroundVideoEncoder, parse_video
    from codec.bitstream.header import EXT_BACKGROUND_VIDEO, EXT_PLACEMENT
    from codec.encoder.encode import EncodeSettings, _whole_picture

    clip = make_clip(count=4, size=320, max_angle=10.0)
    collector = SceneCollector(size=128, expected_frames=4, video=BackgroundVideoEncoder(Fraction(30), 200))
    for frame, a in zip(clip.frames, align_video(iter(clip.frames), output_size=128)):
        collector.add(frame, a.crop_transform, a.roll_deg)
    extensions = dict(_whole_picture(collector, EncodeSettings(background="video")))
    assert sorted(extensions) == sorted([EXT_PLACEMENT, EXT_BACKGROUND_VIDEO])  # the video alone, no still
    data = extensions[EXT_BACKGROUND_VIDEO]
    head = parse_video(data)
    assert (head.width, head.height, len(head), head.rate, head.scale) == (320, 320, 4, 30, 1)
    video = BackgroundVideoDecoder(data, (320, 320))
    for i in range(4):  # each decoded picture is its own frame (at this rate, 1.8 kB for all four, not closely)
        errors = [np.abs(video.frame(i).astype(float) - frame).mean() for frame in clip.frames]
        assert np.argmin(errors) == i and errors[i] < 20.0, errors
