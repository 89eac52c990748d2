"""Small, deterministic .stv streams for the tiny generator (the decoder and stv-eval tests build on them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codec import zoo
from codec.bitstream import N_PARAMS, QuantTable, StvHeader, StvWriter, dequantise, quantise
from codec.models.pose import LinearPoseEditor

GENERATOR = "tiny"
N_FRAMES = 10
CHUNK = 4  # = the tests' decode batch, so a truncated file's whole chunks render in the same batches
# frames of the test stream kept in tests/data/decoder_golden.png (tools/make_decoder_golden.py): one per decode
# batch of 4, roll 0, positive and negative
GOLDEN_FRAMES = (0, 3, 6, 8)
# 32 (layer, channel) pairs on the tiny generator's non-toRGB layers (channel < 32 exists in every layer)
STYLE_INDICES = tuple((layer, (7 * k + layer) % 32) for k, layer in enumerate([0, 2, 3, 5, 6, 8, 9, 11, 12] * 4))[:32]


@pytest.fixture(scope="session")
def generator():
    return zoo.load_generator(GENERATOR)


def seeded_editor(generator, seed: int = 0) -> LinearPoseEditor:
    """Random yaw/pitch directions: the decoder only needs *an* editor, and random ones make pose visible."""
    gen = torch.Generator().manual_seed(seed)
    return LinearPoseEditor(0.2 * torch.randn(2, generator.n_latent, generator.style_dim, generator=gen))


def seeded_latent(generator, seed: int) -> np.ndarray:
    """A W+ latent of the generator (mapped z plus a little per-row spread), as float16 like a header's."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = generator.mapping(torch.randn(1, generator.style_dim, generator=gen))
    rows = w.expand(generator.n_latent, -1) + 0.1 * torch.randn(generator.n_latent, generator.style_dim, generator=gen)
    return rows.numpy().astype(np.float16)


def seeded_tracks(n: int, seed: int = 0) -> np.ndarray:
    """Smooth parameter tracks (n, 35): alphas of a few StyleSpace units, pose of a unit, roll of ~10 degrees,
    with frame 0 at roll 0 so both roll paths (identity and rotation) are exercised."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n)[:, None]
    tracks = 2.0 * np.sin(2 * np.pi * (t * rng.uniform(0.5, 2, N_PARAMS) + rng.uniform(0, 1, N_PARAMS)))
    tracks[:, 34] = 10.0 * np.sin(2 * np.pi * t[:, 0])
    return tracks


def make_header(generator, seed: int = 1, tracks: np.ndarray | None = None, **changes) -> StvHeader:
    fields = dict(width=generator.size, height=generator.size, fps_num=25, fps_den=1, generator_name=GENERATOR,
                  generator_sha256=bytes.fromhex(zoo.generator_digest(GENERATOR)), style_indices=STYLE_INDICES,
                  quant=QuantTable.from_data(tracks) if tracks is not None else QuantTable.identity(),
                  id_latent=seeded_latent(generator, seed), frame_count=None)
    fields.update(changes)
    return StvHeader(**fields)


def write_stream(path: Path, generator, n: int = N_FRAMES, latent_seed: int = 1, track_seed: int = 0,
                 **header_changes) -> tuple[Path, np.ndarray]:
    """Write a stream; returns (path, its dequantised tracks (n, 35): exactly what a reader gives back)."""
    tracks = seeded_tracks(n, track_seed)
    header = make_header(generator, latent_seed, tracks, **header_changes)
    records, _, _ = quantise(tracks, header.quant)
    with StvWriter(path, header, chunk_frames=CHUNK) as writer:
        writer.append(records)
    return Path(path), dequantise(records, header.quant)
