"""Joint refinement closed loop on the tiny model: a clip rendered from a known ID latent, pose and offset tracks;
the encoder's part 1 (e4e inversion, ID selection, head pose) gives the start, the offsets start at zero, and the
refinement must bring back the tracks and the pictures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from codec import zoo
from codec.decoder.render import render
from codec.encoder.encode import canonical_soft_masks
from codec.encoder.frames import as_frame_source
from codec.encoder.losses import make_lpips, psnr
from codec.encoder.head_pose import PoseSettings
from codec.encoder.pipeline import EncoderModels, Part1Settings, encode_part1
from codec.encoder.pose_directions import ESTIMATORS
from codec.encoder.refine import RefineSettings, refine
from codec.encoder.synthetic import make_truth, render_truth
from codec.models.arcface import seeded_standin
from codec.decoder.decode import stream_id_latent
from encoder_fixtures import tiny_models

N_FRAMES = 16
SEED = 3


@pytest.fixture(scope="module")
def loop():
    generator, editor, table = tiny_models()
    spread = table.channel_spread()
    truth = make_truth(generator, editor, table.indices, spread, N_FRAMES, SEED)
    frames = render_truth(generator, editor, truth)
    lpips_module = make_lpips()
    models = EncoderModels(generator, editor, lpips_module, seeded_standin(0), encoder=zoo.load_inverter("tiny"),
                           pose_estimator=ESTIMATORS["moments"])
    part1 = encode_part1(frames, models, canonical_soft_masks(32),
                         Part1Settings(inverter="e4e", pose=PoseSettings(steps=15)), progress=False)
    start = np.zeros((N_FRAMES, len(table.indices)))
    before = _quality(generator, editor, table, part1.id_latent, part1.yaw, part1.pitch, start, frames)
    result = refine(generator, editor, part1.id_latent, part1.yaw, part1.pitch, start, frames, table.indices, spread,
                    RefineSettings(), progress=False)
    after = _quality(generator, editor, table, result.id_latent.half().float(), result.yaw, result.pitch,
                     result.alpha, frames)
    return truth, spread, result, before, after


def _quality(generator, editor, table, id_latent, yaw, pitch, alpha, frames) -> torch.Tensor:
    with torch.no_grad():
        images = render(generator, editor, id_latent.float(), table.indices, torch.tensor(alpha).float(),
                        torch.tensor(yaw).float(), torch.tensor(pitch).float())
    return psnr(images, frames)


def _centred(x: np.ndarray) -> np.ndarray:
    """Each track about its mean over the clip: the stream's offsets and pose are relative to the ID latent, which
    carries its own frame's expression and pose as a constant."""
    return x - x.mean(0)


def test_offsets_are_recovered(loop):
    """Measured on this clip: correlation 0.970 with the true offsets (each channel about its mean, in channel
    spreads); the paper's stages alone reach 0.31-0.44 on such clips (tools/bench_encode.py). Asserted >= 0.95, the
    issue's target. 27 of the 32 channels correlate >= 0.95 alone; what is left is a few channels whose change over
    16 frames looks like a turn of the head, and trades off against yaw (asserted: at least 25)."""
    truth, spread, result, _, _ = loop
    got, want = _centred(result.alpha / spread), _centred(truth.alpha / spread)
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] >= 0.95
    per_channel = [np.corrcoef(got[:, k], want[:, k])[0, 1] for k in range(got.shape[1])]
    assert sum(c >= 0.95 for c in per_channel) >= 25


def test_pictures_are_recovered(loop):
    """Re-synthesis from the float16 ID latent the stream stores: measured 47.6 dB mean, 47.0 dB worst frame; the
    start (part 1, zero offsets) is 25.1 dB. Asserted: >= 40 dB mean (the issue's target), >= 38 dB on every
    frame, and a gain of more than 10 dB."""
    _, _, _, before, after = loop
    assert float(after.mean()) >= 40.0 and float(after.min()) >= 38.0, (before, after)
    assert float(after.mean()) > float(before.mean()) + 10.0


def test_pose_tracks_are_recovered(loop):
    """Measured: yaw correlation 0.99999 (centred RMSE 0.09 units over a 7.7-unit range), pitch 0.998 (0.07 units
    over 2.8: this clip's pitch barely moves). Asserted: >= 0.98 and RMSE <= 0.3 units (the pose stage's own
    bound)."""
    truth, _, result, _, _ = loop
    for got, want in ((result.yaw, truth.yaw), (result.pitch, truth.pitch)):
        assert np.corrcoef(got, want)[0, 1] >= 0.98
        assert np.sqrt(np.mean((_centred(got) - _centred(want)) ** 2)) <= 0.3


def test_offsets_do_not_jitter(loop):
    """Jitter: RMS of the second differences of (recovered - true) offsets, in channel spreads. The truth is smooth
    (periods of 1-4 s), so this is the encoder's own frame-to-frame noise. Measured 0.012 (the paper's stages alone:
    0.05-0.18 on such clips). Bounded at 0.05: 4 % of the tracks' 1.2-spread amplitude, about three quantisation
    steps (2^-6 StyleSpace units, about 0.017 spreads)."""
    truth, spread, result, _, _ = loop
    jitter = np.sqrt(np.mean(np.diff((result.alpha - truth.alpha) / spread, 2, axis=0) ** 2))
    assert jitter <= 0.05


