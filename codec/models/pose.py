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
