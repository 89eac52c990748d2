"""The compact ID latent (format 1.3 `idpc`, format_spec.md §3): its fields, its coefficients against a decoder
written from the spec, the golden, malformed extensions, and the decoder rebuilding the latent in the shipped basis."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import arith_reference
from codec.bitstream import StvReader
from codec.bitstream.header import EXT_COMPACT_LATENT
from codec.bitstream.latent import (CompactLatent, compact_latent, compact_latent_problem, decode_compact_latent,
                                    encode_compact_latent, read_basis, reconstruct, step_exponent)
from codec.errors import BitstreamError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SPEC = (ROOT / "format_spec.md").read_text()
BASIS_FILE = ROOT / "weights" / "tiny-64-latent-basis.safetensors"
BASIS = read_basis(BASIS_FILE)
DIGEST = hashlib.sha256(BASIS_FILE.read_bytes()).digest()


def random_compact(seed: int, rows: int = 10) -> CompactLatent:
    rng = np.random.default_rng(seed)
    q = np.rint(rng.laplace(0, 3, (rows, BASIS.dim)) * np.linspace(4, 0.1, BASIS.dim)).astype(np.int32)
    q[0, 0] = -32767
    steps = rng.uniform(0.01, 0.1, rows).astype(np.float32)
    return CompactLatent(DIGEST, q, steps, np.array([step_exponent(s) for s in steps], np.int8))


def test_the_basis_is_orthonormal_and_its_digest_is_the_manifests():
    assert np.allclose(BASIS.components.T @ BASIS.components, np.eye(BASIS.dim), atol=1e-5)
    assert DIGEST.hex() == "4f776eb2d594ed407407e06ad40c3f96043a80ff3287f6cc82ec5ed075689810"


@pytest.mark.parametrize("seed", [0, 1])
def test_round_trip_and_the_spec_decoder_agree(seed):
    compact = random_compact(seed)
    data = encode_compact_latent(compact, BASIS)
    decoded = decode_compact_latent(data, BASIS.log_scales)
    assert np.array_equal(decoded.coefficients, compact.coefficients) and np.array_equal(decoded.steps, compact.steps)
    rows, thresholds = arith_reference.spec_tables(SPEC)
    digest, steps, coefficients = arith_reference.decode_latent(data, BASIS.log_scales.tolist(), rows, thresholds)
    assert digest == DIGEST and coefficients == compact.coefficients.tolist()


def test_quantising_a_latent_rebuilds_it_within_half_a_step_per_coefficient():
    latent = BASIS.mean + np.random.default_rng(2).normal(0, 0.3, (10, BASIS.dim)).astype(np.float32)
    steps = np.full(10, 0.02, np.float32)
    rebuilt = reconstruct(compact_latent(latent, BASIS, DIGEST, steps), BASIS)
    # an orthonormal basis keeps the rounding error's norm: at most 0.01 * sqrt(D) per row
    assert np.linalg.norm(rebuilt - latent, axis=1).max() <= 0.01 * np.sqrt(BASIS.dim) + 1e-4


def test_golden_compact_latent_reads_and_rebuilds():
    reader = StvReader(DATA / "golden_compact_latent.stv")
    assert reader.header.version == (1, 3) and reader.header.id_latent.shape == (1, 1)
    data = reader.header.extension(EXT_COMPACT_LATENT)
    rows, thresholds = arith_reference.spec_tables(SPEC)
    _, _, coefficients = arith_reference.decode_latent(data, BASIS.log_scales.tolist(), rows, thresholds)
    decoded = decode_compact_latent(data, BASIS.log_scales)
    assert decoded.coefficients.tolist() == coefficients and decoded.coefficients[0, 0] == -700
    assert reconstruct(decoded, BASIS).shape == (10, 64) and reader.validate() == []


@pytest.mark.parametrize("cut, problem", [
    (20, "shorter than its 36-byte head"),
    (40, "cannot hold the steps of 10 rows"),
])
def test_malformed_fields_are_reported_not_fatal(cut, problem):
    data = encode_compact_latent(random_compact(3), BASIS)[:cut]
    assert problem in compact_latent_problem(data)


def test_bad_steps_and_too_many_coefficients_are_refused_before_decoding():
    data = bytearray(encode_compact_latent(random_compact(4), BASIS))
    data[36:40] = np.float32(np.nan).tobytes()
    assert "not a finite positive" in compact_latent_problem(bytes(data))
    huge = bytes(DIGEST) + (64).to_bytes(2, "little") + (4096).to_bytes(2, "little") + np.ones(64, "<f4").tobytes() + bytes(64)
    assert "cannot hold 64x4096" in compact_latent_problem(huge)
    with pytest.raises(BitstreamError, match="do not end with"):
        decode_compact_latent(encode_compact_latent(random_compact(5), BASIS)[:-4] + b"\x01\x00\x00\x00",
                              BASIS.log_scales)


def test_the_decoder_renders_with_the_rebuilt_latent():
    from codec.decoder.decode import stream_id_latent

    header = StvReader(DATA / "golden_compact_latent.stv").header
    latent = stream_id_latent(header)
    decoded = decode_compact_latent(header.extension(EXT_COMPACT_LATENT), BASIS.log_scales)
    assert latent.shape == (10, 64) and np.allclose(latent, reconstruct(decoded, BASIS))