def test_refinement_never_makes_it_worse(loop):
    """Every half-round of the history is at or below the one before (steps are only kept when they help; L-BFGS
    with a Wolfe line search only accepts decreases)."""
    _, _, result, _, _ = loop
    assert np.all(np.diff(result.loss) <= 1e-9), result.loss


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    """The whole encoder (stvenc's function and defaults) on a 16-frame clip written losslessly, read back from the
    .stv: what a decoder gets, quantisation and the float16 ID latent included."""
    from fractions import Fraction

    from codec.bitstream import StvReader
    from codec.encoder.encode import EncodeSettings, encode_video
    from codec.preprocess.video import write_video

    folder = tmp_path_factory.mktemp("e2e")
    generator, editor, table = tiny_models()
    spread = table.channel_spread()
    truth = make_truth(generator, editor, table.indices, spread, 16, 0)
    frames = render_truth(generator, editor, truth)
    pixels = ((frames.clamp(-1, 1) + 1) * 127.5).round().byte()
    write_video(folder / "clip.mkv", iter(pixels.permute(0, 2, 3, 1).numpy()), Fraction(25), lossless=True)
    encode_video(folder / "clip.mkv", folder / "clip.stv", EncodeSettings(aligned_input=True),
                 work_dir=folder / "work", progress=False)
    reader = StvReader(folder / "clip.stv")
    values = np.stack([reader[i] for i in range(len(reader))])
    id_latent = torch.from_numpy(stream_id_latent(reader.header).astype(np.float32))
    originals = pixels.float() / 127.5 - 1
    decoded = _quality(generator, editor, table, id_latent, values[:, 32], values[:, 33], values[:, :32], originals)
    unquantised = load_file(str(folder / "work" / "refine.safetensors"))
    exact = _quality(generator, editor, table, id_latent, unquantised["yaw"].numpy(), unquantised["pitch"].numpy(),
                     unquantised["alpha"].numpy(), originals)
    return truth, spread, values, decoded, exact


def test_end_to_end_closed_loop(stream):
    """stvenc's defaults, through the bitstream. Measured: 46.3 dB against the clip's (8-bit) frames, offsets
    correlation 0.962 about each channel's mean, yaw 0.9999, pitch 0.999 (tools/bench_encode.py runs this same
    clip). Asserted: the issue's targets, >= 40 dB mean and >= 0.95 correlation; yaw and pitch >= 0.98."""
    truth, spread, values, decoded, _ = stream
    assert float(decoded.mean()) >= 40.0, decoded
    got, want = _centred(values[:, :32] / spread), _centred(truth.alpha / spread)
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] >= 0.95
    assert np.corrcoef(values[:, 32], truth.yaw)[0, 1] >= 0.98
    assert np.corrcoef(values[:, 33], truth.pitch)[0, 1] >= 0.98


def test_quantisation_costs_little(stream):
    """The 35 int16 values per frame against the floats they quantise (same float16 ID latent): measured 0.006 dB
    (tools/bench_encode.py); asserted < 0.05 dB, the issue's bound."""
    _, _, _, decoded, exact = stream
    assert float(exact.mean()) - float(decoded.mean()) < 0.05


def test_render_batches_are_sized_by_free_memory():
    from codec.encoder.refine import renders_that_fit

    megabyte = 1 << 20
    assert renders_that_fit(100 * megabyte, 80_000 * megabyte, least=8, most=35) == 35  # a whole Jacobian
    assert renders_that_fit(100 * megabyte, 3_000 * megabyte, least=8, most=35) == 15  # half the free memory
    assert renders_that_fit(100 * megabyte, 100 * megabyte, least=8, most=35) == 8  # never below the frame batch


def test_the_cpu_keeps_its_render_batch():
    from codec.encoder.refine import _Problem, size_render_batch

    generator, editor, table = tiny_models()
    frames = as_frame_source(torch.zeros(2, 3, 64, 64))
    problem = _Problem(generator, editor, table.indices, torch.ones(len(table.indices)), frames, 64, 8, False,
                       torch.tensor([0]))
    params = torch.zeros(2, 2 + len(table.indices))
    assert size_render_batch(problem, torch.from_numpy(np.zeros((1, 1))), params, 8) == 8
    assert problem.renders.forwards == 0


@pytest.mark.cuda
def test_on_a_gpu_a_jacobian_is_one_batch_and_the_refinement_still_improves(loop):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from codec.encoder.refine import _Problem, size_render_batch

    device = torch.device("cuda")
    truth, spread, _, _, _ = loop
    cpu_generator, editor, table = tiny_models()
    frames = render_truth(cpu_generator, editor, truth).to(device)
    generator = zoo.load_generator("tiny", device=device)
    k = len(table.indices)
    problem = _Problem(generator, editor, table.indices, torch.as_tensor(spread, device=device).float(),
                       as_frame_source(frames), generator.config.size, 8, False, torch.tensor([0], device=device))
    params = torch.zeros(len(frames), 2 + k, device=device)
    latent = truth.id_latent.to(device).float()
    assert size_render_batch(problem, latent, params, 8) == k + 3  # yaw, pitch, k offsets and the point itself
    zeros = np.zeros(len(frames))
    result = refine(generator, editor, latent, zeros, zeros, np.zeros((len(frames), k)), frames, table.indices,
                    spread, RefineSettings(rounds=1), progress=False)
    assert result.loss[-1] <= result.loss[0]
