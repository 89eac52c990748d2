"""The paste-back's torch path (what stvdec runs on a GPU) against the OpenCV path (what it runs on the CPU):
the same geometry and blend, run here with torch on the CPU.

Tolerance, stated: OpenCV warps uint8 pictures with sampling positions rounded to 1/32 pixel and fixed-point
bicubic weights, torch's grid_sample with exact float positions and weights; both round the warped face to 8
bits before the blend. So a few values move by a grey level where the face has edges. Measured here: under
0.01% of the values differ, by one level at most. Bound (room for other machines' arithmetic): at most 0.5% of
the values differ, none by more than 2 levels, mean absolute difference under 0.01 levels.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage import data as samples

from codec.bitstream.placement import Placement
from codec.decoder.paste import PasteBack, paste_face
from codec.decoder.paste_torch import paste_face_torch, paste_frames


def face_and_scene():
    face = cv2.resize(samples.astronaut()[20:340, 60:380], (256, 256), interpolation=cv2.INTER_AREA)
    scene = cv2.resize(samples.coffee(), (640, 360), interpolation=cv2.INTER_AREA)
    return face, scene


def differences(a: np.ndarray, b: np.ndarray) -> tuple[float, int, float]:
    diff = np.abs(a.astype(int) - b.astype(int))
    return float((diff > 0).mean()), int(diff.max()), float(diff.mean())


@pytest.mark.parametrize("centre, side, roll", [((320.0, 170.0), 200.0, 0.0), ((300.5, 190.25), 151.3, 12.5),
                                                ((620.0, 20.0), 180.0, -30.0),  # partly outside the picture
                                                ((330.0, 180.0), 400.0, 3.0)])  # larger than the face: upsampled
def test_the_torch_blend_matches_opencvs(centre, side, roll):
    face, scene = face_and_scene()
    expected = paste_face(face, np.array(centre), side, roll, scene)
    got = paste_face_torch(torch.from_numpy(face), np.array(centre), side, roll, torch.from_numpy(scene)).numpy()
    changed, largest, mean = differences(got, expected)
    assert changed < 0.005 and largest <= 2 and mean < 0.01, (changed, largest, mean)
    assert np.abs(expected.astype(int) - scene.astype(int)).mean() > 1  # a face was pasted at all


def test_a_face_wholly_outside_the_picture_leaves_the_background():
    face, scene = face_and_scene()
    got = paste_face_torch(torch.from_numpy(face), np.array([-500.0, -500.0]), 100.0, 0.0, torch.from_numpy(scene))
    assert np.array_equal(got.numpy(), scene)


def test_paste_frames_follows_placement_scene_and_size():
    face, scene = face_and_scene()
    placement = Placement(640, 360, np.array([[320.0, 170.0], [np.nan, np.nan]]), np.array([200.0, np.nan]))
    paste = PasteBack(placement, scene, size=(320, 180), device=torch.device("cpu"))
    upright = torch.from_numpy(np.stack([face, face[::-1].copy()]))
    frames = paste_frames(paste, 0, upright, np.array([5.0, -5.0]))
    assert frames.shape == (2, 180, 320, 3) and frames.dtype == np.uint8
    for k in range(2):  # frame 1 has no placement: it uses frame 0's (format_spec.md `plac`)
        cpu = paste.frame(k, upright[k].numpy(), [5.0, -5.0][k])
        changed, largest, mean = differences(frames[k], cpu)
        assert largest <= 6 and mean < 0.3, (k, changed, largest, mean)  # the resize differs a little more


def test_the_decoder_blends_on_its_device_when_paste_back_has_one(monkeypatch):
    # the decode loop hands the rendering to frames_on_device, still as a tensor, when PasteBack has a device
    from codec.decoder import decode as decode_module

    seen = {}

    def on_device(self, first, upright, rolls):
        seen["type"] = type(upright)
        return np.zeros((len(rolls), 360, 640, 3), np.uint8)

    monkeypatch.setattr(PasteBack, "frames_on_device", on_device)
    placement = Placement(640, 360, np.array([[320.0, 170.0]]), np.array([200.0]))
    paste = PasteBack(placement, None, device=torch.device("cpu"))
    monkeypatch.setattr(decode_module, "render_upright",
                        lambda *args, **kwargs: torch.zeros((1, 64, 64, 3), dtype=torch.uint8))
    frames = decode_module._draw_with_paste(paste, None, None, None, (), None)(np.zeros((1, 35), np.float32), 0)
    assert seen["type"] is torch.Tensor and frames.shape == (1, 360, 640, 3)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_blend_on_the_gpu_matches_opencvs():
    face, scene = face_and_scene()
    device = torch.device("cuda")
    for centre, side, roll in [((320.0, 170.0), 200.0, 0.0), ((300.5, 190.25), 151.3, 12.5)]:
        expected = paste_face(face, np.array(centre), side, roll, scene)
        got = paste_face_torch(torch.from_numpy(face).to(device), np.array(centre), side, roll,
                               torch.from_numpy(scene).to(device)).cpu().numpy()
        changed, largest, mean = differences(got, expected)
        assert changed < 0.005 and largest <= 2 and mean < 0.01, (changed, largest, mean)


def test_bench_decode_reports_the_blends_cost():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "bench_decode.py"
    spec = importlib.util.spec_from_file_location("bench_decode", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cost = bench.paste_cost(64, (320, 180), torch.device("cpu"), repeats=1, frames=2)
    assert cost["opencv_ms"] > 0 and cost["torch_ms"] > 0
