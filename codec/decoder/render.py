"""Rendering (paper eq. 4 and 13): one frame from the ID latent and its 35 parameters.

    LH_t = edit(L_ID, yaw_t, pitch_t);  s = A(LH_t);  s[V] += alpha_t;  S_t = G_ss(s);  rotate S_t by roll_t

The encoder renders through this same function while it optimises (its candidates must be exactly what the
decoder will show), and the closed-loop tests render their synthetic clips with it.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from codec.models.pose import PoseEditor
from codec.models.stylespace import apply_offsets


def render(
    generator: torch.nn.Module,
    editor: PoseEditor,
    id_latent: torch.Tensor,
    style_indices: Sequence[tuple[int, int]],
    alpha: torch.Tensor,
    yaw: torch.Tensor,
    pitch: torch.Tensor,
    stop_at: int | None = None,
    synthesize: Callable[[list[torch.Tensor]], torch.Tensor] | None = None,
) -> torch.Tensor:
    """id_latent [n_latent, dim]; alpha [B, K]; yaw, pitch [B] -> images [B, 3, R, R] in [-1, 1], roll not
    applied (see `apply_roll`). `synthesize` stands in for `generator.synthesize` at full size (the decoder's
    CUDA graph, codec.decoder.pipeline.GraphedSynthesis: the same kernels, replayed)."""
    pose_edited = editor.edit(id_latent.unsqueeze(0).expand(alpha.shape[0], -1, -1), yaw, pitch)
    styles = apply_offsets(generator.styles(pose_edited), style_indices, alpha)
    if synthesize is not None and stop_at is None:
        return synthesize(styles)
    return generator.synthesize(styles, stop_at=stop_at)


def apply_roll(images: torch.Tensor, roll_deg: torch.Tensor) -> torch.Tensor:
    """Rotate each image about its centre by roll_deg, restoring the in-plane head rotation that pre-processing
    removed. Convention (format_spec.md, codec.preprocess.align): roll is the angle of the face's left-to-right
    axis in the picture, from the x axis towards y (x right, y down: clockwise as seen on screen).
    Zero roll returns the input unchanged (bit-exact)."""
    if not torch.any(roll_deg != 0):
        return images
    theta = roll_deg.to(images.dtype) * (math.pi / 180.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    # affine_grid maps each output position to the input position it samples: the inverse rotation R(-theta).
    matrix = torch.stack([torch.stack([cos, sin, zero], -1), torch.stack([-sin, cos, zero], -1)], 1)
    grid = F.affine_grid(matrix, list(images.shape), align_corners=False)
    rotated = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    keep = (roll_deg == 0).view(-1, 1, 1, 1)
    return torch.where(keep, images, rotated)
