"""Rate-distortion control (codec.encoder.rate): steps from sensitivities and quality, the noise model, and the
--max-loss-db search, on a linear stand-in renderer whose picture derivative is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from codec.encoder.frames import TensorFrames
from codec.encoder.rate import (DEFAULT_QUALITY, N_PARAMS, STEP_RANGE, check_quality, choose_quantisation,
                                noise_levels, parameter_sensitivity, quality_for_noise, quantiser_steps)
from codec.errors import InputError

PIXELS = 3 * 16 * 16


class LinearRenderer:
    """images = a linear map of the parameters: each parameter moves the picture by `gains[k]` levels RMS
    per unit (orthogonal patterns), so its sensitivity is exactly gains[k]."""

    def __init__(self, gains: np.ndarray, seed: int = 0):
        q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(PIXELS, N_PARAMS)))
        # a unit orthonormal column has RMS 1/sqrt(PIXELS); scale it to gains[k] levels = gains[k]/127.5 units
        self.patterns = torch.from_numpy(q * np.sqrt(PIXELS) * (np.asarray(gains) / 127.5)).float()

    def __call__(self, params: np.ndarray) -> torch.Tensor:
        p = torch.as_tensor(np.asarray(params, np.float32))
        return (p @ self.patterns.T).reshape(-1, 3, 16, 16)

    def fitted_targets(self, params: np.ndarray, levels: float, seed: int) -> TensorFrames:
        """The rendering of `params` plus what a fit could not explain: noise of `levels` RMS with its components
        along the parameters' patterns removed (at a least-squares optimum the residual is orthogonal to them)."""
        noise = torch.randn(len(params), PIXELS, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        basis = torch.linalg.qr(self.patterns.double())[0]
        residual = noise - (noise @ basis) @ basis.T
        residual *= levels / 127.5 / residual.pow(2).mean().sqrt()
        return TensorFrames(self(params) + residual.float().reshape(-1, 3, 16, 16))


def test_quality_sets_the_noise_relative_to_the_fit_and_back():
    assert noise_levels(DEFAULT_QUALITY, 4.0) == pytest.approx(0.4)  # a tenth of the re-synthesis error
    assert noise_levels(DEFAULT_QUALITY + 10, 4.0) == pytest.approx(0.2)  # halved every +10
    assert noise_levels(DEFAULT_QUALITY, 0.0) == pytest.approx(0.1)  # a perfect fit: the floor
    assert noise_levels(DEFAULT_QUALITY, 0.5) == pytest.approx(0.1)
    assert quality_for_noise(noise_levels(37.5, 20.0), 20.0) == pytest.approx(37.5)
    with pytest.raises(InputError, match="outside 0..100"):
        check_quality(101)


def test_steps_are_inverse_to_sensitivity_and_clamped():
    sensitivity = np.r_[np.full(34, 2.0), 0.0]
    steps = quantiser_steps(sensitivity, noise_levels(DEFAULT_QUALITY, 3.0))
    assert steps[0] == pytest.approx(0.3 * math.sqrt(12 / 35) / 2.0, rel=1e-6)
    assert steps[34] == STEP_RANGE[1]  # a parameter the picture does not show: the coarsest step
    assert (quantiser_steps(sensitivity, noise_levels(70, 3.0))[:34] < steps[:34]).all()  # higher quality: finer steps
    assert (quantiser_steps(sensitivity, noise_levels(DEFAULT_QUALITY, 6.0))[:34] > steps[:34]).all()  # a worse fit: coarser


def test_measured_sensitivity_is_the_picture_derivative():
    gains = np.linspace(0.5, 5.0, N_PARAMS)
    renderer = LinearRenderer(gains)
    params = np.random.default_rng(1).normal(0, 1, (20, N_PARAMS))
    measured = parameter_sensitivity(renderer, params, [None] * 32, np.ones(32))
    assert np.allclose(measured, gains, rtol=1e-3)


def test_loss_follows_the_model_and_max_loss_db_holds():
    gains = np.linspace(0.5, 5.0, N_PARAMS)
    renderer = LinearRenderer(gains)
    rng = np.random.default_rng(2)
    params = np.cumsum(rng.normal(0, 0.3, (64, N_PARAMS)), axis=0)
    targets = renderer.fitted_targets(params, 2.0, seed=0)  # the encoder's fit missed 2 levels RMS
    choice = choose_quantisation(renderer, targets, params, gains, quality=DEFAULT_QUALITY)
    predicted = 10 * math.log10(1 + 0.1**2)  # the noise is a tenth of the 2 levels the fit misses
    assert choice.loss.loss_db == pytest.approx(predicted, rel=0.3)
    # twice the unfitted noise: twice the steps, and the same loss in dB
    noisier = renderer.fitted_targets(params, 4.0, seed=0)
    coarser = choose_quantisation(renderer, noisier, params, gains, quality=DEFAULT_QUALITY)
    assert np.allclose(coarser.steps[:34], 2 * choice.steps[:34], rtol=0.02)
    assert coarser.loss.loss_db == pytest.approx(predicted, rel=0.3)
    target = 0.5
    bounded = choose_quantisation(renderer, targets, params, gains, max_loss_db=target)
    assert bounded.loss.loss_db <= target and bounded.quality < DEFAULT_QUALITY  # a looser budget: coarser steps


def test_a_wrong_sensitivity_is_corrected_by_the_measured_loss():
    """Sensitivities 1.6 times too high give steps 1.6 times too fine: the first measurement shows the noise
    short by that factor, and the steps are corrected once, so the quality still costs its loss."""
    gains = np.linspace(0.5, 5.0, N_PARAMS)
    renderer = LinearRenderer(gains)
    rng = np.random.default_rng(3)
    params = np.cumsum(rng.normal(0, 0.3, (64, N_PARAMS)), axis=0)
    targets = renderer.fitted_targets(params, 2.0, seed=1)
    right = choose_quantisation(renderer, targets, params, gains)
    wrong = choose_quantisation(renderer, targets, params, 1.6 * gains)
    assert right.calibration == 1.0  # within the tolerance: one quantisation
    assert wrong.calibration == pytest.approx(1 / 1.6, rel=0.15)
    assert np.allclose(wrong.steps, right.steps, rtol=0.15)
    assert wrong.loss.loss_db == pytest.approx(10 * math.log10(1 + 0.1**2), rel=0.3)


def test_per_parameter_steps_need_nothing_new_from_a_1_0_reader(tmp_path):
    """The quantisation table always held 35 (scale, offset) pairs: a reader that knows only the 1.0 layout
    (format_spec.md §3-5, parsed here by hand) dequantises a rate-controlled raw stream exactly."""
    import struct

    from codec.bitstream import QuantTable, StvWriter, quantise
    from test_bitstream_helpers import make_header

    params = np.cumsum(np.random.default_rng(4).normal(0, 0.2, (12, N_PARAMS)), axis=0)
    steps = quantiser_steps(np.geomspace(0.2, 8.0, N_PARAMS), 0.2)
    table = QuantTable.from_data(params, steps=steps)
    assert len(set(table.scale.tolist())) == N_PARAMS  # 35 different steps
    path = tmp_path / "rate.stv"
    with StvWriter(path, make_header(params, quant=table), profile="raw", chunk_frames=12) as writer:
        writer.append(params)
    data = path.read_bytes()
    n = data[32]
    quant = struct.unpack_from("<70f", data, 193 + n)
    scale, offset = np.array(quant[0::2], np.float64), np.array(quant[1::2], np.float64)
    header_size = struct.unpack_from("<I", data, 12)[0]
    records = np.frombuffer(data, "<i2", 12 * N_PARAMS, header_size + 16).reshape(12, N_PARAMS)
    assert data[8:10] == b"\x01\x01" and data[header_size + 4] == 0  # minor 1, a raw chunk
    assert np.array_equal(offset + scale * records, offset + scale * quantise(params, table)[0])
    assert np.all(np.abs(offset + scale * records - params) <= scale / 2 + 1e-9)
