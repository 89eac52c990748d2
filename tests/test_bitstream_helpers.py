"""Small .stv files built in memory for the bitstream and stvinfo tests (tiny 2x8 ID latent so parses are cheap)."""

from __future__ import annotations

import io
import zlib

import numpy as np

from codec.bitstream import N_PARAMS, QuantTable, StvHeader, StvWriter, quantise


def smooth_params(n: int, seed: int = 0) -> np.ndarray:
    """Random-walk parameter tracks (n, 35): smooth enough for the entropy profile to matter."""
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(0.0, 0.05, (n, N_PARAMS)), axis=0)


def make_header(params: np.ndarray | None = None, rows: int = 2, dim: int = 8, **changes) -> StvHeader:
    table = QuantTable.from_data(params) if params is not None else QuantTable.identity()
    fields = dict(
        width=64,
        height=64,
        fps_num=25,
        fps_den=1,
        generator_name="tiny-64",
        generator_sha256=bytes(range(32)),
        style_indices=[(k % 14, k) for k in range(32)],
        quant=table,
        id_latent=np.linspace(-2, 2, rows * dim).reshape(rows, dim),
    )
    fields.update(changes)
    return StvHeader(**fields)


def make_file(n: int = 12, profile: str = "raw", chunk_frames: int = 4, seed: int = 0, **header_changes):
    """(file bytes, int16 records, header) for n frames written through StvWriter into memory."""
    params = smooth_params(n, seed)
    header = make_header(params, **header_changes)
    records, _, _ = quantise(params, header.quant)
    out = io.BytesIO()
    with StvWriter(out, header, profile=profile, chunk_frames=chunk_frames) as writer:
        writer.append(records)
    return out.getvalue(), records, header


def recrc_header(data: bytearray) -> bytearray:
    """Recompute the header CRC after a deliberate edit, so a test reaches the checks behind the CRC."""
    size = int.from_bytes(data[12:16], "little")
    data[size - 4 : size] = zlib.crc32(bytes(data[: size - 4])).to_bytes(4, "little")
    return data
