"""(1.3) The compact ID latent, extension `idpc`: the W+ latent as integer coefficients in a shipped PCA basis of
the generator's W space, one quantiser step per row, coded with the `arith` profile's coder (format_spec.md §3).

    L[r] = mean + basis @ (q[r] * step[r])          (binary64, then float32; basis columns = components)

The basis is a file (`LatentBasis`: mean, orthonormal components, each component's integer log-scale), named in
the extension by its sha256: a decoder uses exactly the numbers the encoder used, never a basis recomputed on
another machine. This module reads and writes the extension and reconstructs the latent from a basis it is given;
finding the basis file by digest is the model registry's job (codec.zoo), a layer above.

Layout (little-endian): bytes[32] basis sha256, u16 R, u16 D, R x f32 row steps (finite, > 0), R x i8 row step
exponents k_r (context only: the encoder writes round(4 log2 step_r)), then coder words (format_spec.md §7b's
rANS) that decode to the R x D coefficients row by row, component by component: coefficient (r, j) is one
residual (§7b "Symbols") of scale class clamp((s_j - k_r) // 2 + 7, 0, 23), s_j the basis's log-scale of
component j (round(4 log2 of its standard deviation)).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from codec.bitstream.arith import N_CLASSES, ResidualDecoder, ResidualEncoder
from codec.bitstream.schema import MAX_LATENT_DIM, MAX_LATENT_ROWS
from codec.errors import BitstreamError

EXT_COMPACT_LATENT = b"idpc"
HEAD = struct.Struct("<32sHH")
COEFFICIENT_LIMIT = 32767  # coefficients are coded as 16-bit residuals
# A decodable extension holds at most this many coefficients per byte (plus slack): each costs at least 0.0931
# bits, as in the arith profile (format_spec.md §7b).
COEFFICIENTS_PER_BYTE_BOUND = 128
COEFFICIENTS_BOUND_SLACK = 8


@dataclass(frozen=True)
class LatentBasis:
    """A PCA basis of a generator's W space: mean (D,), components (D, D) as columns, log_scales (D,) int."""

    mean: np.ndarray
    components: np.ndarray
    log_scales: np.ndarray

    @property
    def dim(self) -> int:
        return len(self.mean)


@dataclass(frozen=True)
class CompactLatent:
    basis_sha256: bytes
    coefficients: np.ndarray  # int32 (R, D)
    steps: np.ndarray  # float32 (R,)
    step_exponents: np.ndarray  # int8 (R,)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.coefficients.shape)


