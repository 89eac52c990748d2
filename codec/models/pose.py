"""Pose editors: one interface, edit(w_plus, yaw, pitch) -> w_plus, differentiable in yaw and pitch.

Two implementations: StyleFlow's CNF (codec.models.styleflow.StyleFlowPoseEditor, official weights) and the
linear editor below (directions in W+, fitted from generator samples; the tiny model ships its own).
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch


class PoseEditor(Protocol):
    def edit(self, w_plus: torch.Tensor, yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
        """w_plus [B, n_latent, style_dim], yaw [B], pitch [B] -> the latent turned to that head pose."""
        ...


class LinearPoseEditor:
    """w + yaw * d_yaw + pitch * d_pitch, restricted to the W+ rows in `rows` (all rows when None)."""

    def __init__(self, directions: torch.Tensor, rows: Sequence[int] | None = None):
        if directions.ndim != 3 or directions.shape[0] != 2:
            raise ValueError(f"directions must be [2, n_latent, style_dim] (yaw, pitch), got {tuple(directions.shape)}")
        mask = torch.zeros(directions.shape[1], 1, dtype=directions.dtype)
        mask[list(range(directions.shape[1])) if rows is None else list(rows)] = 1
        self.directions = directions * mask

    def edit(self, w_plus: torch.Tensor, yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
        if tuple(w_plus.shape[1:]) != tuple(self.directions.shape[1:]):
            raise ValueError(f"w_plus rows {tuple(w_plus.shape[1:])} do not match the directions' {tuple(self.directions.shape[1:])}")
        d_yaw, d_pitch = self.directions.to(w_plus)
        yaw = torch.as_tensor(yaw).to(w_plus).reshape(-1, 1, 1)
        pitch = torch.as_tensor(pitch).to(w_plus).reshape(-1, 1, 1)
        return w_plus + yaw * d_yaw + pitch * d_pitch


# --- published direction files -------------------------------------------------------------------------------

def _one_direction(values: torch.Tensor, file, n_latent: int, style_dim: int) -> torch.Tensor:
    """A direction as [n_latent, style_dim] float32: a [1, n, d] or [n, d] W+ direction, or a [d] / [1, d] W
    direction (repeated on every row)."""
    values = values.detach().to("cpu", torch.float32)
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    if values.ndim == 2 and values.shape[0] == 1:
        values = values[0]
    if values.ndim == 1:
        values = values.expand(n_latent, -1)
    if tuple(values.shape) != (n_latent, style_dim):
        raise ValueError(f"{file}: a direction of shape {tuple(values.shape)}, not [{n_latent}, {style_dim}] "
                         "(or [1, n_latent, style_dim], or one W row)")
    if not torch.isfinite(values).all():
        raise ValueError(f"{file}: the direction holds non-finite values")
    return values.contiguous()


def load_direction_file(file, n_latent: int = 18, style_dim: int = 512) -> torch.Tensor:
    """A published latent direction -> [n_latent, style_dim] float32, by the file's suffix:

    - .pt/.pth: a tensor saved with torch.save, e.g. e4e's InterFaceGAN `editings/interfacegan_directions/pose.pt`
      ([1, 18, 512] float32, saved from a CUDA device: read with map_location='cpu' so a machine without a GPU
      can load it, and weights_only=True so the pickle can build nothing but tensors);
    - .npy: a numpy array, e.g. `latent_directions/angle_pitch.npy` of a312863063/generators-with-stylegan2
      ([18, 512] float64), read with allow_pickle=False.
    """
    from pathlib import Path

    import numpy as np

    file = Path(file)
    suffix = file.suffix.lower()
    if suffix in (".pt", ".pth"):
        values = torch.load(file, map_location="cpu", weights_only=True)
        if isinstance(values, dict) and len(values) == 1:  # {name: tensor}
            values = next(iter(values.values()))
        if not isinstance(values, torch.Tensor):
            raise ValueError(f"{file}: holds a {type(values).__name__}, not a direction tensor")
    elif suffix == ".npy":
        array = np.load(file, allow_pickle=False)
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"{file}: a {array.dtype} array, not floating point")
        values = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    else:
        raise ValueError(f"{file}: unknown direction file type {suffix!r} (.pt, .pth or .npy)")
    return _one_direction(values, file, n_latent, style_dim)


def linear_editor_from_files(yaw_file, pitch_file, n_latent: int = 18, style_dim: int = 512) -> LinearPoseEditor:
    """A LinearPoseEditor whose yaw and pitch are the published directions in `yaw_file` and `pitch_file`, as
    published: one unit of yaw (pitch) adds the yaw (pitch) file's direction once to every W+ row."""
    return LinearPoseEditor(torch.stack([load_direction_file(yaw_file, n_latent, style_dim),
                                         load_direction_file(pitch_file, n_latent, style_dim)]))
