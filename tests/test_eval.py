"""stv-eval against known truths: identical videos, a constant shift (closed forms for L1, PSNR and SSIM),
growing noise (metrics move the right way), skipped metrics with reasons, and bad input."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from codec import zoo
from codec.cli.stveval import main
from codec.eval.metrics import paired_batches
from codec.models.arcface import seeded_standin
from codec.preprocess.video import write_video

N = 6
SIZE = 64


@pytest.fixture(autouse=True)
def empty_model_cache(tmp_path, monkeypatch):
    # the identity network's weights are looked up under $STV_HOME: start from a cache that has none
    monkeypatch.setenv("STV_HOME", str(tmp_path / "stv_home"))


def smooth_frames(seed: int = 0) -> list[np.ndarray]:
    """Smooth random pictures with values in 20..235, so a +-10 shift never clips."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(20, 235, (N, 8, 8, 3))
    return [np.kron(c, np.ones((SIZE // 8, SIZE // 8, 1))).round().astype(np.uint8) for c in coarse]


def save(path, frames):
    write_video(path, frames, Fraction(25), lossless=True)  # FFV1: the pixels come back exactly
    return path


def evaluate(ref, test, *extra):
    result = CliRunner().invoke(main, [str(ref), str(test), "--json", "-q", "--device", "cpu", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result


def test_identical_videos(tmp_path):
    ref = save(tmp_path / "ref.mkv", smooth_frames())
    out, _ = evaluate(ref, ref)
    assert out["frames"] == N and out["l1"] == 0 and out["psnr"] == 100.0  # 100 dB: the documented cap
    assert out["ssim"] == pytest.approx(1.0, abs=1e-12) and out["lpips"] == pytest.approx(0.0, abs=1e-6)
    for metric in ("identity_similarity", "fid", "fvd"):
        assert out[metric] is None and out["skipped"][metric]
    assert "arcface" in out["skipped"]["identity_similarity"].lower()
    assert "seeded" in out["notes"]["lpips"].lower() or "imagenet" in out["notes"]["lpips"].lower()


def test_constant_shift_matches_closed_forms(tmp_path):
    flat = [np.full((SIZE, SIZE, 3), 100, np.uint8)] * N
    shifted = [f + np.uint8(10) for f in flat]
    out, _ = evaluate(save(tmp_path / "a.mkv", flat), save(tmp_path / "b.mkv", shifted))
    assert out["l1"] == pytest.approx(10 / 255, abs=1e-12)
    assert out["psnr"] == pytest.approx(20 * math.log10(255 / 10), abs=1e-9)
    # flat pictures: SSIM's structure term is 1, its luminance term (2xy + C1) / (x^2 + y^2 + C1), C1 = (0.01*255)^2
    c1 = (0.01 * 255) ** 2
    assert out["ssim"] == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1), abs=1e-9)


def test_metrics_move_the_right_way_with_noise(tmp_path):
    frames = smooth_frames()
    ref = save(tmp_path / "ref.mkv", frames)
    rng = np.random.default_rng(1)
    results = []
    for k, sigma in enumerate((3, 10, 30)):
        noisy = [np.clip(f + rng.normal(0, sigma, f.shape), 0, 255).round().astype(np.uint8) for f in frames]
        results.append(evaluate(ref, save(tmp_path / f"n{k}.mkv", noisy))[0])
    for a, b in zip(results, results[1:]):
        assert a["l1"] < b["l1"] and a["psnr"] > b["psnr"] and a["ssim"] > b["ssim"] and a["lpips"] < b["lpips"]
    # Gaussian noise of std 3 (little clipping in 20..235): MSE ~ 9 -> PSNR ~ 38.6 dB (rounding adds 1/12)
    assert results[0]["psnr"] == pytest.approx(10 * math.log10(255**2 / (9 + 1 / 12)), abs=0.3)


def test_identity_similarity_with_installed_weights(tmp_path, monkeypatch):
    """The plumbing of the identity metric (a stand-in file placed where the official one goes: 1.0 for
    identical videos, less for different faces); the number is only meaningful with the official weights."""
    # the stand-in cannot match the published digest: install it under a manifest without one (STV_MANIFEST)
    data = json.loads(zoo.MANIFEST.read_text())
    data["models"]["arcface_ir_se50"].update(sha256=None, size=None)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    monkeypatch.setenv("STV_MANIFEST", str(tmp_path / "manifest.json"))
    weights = tmp_path / "stv_home" / "weights" / "model_ir_se50.pth"
    weights.parent.mkdir(parents=True)
    torch.save(seeded_standin().state_dict(), weights)
    ref = save(tmp_path / "ref.mkv", smooth_frames(0))
    same, _ = evaluate(ref, ref, "--no-lpips")
    other, _ = evaluate(ref, save(tmp_path / "other.mkv", smooth_frames(7)), "--no-lpips")
    assert same["identity_similarity"] == pytest.approx(1.0, abs=1e-5)
    assert other["identity_similarity"] < 0.999
    assert "identity_similarity" not in same["skipped"]


def test_length_mismatch_compares_the_common_frames(tmp_path):
    frames = smooth_frames()
    out, result = evaluate(save(tmp_path / "a.mkv", frames), save(tmp_path / "b.mkv", frames[:4]), "--no-lpips")
    assert (out["frames"], out["reference_frames"], out["test_frames"]) == (4, N, 4)
    assert "warning" in result.stderr


def test_paired_batches_counts_both_videos():
    counts: list[int] = []
    batches = list(paired_batches(iter([np.zeros((2, 2, 3))] * 5), iter([np.zeros((2, 2, 3))] * 3), 2, counts))
    assert [len(a) for a, _ in batches] == [2, 1] and counts == [5, 3]


def test_bad_input_is_one_line(tmp_path):
    ref = save(tmp_path / "ref.mkv", smooth_frames())
    small = save(tmp_path / "small.mkv", [f[:32, :32] for f in smooth_frames()])
    for args, words in (([ref, tmp_path / "missing.mp4"], "no such file"), ([ref, small], "frame sizes differ")):
        result = CliRunner().invoke(main, [str(a) for a in args] + ["-q"])
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert lines[-1].startswith("stv-eval: error: ") and words in lines[-1], result.output


def test_dlib_identity_distance_on_a_real_face(tmp_path):
    """scikit-image's astronaut: the same frames are at distance 0; with noise the face is still the same person
    by dlib's own threshold (0.6; measured ~0.2 for noise of std 10 on the full picture)."""
    from skimage.data import astronaut

    face = np.ascontiguousarray(astronaut()[0:256, 96:352])
    rng = np.random.default_rng(0)
    noisy = [np.clip(face + rng.normal(0, 8, face.shape), 0, 255).round().astype(np.uint8) for _ in range(2)]
    ref = save(tmp_path / "ref.mkv", [face, face])
    same, _ = evaluate(ref, ref, "--no-lpips")
    assert same["identity_distance_dlib"] == pytest.approx(0.0, abs=1e-9)
    assert "2 of 2" in same["notes"]["identity_distance_dlib"]
    close, _ = evaluate(ref, save(tmp_path / "noisy.mkv", noisy), "--no-lpips")
    assert 0.0 < close["identity_distance_dlib"] < 0.6


def test_no_face_skips_the_dlib_identity(tmp_path):
    ref = save(tmp_path / "ref.mkv", smooth_frames())
    out, _ = evaluate(ref, ref, "--no-lpips")
    assert out["identity_distance_dlib"] is None and "no face" in out["skipped"]["identity_distance_dlib"]


def placed_stream(path, width: int, height: int, centre, side: float, frames: int = N):
    """A small stream (roll 0) whose `plac` puts every frame's face at `centre` with crop side `side`."""
    from codec.bitstream.header import EXT_PLACEMENT, decode_header, encode_header
    from codec.bitstream.placement import Placement, encode_placement
    from test_bitstream_helpers import make_file

    data, _, _ = make_file(frames, "raw")
    header, size = decode_header(data)
    plac = encode_placement(Placement(width, height, np.tile(np.asarray(centre, float), (frames, 1)),
                                      np.full(frames, float(side))))
    edited = type(header)(**{**header.__dict__, "extensions": ((EXT_PLACEMENT, plac),)})
    path.write_bytes(encode_header(edited) + data[size:])
    return path


def test_regions_split_the_frame_by_the_streams_placement(tmp_path):
    """A change confined to the face shows in --region face only; one outside it in --region background only."""
    from codec.bitstream import StvReader
    from codec.preprocess.background import face_region

    ref_frames = smooth_frames()
    stream = placed_stream(tmp_path / "placed.stv", SIZE, SIZE, (32.0, 30.0), 40.0)
    rolls = StvReader(stream).values()[:, -1]
    face = [face_region(np.array([32.0, 30.0]), 40.0, float(r), (SIZE, SIZE)) for r in rolls]
    assert all(0.05 < f.mean() < 0.8 for f in face)
    in_face = [np.where(f[..., None], np.clip(x.astype(int) + 12, 0, 255), x).astype(np.uint8)
               for x, f in zip(ref_frames, face)]
    ref = save(tmp_path / "ref.mkv", ref_frames)
    test = save(tmp_path / "face_changed.mkv", in_face)
    face_out, _ = evaluate(ref, test, "--region", "face", "--stream", str(stream))
    rest_out, _ = evaluate(ref, test, "--region", "background", "--stream", str(stream))
    whole, _ = evaluate(ref, test, "--no-identity")
    assert rest_out["psnr"] == 100.0 and rest_out["l1"] == 0
    assert face_out["psnr"] == pytest.approx(20 * math.log10(255 / 12), abs=0.05)
    assert whole["psnr"] > face_out["psnr"] and whole["lpips"] is not None
    assert face_out["lpips"] is None and "whole-picture" in face_out["skipped"]["lpips"]


def test_regions_need_a_stream_with_placement(tmp_path):
    ref = save(tmp_path / "ref.mkv", smooth_frames())
    result = CliRunner().invoke(main, [str(ref), str(ref), "--region", "face", "-q"])
    assert result.exit_code == 2 and "needs --stream" in result.output
    from test_bitstream_helpers import make_file

    plain = tmp_path / "plain.stv"
    plain.write_bytes(make_file(N, "raw")[0])
    result = CliRunner().invoke(main, [str(ref), str(ref), "--region", "face", "--stream", str(plain), "-q"])
    assert result.exit_code == 2 and "no placement" in result.output and "Traceback" not in result.output
    wrong = placed_stream(tmp_path / "wrong.stv", 128, 128, (60.0, 60.0), 50.0)
    result = CliRunner().invoke(main, [str(ref), str(ref), "--region", "background", "--stream", str(wrong), "-q"])
    assert result.exit_code == 2 and "places faces in 128x128" in result.output
