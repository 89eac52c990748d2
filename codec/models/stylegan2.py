"""StyleGAN2 generator (config-f skip architecture) with a StyleSpace interface.

Parameter names and shapes follow rosinality/stylegan2-pytorch `Generator`, which is what e4e embeds under
`decoder.` in `e4e_ffhq_encode.pt`, so such a state dict loads strict without renaming:

    style.{1..n_mlp}.weight/bias   mapping MLP (style.0 is the parameter-free PixelNorm)
    input.input                    [1, C4, 4, 4] constant
    conv1.*  to_rgb1.*             the 4x4 block;  convs.{2j, 2j+1}.*, to_rgbs.{j}.*  block j (resolution 8 * 2^j)
    *.conv.weight [1,O,I,k,k], *.conv.modulation.weight [I, style_dim], *.conv.modulation.bias [I]
    convs.{2j}.conv.blur.kernel, to_rgbs.{j}.upsample.kernel   [4,4] FIR buffers (they are in the state dict)
    *.noise.weight [1], *.activate.bias [O], to_rgb*.bias [1,3,1,1], noises.noise_{0..} [1,1,r,r]

The pipeline is split where StyleSpace lives:  w_plus --styles()--> [s_l] --synthesize()--> image.
`styles` is the per-layer affine A (the modulation EqualLinear); `synthesize` consumes the s_l directly,
so an edit in StyleSpace is a plain tensor add between the two (see `stylespace.apply_offsets`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from codec.errors import ModelError
from codec.models.stylespace import StyleSpaceLayout
from codec.ops import blur_kernel_2d, modulated_conv
from codec.ops.modulated_conv import LRELU_GAIN, LRELU_SLOPE

NoiseMode = Literal["const", "none"]


def config_f_channels(size: int, channel_multiplier: int = 2) -> dict[int, int]:
    """rosinality's channel table (config-f when channel_multiplier=2)."""
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
             256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    return {r: c for r, c in table.items() if r <= size}


@dataclass(frozen=True)
class GeneratorConfig:
    size: int = 1024
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    lr_mlp: float = 0.01
    # explicit feature channels per resolution (4..size); None = config_f_channels(size, channel_multiplier)
    channels: dict[int, int] | None = field(default=None)
    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)

    def __post_init__(self) -> None:
        log2 = math.log2(self.size)
        if self.size < 4 or log2 != int(log2):
            raise ValueError(f"generator size must be a power of two >= 4, got {self.size}")

    @property
    def resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.size)) + 1)]

    @property
    def channel_table(self) -> dict[int, int]:
        table = dict(self.channels) if self.channels is not None else config_f_channels(self.size,
                                                                                         self.channel_multiplier)
        missing = [r for r in self.resolutions if r not in table]
        if missing:
            raise ValueError(f"no channel count for resolutions {missing}")
        return {r: int(table[r]) for r in self.resolutions}

    @property
    def n_latent(self) -> int:
        return 2 * len(self.resolutions)

    def to_json(self) -> dict:
        return {"size": self.size, "style_dim": self.style_dim, "n_mlp": self.n_mlp, "lr_mlp": self.lr_mlp,
                "channels": {str(r): c for r, c in self.channel_table.items()},
                "blur_kernel": list(self.blur_kernel)}

    @classmethod
    def from_json(cls, d: dict) -> "GeneratorConfig":
        return cls(size=int(d["size"]), style_dim=int(d["style_dim"]), n_mlp=int(d["n_mlp"]),
                   lr_mlp=float(d["lr_mlp"]), channels={int(r): int(c) for r, c in d["channels"].items()},
                   blur_kernel=tuple(int(t) for t in d.get("blur_kernel", (1, 3, 3, 1))))


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: stored weight / lr_mul, applied times lr_mul / sqrt(in)."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        if self.activate:
            out = F.leaky_relu(out, LRELU_SLOPE) * LRELU_GAIN
        return out


class ModulatedConv(nn.Module):
    """Holds a modulated conv's parameters (rosinality names); the math runs in codec.ops."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False, blur_kernel: Sequence[int] = (1, 3, 3, 1)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel, kernel))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.demodulate = demodulate
        self.upsample = upsample
        if upsample:
            # x factor**2: zero-insertion up-sampling keeps one sample in four; key `blur.kernel` as in rosinality
            self.blur = _Kernel(blur_kernel_2d(blur_kernel, gain=4.0))

    def run(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None,
            bias: torch.Tensor | None = None, activate: bool = False, skip: torch.Tensor | None = None,
            skip_kernel: torch.Tensor | None = None) -> torch.Tensor:
        return modulated_conv(x, self.weight[0], style, self.scale, self.demodulate, self.upsample,
                              self.blur.kernel if self.upsample else None, noise, bias, activate, skip, skip_kernel)


class _Kernel(nn.Module):
    """A module holding one FIR kernel buffer (state-dict key `<parent>.kernel`)."""

    def __init__(self, kernel: torch.Tensor):
        super().__init__()
        self.register_buffer("kernel", kernel)


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))


class FusedLeakyReLU(nn.Module):
    """Only the bias parameter (`activate.bias`); the activation itself is fused into the conv op."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))


class StyledConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, style_dim: int, upsample: bool, blur_kernel: Sequence[int]):
        super().__init__()
        self.conv = ModulatedConv(in_ch, out_ch, 3, style_dim, upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        scaled_noise = None if noise is None else (self.noise.weight * noise).to(x.dtype)
        return self.conv.run(x, style, scaled_noise, self.activate.bias, activate=True)


class ToRGB(nn.Module):
    def __init__(self, in_ch: int, style_dim: int, upsample: bool, blur_kernel: Sequence[int]):
        super().__init__()
        if upsample:
            self.upsample = _Kernel(blur_kernel_2d(blur_kernel, gain=4.0))
        self.conv = ModulatedConv(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        # the skip branch's 2x up-sampling and add run inside the op (fused on the csrc/ paths)
        return self.conv.run(x, style, bias=self.bias.view(-1), skip=skip,
                             skip_kernel=None if skip is None else self.upsample.kernel)


class Generator(nn.Module):
    """StyleGAN2 generator; see the module doc. Images are [B, 3, R, R], roughly in [-1, 1]."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        self.size = config.size
        self.style_dim = config.style_dim
        channels = config.channel_table
        res = config.resolutions
        blur = config.blur_kernel
        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(config.style_dim, config.style_dim, lr_mul=config.lr_mlp, activate=True)
            for _ in range(config.n_mlp)])
        self.input = nn.Module()
        self.input.input = nn.Parameter(torch.randn(1, channels[4], 4, 4))
        self.conv1 = StyledConv(channels[4], channels[4], config.style_dim, False, blur)
        self.to_rgb1 = ToRGB(channels[4], config.style_dim, False, blur)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        for prev, r in zip(res[:-1], res[1:]):
            self.convs.append(StyledConv(channels[prev], channels[r], config.style_dim, True, blur))
            self.convs.append(StyledConv(channels[r], channels[r], config.style_dim, False, blur))
            self.to_rgbs.append(ToRGB(channels[r], config.style_dim, True, blur))
        self.noises = nn.Module()
        self.num_layers = 2 * len(res) - 1
        for i in range(self.num_layers):
            side = 2 ** ((i + 5) // 2)  # noise_0: 4, noise_1/2: 8, noise_3/4: 16, ...
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, side, side))
        self.n_latent = config.n_latent
        self.layout = StyleSpaceLayout.for_generator(res, channels)
        # mean W; not part of the rosinality state dict (e4e stores it beside it), hence non-persistent
        self.register_buffer("latent_avg", torch.zeros(config.style_dim), persistent=False)
        self._modulators = [self.conv1.conv, self.to_rgb1.conv]
        for j, to_rgb in enumerate(self.to_rgbs):
            self._modulators += [self.convs[2 * j].conv, self.convs[2 * j + 1].conv, to_rgb.conv]

    # -- W space ---------------------------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, style_dim] -> w [B, style_dim]."""
        return self.style(z)

    @torch.no_grad()
    def estimate_latent_avg(self, n: int = 10000, seed: int = 0, batch: int = 1000) -> torch.Tensor:
        """Mean of mapping(z) over n seeded normal z; stores it in `latent_avg` and returns it."""
        gen = torch.Generator().manual_seed(seed)
        total = torch.zeros(self.style_dim, dtype=torch.float64)
        for start in range(0, n, batch):
            z = torch.randn(min(batch, n - start), self.style_dim, generator=gen)
            total += self.mapping(z.to(self.latent_avg.device, self.input.input.dtype)).double().sum(0).cpu()
        self.latent_avg.copy_((total / n).to(self.latent_avg.dtype))
        return self.latent_avg

    # -- StyleSpace ------------------------------------------------------------------------------------------
    def styles(self, w_plus: torch.Tensor) -> list[torch.Tensor]:
        """W+ [B, n_latent, style_dim] (or W [B, style_dim], broadcast) -> one [B, C_l] per StyleSpace layer."""
        if w_plus.ndim == 2:
            w_plus = w_plus[:, None].expand(-1, self.n_latent, -1)
        if w_plus.ndim != 3 or w_plus.shape[1] != self.n_latent or w_plus.shape[2] != self.style_dim:
            raise ValueError(f"w_plus must be [B, {self.n_latent}, {self.style_dim}], got {tuple(w_plus.shape)}")
        return [mod.modulation(w_plus[:, layer.w_index])
                for mod, layer in zip(self._modulators, self.layout.layers)]

    def synthesize(self, styles: Sequence[torch.Tensor], stop_at: int | None = None,
                   noise: NoiseMode = "const") -> torch.Tensor:
        """StyleSpace styles -> image [B, 3, R, R]; R = stop_at (the skip branch's RGB there) or full size."""
        self.layout._check(styles)
        stop_at = self.size if stop_at is None else stop_at
        if stop_at not in self.config.resolutions:
            raise ValueError(f"stop_at must be one of {self.config.resolutions}, got {stop_at}")
        batch = styles[0].shape[0]
        noises = [self._noise(i, noise) for i in range(self.num_layers)]
        x = self.input.input.to(styles[0].dtype).expand(batch, -1, -1, -1)
        x = self.conv1(x, styles[0], noises[0])
        skip = self.to_rgb1(x, styles[1], None)
        for j, to_rgb in enumerate(self.to_rgbs):
            if 4 * 2**j >= stop_at:
                break
            s = styles[2 + 3 * j: 5 + 3 * j]
            x = self.convs[2 * j](x, s[0], noises[1 + 2 * j])
            x = self.convs[2 * j + 1](x, s[1], noises[2 + 2 * j])
            skip = to_rgb(x, s[2], skip)
        return skip

    def _noise(self, i: int, mode: NoiseMode) -> torch.Tensor | None:
        if mode == "const":
            return getattr(self.noises, f"noise_{i}")
        if mode == "none":
            return None
        raise ValueError(f"noise must be 'const' or 'none', got {mode!r}")

    def forward(self, w_plus: torch.Tensor, stop_at: int | None = None, noise: NoiseMode = "const") -> torch.Tensor:
        return self.synthesize(self.styles(w_plus), stop_at, noise)


def config_from_rosinality(state_dict: dict[str, torch.Tensor], lr_mlp: float = 0.01) -> GeneratorConfig:
    """The GeneratorConfig a rosinality state dict was made with, read from its shapes."""
    try:
        channels = {4: state_dict["input.input"].shape[1]}
        j = 0
        while f"convs.{2 * j}.conv.weight" in state_dict:
            channels[8 * 2**j] = state_dict[f"convs.{2 * j}.conv.weight"].shape[1]
            j += 1
        n_mlp = sum(1 for k in state_dict if k.startswith("style.") and k.endswith(".weight"))
        style_dim = state_dict["style.1.weight"].shape[1]
    except KeyError as exc:
        raise ModelError(f"not a rosinality StyleGAN2 state dict: no {exc}") from exc
    return GeneratorConfig(size=max(channels), style_dim=style_dim, n_mlp=n_mlp, lr_mlp=lr_mlp, channels=channels)


def load_rosinality_state_dict(generator: Generator, state_dict: dict[str, torch.Tensor],
                               latent_avg: torch.Tensor | None = None) -> Generator:
    """Load rosinality/e4e generator weights strictly (a `decoder.` prefix is stripped); raises ModelError
    naming missing, unexpected or mis-shaped keys. `latent_avg` ([style_dim] or [n_latent, style_dim] with
    equal rows, as e4e stores it) goes to the buffer of that name."""
    if any(k.startswith("decoder.") for k in state_dict):
        state_dict = {k[len("decoder."):]: v for k, v in state_dict.items() if k.startswith("decoder.")}
    own = generator.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(k for k in set(own) & set(state_dict) if tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''} ({len(keys)})")
        raise ModelError("generator weights do not match the configuration: " + "; ".join(parts))
    generator.load_state_dict(state_dict, strict=True)
    if latent_avg is not None:
        generator.latent_avg.copy_(_single_latent(latent_avg, generator.style_dim))
    return generator


def _single_latent(latent_avg: torch.Tensor, style_dim: int) -> torch.Tensor:
    latent_avg = latent_avg.detach().float().cpu()
    if latent_avg.ndim == 2:  # e4e repeats the one mean W per W+ row: take that row (bit-exact), else the mean
        same = bool((latent_avg == latent_avg[:1]).all())
        latent_avg = latent_avg[0] if same else latent_avg.mean(0)
    if latent_avg.shape != (style_dim,):
        raise ModelError(f"latent_avg has shape {tuple(latent_avg.shape)}, expected ({style_dim},)")
    return latent_avg
