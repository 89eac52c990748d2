"""Quantisation of the 35 per-frame parameters to int16 and back.

    value = offset + scale * q,   q an int16,   scale and offset float32 (one pair per parameter)

`QuantTable.from_data` picks offset = centre of the data's range and the scale that spans the range plus a
margin, but never finer than a per-parameter step (DEFAULT_STEPS): resolution far below what changes a picture
only costs bits in the entropy-coded profile. `quantise` rounds to nearest, clips to int16 and counts every
clipped value in a `SaturationReport` (never silent).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codec.bitstream.schema import N_PARAMS, PARAM_NAMES
from codec.errors import BitstreamError

INT16_MIN, INT16_MAX = -32768, 32767

# Default resolution: 2^-6 for every parameter (exact in float32). For an alpha that is 0.016 StyleSpace units,
# under 2 % of a style channel whose value is ~1 and well under 1 % of a typical StyleSpace edit (several
# units), so the rounding error (at most 0.008) cannot be seen; its noise (std step/sqrt(12) = 0.0045) is no
# larger than an optimiser's frame-to-frame jitter, so finer steps would mostly code that jitter. For yaw and
# pitch it is 0.016 slider units (~0.02 degree); for roll 0.016 degree (0.14 px at the rim of a 1024 face).
# int16 then spans +-512 units: no realistic parameter saturates. tools/bench_rate.py --alpha-step shows the
# rate cost of finer alphas (2^-7 costs ~4 bytes/frame more on its traces).
DEFAULT_STEPS = np.full(N_PARAMS, 2.0**-6, dtype=np.float32)


@dataclass(frozen=True)
class QuantTable:
    """Per-parameter float32 scale (> 0) and offset, each of shape (35,)."""

    scale: np.ndarray
    offset: np.ndarray

    def __post_init__(self) -> None:
        scale = np.asarray(self.scale, dtype=np.float32).reshape(-1)
        offset = np.asarray(self.offset, dtype=np.float32).reshape(-1)
        if scale.shape != (N_PARAMS,) or offset.shape != (N_PARAMS,):
            raise BitstreamError(f"quantisation table needs {N_PARAMS} scales and offsets")
        bad = ~np.isfinite(scale) | ~(scale > 0) | ~np.isfinite(offset)
        if bad.any():
            name = PARAM_NAMES[int(np.flatnonzero(bad)[0])]
            raise BitstreamError(f"quantisation table entry {name} is not a finite positive scale and finite offset")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "offset", offset)

    @classmethod
    def identity(cls) -> "QuantTable":
        return cls(np.ones(N_PARAMS, np.float32), np.zeros(N_PARAMS, np.float32))

    @classmethod
    def from_data(
        cls, params: np.ndarray, margin: float = 0.25, steps: np.ndarray | float | None = None
    ) -> "QuantTable":
        """Centre each parameter's range; scale = max(range * (1 + margin) / 65534, step).

        `steps`: the coarsest-allowed resolution floor (None -> DEFAULT_STEPS, 0 -> use all of int16)."""
        params = _check_params(params)
        floor = DEFAULT_STEPS if steps is None else np.broadcast_to(np.asarray(steps, np.float64), (N_PARAMS,))
        if len(params) == 0:
            lo = hi = np.zeros(N_PARAMS)
        else:
            lo, hi = params.min(axis=0).astype(np.float64), params.max(axis=0).astype(np.float64)
        centre = (lo + hi) / 2
        span = (hi - lo) * (1 + margin)
        scale = np.maximum(span / (INT16_MAX - INT16_MIN - 1), floor)
        scale = np.where(scale > 0, scale, 1.0)  # constant parameter with no floor: any positive scale works
        return cls(scale.astype(np.float32), centre.astype(np.float32))


@dataclass(frozen=True)
class SaturationReport:
    """How many values were clipped to the int16 range, per parameter (index = position in PARAM_NAMES)."""

    per_param: np.ndarray  # int64 (35,)

    @property
    def total(self) -> int:
        return int(self.per_param.sum())

    def __str__(self) -> str:
        if self.total == 0:
            return "no saturated values"
        parts = [f"{PARAM_NAMES[k]}: {int(n)}" for k, n in enumerate(self.per_param) if n]
        return f"{self.total} saturated values ({', '.join(parts)})"


def _check_params(params: np.ndarray) -> np.ndarray:
    params = np.asarray(params, dtype=np.float64)
    if params.ndim == 1:
        params = params[None, :]
    if params.ndim != 2 or params.shape[1] != N_PARAMS:
        raise BitstreamError(f"parameters must have shape (n, {N_PARAMS}), got {params.shape}")
    finite = np.isfinite(params)
    if not finite.all():
        t, k = np.argwhere(~finite)[0]
        raise BitstreamError(f"parameter {PARAM_NAMES[k]} of frame {t} is not finite")
    return params


def quantise(params: np.ndarray, table: QuantTable | None = None) -> tuple[np.ndarray, QuantTable, SaturationReport]:
    """Float parameters (n, 35) -> int16 records (n, 35), the table used, and the saturation count."""
    params = _check_params(params)
    if table is None:
        table = QuantTable.from_data(params)
    q = np.rint((params - table.offset.astype(np.float64)) / table.scale.astype(np.float64))
    saturated = ((q < INT16_MIN) | (q > INT16_MAX)).sum(axis=0).astype(np.int64)
    records = np.clip(q, INT16_MIN, INT16_MAX).astype(np.int16)
    return records, table, SaturationReport(saturated)


def dequantise(records: np.ndarray, table: QuantTable) -> np.ndarray:
    """int16 records (n, 35) or (35,) -> float64 values, offset + scale * q computed exactly as in format_spec."""
    q = np.asarray(records)
    # float32 scale and offset, float64 arithmetic: the same numbers on every platform.
    return table.offset.astype(np.float64) + table.scale.astype(np.float64) * q.astype(np.float64)
