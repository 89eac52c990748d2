"""The IR-SE residual backbone shared by the e4e encoder and the ArcFace identity network.

Both official checkpoints (e4e's `encoder.*` and `model_ir_se50.pth`) name their trunk the same way:
`input_layer.{0,1,2}` (3x3 conv without bias, BatchNorm2d, PReLU) and `body.N` for the bottleneck units,
each with `shortcut_layer` and `res_layer`. The module attribute names below are therefore part of the file
format and must not be renamed.

A unit (IR = "improved residual", SE = squeeze-and-excitation):
    res_layer  = BN(in) -> conv3x3(in->depth, stride 1) -> PReLU(depth) -> conv3x3(depth->depth, stride s)
                 -> BN(depth) -> SE(depth, reduction 16)
    shortcut   = 1x1 subsampling (MaxPool2d(1, s), no weights) when in == depth, else conv1x1 stride s + BN
    out        = res_layer(x) + shortcut(x)
The first unit of every stage has stride 2, so each stage halves the resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class IRSEConfig:
    """Channel depth and number of bottleneck units of each of the four stages."""

    depths: tuple[int, ...] = (64, 128, 256, 512)
    units: tuple[int, ...] = (3, 4, 14, 3)
    se_reduction: int = 16

    def __post_init__(self) -> None:
        if len(self.depths) != len(self.units) or not self.depths:
            raise ValueError("depths and units must list the same, non-zero number of stages")
        if any(d % self.se_reduction for d in self.depths):
            raise ValueError(f"every depth must be divisible by the SE reduction {self.se_reduction}")

    @property
    def stem_channels(self) -> int:
        # The official stem outputs 64 channels, which is also the first stage's depth.
        return self.depths[0]

    @property
    def out_channels(self) -> int:
        return self.depths[-1]

    def stage_end_indices(self) -> list[int]:
        """Index in `body` of the last unit of each stage (6, 20, 23 for IR-SE50's 3-4-14-3)."""
        ends, total = [], 0
        for n in self.units:
            total += n
            ends.append(total - 1)
        return ends


IRSE50 = IRSEConfig()


class SqueezeExcite(nn.Module):
    """Channel gating from globally pooled features (two bias-free 1x1 convs)."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * gate


class BottleneckIRSE(nn.Module):
    def __init__(self, in_channels: int, depth: int, stride: int, se_reduction: int = 16):
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, 1, stride, bias=False),
                nn.BatchNorm2d(depth),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SqueezeExcite(depth, se_reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def make_input_layer(config: IRSEConfig) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, config.stem_channels, 3, 1, 1, bias=False),
        nn.BatchNorm2d(config.stem_channels),
        nn.PReLU(config.stem_channels),
    )


def make_body(config: IRSEConfig) -> nn.Sequential:
    units: list[nn.Module] = []
    in_channels = config.stem_channels
    for depth, count in zip(config.depths, config.units):
        for i in range(count):
            stride = 2 if i == 0 else 1
            units.append(BottleneckIRSE(in_channels, depth, stride, config.se_reduction))
            in_channels = depth
    return nn.Sequential(*units)


def run_body(body: nn.Sequential, x: torch.Tensor, keep: set[int]) -> dict[int, torch.Tensor]:
    """Run every unit of `body`, returning the outputs of the units whose index is in `keep`."""
    kept = {}
    for i, unit in enumerate(body):
        x = unit(x)
        if i in keep:
            kept[i] = x
    return kept


def config_from_state_dict(state: dict[str, torch.Tensor], prefix: str = "") -> IRSEConfig:
    """Recover stage depths and unit counts from the 3x3 conv shapes of `body.N.res_layer.1.weight`.

    Depths grow strictly from stage to stage in every IR-SE net, so a new stage starts where the depth changes.
    """
    depths: list[int] = []
    units: list[int] = []
    n = 0
    while f"{prefix}body.{n}.res_layer.1.weight" in state:
        depth = int(state[f"{prefix}body.{n}.res_layer.1.weight"].shape[0])
        if depths and depth == depths[-1]:
            units[-1] += 1
        else:
            depths.append(depth)
            units.append(1)
        n += 1
    if not depths:
        raise KeyError(f"no '{prefix}body.N.res_layer.1.weight' keys: not an IR-SE state dict")
    fc1 = state[f"{prefix}body.0.res_layer.5.fc1.weight"]
    return IRSEConfig(tuple(depths), tuple(units), se_reduction=depths[0] // int(fc1.shape[0]))


def fill_missing_batch_counters(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add `num_batches_tracked` counters absent from checkpoints saved before PyTorch 0.4.1.

    The counter only matters when training with momentum=None; it never changes eval outputs. Everything
    else must still match exactly (the caller loads strict).
    """
    filled = dict(state)
    for name, buffer in module.state_dict().items():
        if name.endswith("num_batches_tracked") and name not in filled:
            filled[name] = torch.zeros_like(buffer)
    return filled