def scale_class(log_scale: int, step_exponent: int) -> int:
    return max(0, min(N_CLASSES - 1, (int(log_scale) - int(step_exponent)) // 2 + 7))


def step_exponent(step: float) -> int:
    return int(np.clip(np.rint(4 * np.log2(step)), -128, 127))


def compact_latent(latent: np.ndarray, basis: LatentBasis, basis_sha256: bytes, steps: np.ndarray) -> CompactLatent:
    """Quantise a (R, D) latent's coefficients in `basis`, row r with steps[r]."""
    latent = np.asarray(latent, np.float64)
    steps = np.asarray(steps, np.float32)
    coefficients = (latent - basis.mean.astype(np.float64)) @ basis.components.astype(np.float64)
    q = np.rint(coefficients / steps.astype(np.float64)[:, None])
    q = np.clip(q, -COEFFICIENT_LIMIT, COEFFICIENT_LIMIT).astype(np.int32)
    return CompactLatent(basis_sha256, q, steps, np.array([step_exponent(s) for s in steps], np.int8))


def reconstruct(compact: CompactLatent, basis: LatentBasis) -> np.ndarray:
    """The (R, D) float32 latent a compact latent stands for."""
    if basis.dim != compact.shape[1]:
        raise BitstreamError(f"compact ID latent has {compact.shape[1]} components, its basis {basis.dim}")
    scaled = compact.coefficients.astype(np.float64) * compact.steps.astype(np.float64)[:, None]
    return (basis.mean.astype(np.float64) + scaled @ basis.components.astype(np.float64).T).astype(np.float32)


def encode_compact_latent(compact: CompactLatent, basis: LatentBasis) -> bytes:
    rows, dim = compact.shape
    coder = ResidualEncoder()
    for r in range(rows):
        for j in range(dim):
            coder.add(int(compact.coefficients[r, j]), scale_class(basis.log_scales[j], compact.step_exponents[r]))
    return (HEAD.pack(compact.basis_sha256, rows, dim) + compact.steps.astype("<f4").tobytes()
            + compact.step_exponents.astype("i1").tobytes() + coder.words())


def decode_compact_latent(data: bytes, log_scales: np.ndarray | None = None) -> CompactLatent:
    """The extension's data -> CompactLatent. Without the basis's `log_scales` only the fields are read (the
    coefficients are left empty); BitstreamError names what is malformed."""
    what = "compact ID latent"
    if len(data) < HEAD.size:
        raise BitstreamError(f"{what}: {len(data)} bytes, shorter than its {HEAD.size}-byte head")
    digest, rows, dim = HEAD.unpack_from(data)
    if not (1 <= rows <= MAX_LATENT_ROWS and 1 <= dim <= MAX_LATENT_DIM):
        raise BitstreamError(f"{what}: shape {rows}x{dim} outside rows 1..{MAX_LATENT_ROWS}, dim 1..{MAX_LATENT_DIM}")
    body = HEAD.size + 5 * rows
    if len(data) < body:
        raise BitstreamError(f"{what}: {len(data)} bytes cannot hold the steps of {rows} rows")
    steps = np.frombuffer(data, "<f4", rows, HEAD.size).astype(np.float32)
    if not (np.isfinite(steps).all() and (steps > 0).all()):
        raise BitstreamError(f"{what}: a row step is not a finite positive number")
    exponents = np.frombuffer(data, "i1", rows, HEAD.size + 4 * rows).astype(np.int8)
    if rows * dim > COEFFICIENTS_PER_BYTE_BOUND * (len(data) + COEFFICIENTS_BOUND_SLACK):
        raise BitstreamError(f"{what}: {len(data)} bytes cannot hold {rows}x{dim} coefficients")
    if log_scales is None:
        return CompactLatent(digest, np.zeros((0, dim), np.int32), steps, exponents)
    if len(log_scales) != dim:
        raise BitstreamError(f"{what} has {dim} components, its basis {len(log_scales)}")
    coder = ResidualDecoder(bytes(data[body:]), what)
    q = np.empty((rows, dim), np.int32)
    for r in range(rows):
        for j in range(dim):
            q[r, j] = coder.residual(scale_class(log_scales[j], exponents[r]))
    coder.check_finished("the last coefficient")
    return CompactLatent(digest, q, steps, exponents)


def compact_latent_problem(data: bytes) -> str | None:
    """What is wrong with an `idpc` extension's fields (its coefficients need the basis), or None."""
    try:
        decode_compact_latent(data)
    except BitstreamError as exc:
        return str(exc).removeprefix("compact ID latent: ")
    return None


def read_basis(path) -> LatentBasis:
    """A basis file (safetensors: `mean` (D,) f32, `components` (D, D) f32, `log_scales` (D,) i32)."""
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
        basis = LatentBasis(tensors["mean"], tensors["components"], tensors["log_scales"])
    except (OSError, KeyError, ValueError) as exc:
        raise BitstreamError(f"{path}: not a latent basis file ({exc})") from None
    d = basis.dim
    if basis.components.shape != (d, d) or basis.log_scales.shape != (d,):
        raise BitstreamError(f"{path}: not a latent basis file (shapes {basis.components.shape}, {basis.log_scales.shape})")
    return basis


def compact_latent_summary(data: bytes) -> str:
    """How stvinfo shows an `idpc` extension."""
    try:
        fields = decode_compact_latent(data)
    except BitstreamError as exc:
        return f"malformed: {str(exc).removeprefix('compact ID latent: ')}"
    rows, dim = len(fields.steps), fields.coefficients.shape[1]
    return (f"{rows}x{dim} in basis sha256 {fields.basis_sha256.hex()[:16]}..., {len(data)} bytes, row steps "
            f"{float(fields.steps.min()):.3g}..{float(fields.steps.max()):.3g}")
