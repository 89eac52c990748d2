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


def test_quality_sets_the_noise_and_back():
    assert noise_levels(DEFAULT_QUALITY) == pytest.approx(0.1)
    assert noise_levels(DEFAULT_QUALITY + 10) == pytest.approx(0.05)
    assert quality_for_noise(noise_levels(37.5)) == pytest.approx(37.5)
    with pytest.raises(InputError, match="outside 0..100"):
        check_quality(101)


def test_steps_are_inverse_to_sensitivity_and_clamped():
    sensitivity = np.r_[np.full(34, 2.0), 0.0]
    steps = quantiser_steps(sensitivity, DEFAULT_QUALITY)
    assert steps[0] == pytest.approx(0.1 * math.sqrt(12 / 35) / 2.0, rel=1e-6)
    assert steps[34] == STEP_RANGE[1]  # a parameter the picture does not show: the coarsest step
    assert (quantiser_steps(sensitivity, 70)[:34] < steps[:34]).all()  # higher quality: finer steps


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
    # targets: the exact rendering plus noise of 2 levels RMS (what the encoder could not fit)
    targets = TensorFrames(renderer(params) + torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(0))
                           * (2.0 / 127.5))
    choice = choose_quantisation(renderer, targets, params, gains, quality=DEFAULT_QUALITY)
    predicted = 10 * math.log10(1 + 0.1**2 / 2.0**2)
    assert choice.loss.loss_db == pytest.approx(predicted, rel=0.3)
    target = 0.5
    bounded = choose_quantisation(renderer, targets, params, gains, max_loss_db=target)
    assert bounded.loss.loss_db <= target and bounded.quality < DEFAULT_QUALITY  # a looser budget: coarser steps


def test_per_parameter_steps_need_nothing_new_from_a_1_0_reader(tmp_path):
    """The quantisation table always held 35 (scale, offset) pairs: a reader that knows only the 1.0 layout
    (format_spec.md §3-5, parsed here by hand) dequantises a rate-controlled raw stream exactly."""
    import struct

    from codec.bitstream import QuantTable, StvWriter, quantise
    from test_bitstream_helpers import make_header

    params = np.cumsum(np.random.default_rng(4).normal(0, 0.2, (12, N_PARAMS)), axis=0)
    steps = quantiser_steps(np.geomspace(0.2, 8.0, N_PARAMS), DEFAULT_QUALITY)
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
