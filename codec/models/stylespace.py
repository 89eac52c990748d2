"""The StyleSpace layout: which style layers exist, their channels, and the (l, c) <-> flat index convention.

Convention (StyleSpace, Wu et al. 2021; betterze/StyleSpace and StyleCLIP's global_torch use the same):
style layers are listed in synthesis order

    l = 0: conv1_4     (the 4x4 block's conv)        l = 1: torgb_4
    then for every resolution r = 8, 16, ...:  conv0_r (the 2x up-sampling conv), conv1_r, torgb_r

so `l` COUNTS the toRGB layers (for 1024x1024: toRGB at l = 1, 4, 7, ..., 25; 26 layers in all). `c` is the
input channel of that layer's modulated conv, i.e. the index into the affine output A_l(w). The flat index is
the offset of layer l plus c; for config-f 1024 the flat space has 9088 entries (6048 without toRGB).
An "(l, c)" written as "l_c" (e.g. 6_202) means layer 6 = conv1_16 (or whatever layer 6 is in `layers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class StyleLayer:
    name: str  # "conv1_4", "torgb_4", "conv0_8", ...
    resolution: int
    channels: int  # length of the style vector = input channels of the modulated conv
    is_torgb: bool
    w_index: int  # which row of W+ feeds this layer's affine A


class StyleSpaceLayout:
    """Layers of one generator's StyleSpace, in index order (see the module doc for the convention)."""

    def __init__(self, layers: Sequence[StyleLayer]):
        self.layers: tuple[StyleLayer, ...] = tuple(layers)
        self.channels: tuple[int, ...] = tuple(layer.channels for layer in self.layers)
        offsets = [0]
        for c in self.channels:
            offsets.append(offsets[-1] + c)
        self.offsets: tuple[int, ...] = tuple(offsets[:-1])
        self.total: int = offsets[-1]

    @classmethod
    def for_generator(cls, resolutions: Sequence[int], in_channels: dict[int, int]) -> "StyleSpaceLayout":
        """Layout of a skip generator; `in_channels[r]` = feature channels of block r (input of its convs)."""
        first = resolutions[0]
        layers = [
            StyleLayer(f"conv1_{first}", first, in_channels[first], False, 0),
            StyleLayer(f"torgb_{first}", first, in_channels[first], True, 1),
        ]
        w = 1
        previous = first
        for r in resolutions[1:]:
            layers += [
                StyleLayer(f"conv0_{r}", r, in_channels[previous], False, w),
                StyleLayer(f"conv1_{r}", r, in_channels[r], False, w + 1),
                StyleLayer(f"torgb_{r}", r, in_channels[r], True, w + 2),
            ]
            w += 2
            previous = r
        return cls(layers)

    def __len__(self) -> int:
        return len(self.layers)

    def index_of(self, name: str) -> int:
        for i, layer in enumerate(self.layers):
            if layer.name == name:
                return i
        raise KeyError(f"no StyleSpace layer named {name!r}")

    def flat_index(self, layer: int, channel: int) -> int:
        if not 0 <= layer < len(self.layers):
            raise IndexError(f"StyleSpace layer {layer} out of range 0..{len(self.layers) - 1}")
        if not 0 <= channel < self.channels[layer]:
            raise IndexError(f"channel {channel} out of range for layer {layer} ({self.channels[layer]} channels)")
        return self.offsets[layer] + channel

    def layer_channel(self, flat: int) -> tuple[int, int]:
        if not 0 <= flat < self.total:
            raise IndexError(f"flat StyleSpace index {flat} out of range 0..{self.total - 1}")
        layer = max(i for i, off in enumerate(self.offsets) if off <= flat)
        return layer, flat - self.offsets[layer]

    def flatten(self, styles: Sequence[torch.Tensor]) -> torch.Tensor:
        """list of [B, C_l] -> [B, total]."""
        self._check(styles)
        return torch.cat(list(styles), dim=1)

    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """[B, total] -> list of [B, C_l] (views into `flat`)."""
        if flat.shape[-1] != self.total:
            raise ValueError(f"flat styles have {flat.shape[-1]} entries, layout has {self.total}")
        return list(torch.split(flat, list(self.channels), dim=-1))

    def _check(self, styles: Sequence[torch.Tensor]) -> None:
        if len(styles) != len(self.layers):
            raise ValueError(f"{len(styles)} style tensors for {len(self.layers)} layers")
        for layer, s in zip(self.layers, styles):
            if s.shape[-1] != layer.channels:
                raise ValueError(f"style for {layer.name} has {s.shape[-1]} channels, expected {layer.channels}")


def apply_offsets(
    styles: Sequence[torch.Tensor], indices: Sequence[tuple[int, int]], alpha: torch.Tensor
) -> list[torch.Tensor]:
    """styles[l][:, c] += alpha[:, k] for each k-th (l, c) in `indices`; differentiable in alpha.

    Untouched layers are returned as the same tensors, so a zero alpha gives bit-identical styles (x + 0 == x)."""
    if alpha.ndim != 2 or alpha.shape[1] != len(indices):
        raise ValueError(f"alpha must be [B, {len(indices)}], got {tuple(alpha.shape)}")
    out = list(styles)
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for k, (layer, channel) in enumerate(indices):
        by_layer.setdefault(layer, []).append((k, channel))
    for layer, entries in by_layer.items():
        s = out[layer]
        delta = torch.zeros(alpha.shape[0], s.shape[-1], dtype=s.dtype, device=s.device)
        ks = torch.tensor([k for k, _ in entries], device=alpha.device)
        cs = torch.tensor([c for _, c in entries], device=s.device)
        delta = delta.index_add(1, cs, alpha.index_select(1, ks).to(s.dtype))
        out[layer] = s + delta
    return out
