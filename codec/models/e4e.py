"""The e4e encoder (Tov et al. 2021): images -> W+ latents, loading `e4e_ffhq_encode.pt` exactly as released.

Structure (parameter names follow the official `Encoder4Editing`, they are the checkpoint's keys):
- `input_layer`, `body`: the IR-SE50 trunk (codec.models.irse). Feature maps are taken at the ends of stages
  1, 2, 3 (c1: 128 ch at 1/4 of the input, c2: 256 ch at 1/8, c3: 512 ch at 1/16).
- `styles.i`: one map-to-style block per W+ row: stride-2 3x3 convs (each followed by LeakyReLU(0.01)) down
  to 1x1, then an equalised-lr linear layer.
- `latlayer1`, `latlayer2`: 1x1 convs of a small feature pyramid (c3 + up(c2) for the middle rows,
  + up(c1) for the fine rows; bilinear, align_corners=True).
- Row 0 is a full code w0 from c3; rows 1..n-1 are w0 + delta_i, delta_i from the block of row i on the
  coarse (i < 3), middle (i < 7) or fine features. Only the first `progressive_stage` deltas are used; the
  released checkpoint is built with the inference stage, i.e. all of them.
- `latent_avg` (the checkpoint's top-level entry, [18, 512]) is added to the output, as pSp does when trained
  with `start_from_latent_avg`; it is a non-persistent buffer so the encoder's own keys stay exactly official.

Input: RGB images [B, 3, S, S] in [-1, 1] (S = 256 for the release).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from codec.errors import ModelError
from codec.models.irse import IRSE50, IRSEConfig, config_from_state_dict, make_body, make_input_layer, run_body
from codec.models.safe_load import load_checkpoint, load_strict
from codec.models.stylegan2 import EqualLinear  # same keys (weight, bias) and scaling as rosinality's


@dataclass(frozen=True)
class E4EConfig:
    """Sizes of an e4e-shaped encoder. The defaults are the released FFHQ encoder."""

    backbone: IRSEConfig = field(default_factory=lambda: IRSE50)
    n_styles: int = 18
    style_dim: int = 512
    input_size: int = 256
    coarse_end: int = 3  # rows [0, 3) read the coarsest features
    middle_end: int = 7  # rows [3, 7) the middle ones, the rest the finest

    def __post_init__(self) -> None:
        if len(self.backbone.depths) != 4:
            raise ValueError("the e4e pyramid taps the ends of stages 1-3 of a four-stage backbone")
        if self.input_size % 16 or self.input_size & (self.input_size - 1):
            raise ValueError("input_size must be a power of two of at least 16")
        if not 1 <= self.coarse_end <= self.middle_end <= self.n_styles:
            raise ValueError("need 1 <= coarse_end <= middle_end <= n_styles")

    def pyramid_sizes(self) -> tuple[int, int, int]:
        """Spatial size of the coarse, middle and fine feature maps (16, 32, 64 for 256 inputs)."""
        return self.input_size // 16, self.input_size // 8, self.input_size // 4


def tiny_e4e_config(n_styles: int = 10, style_dim: int = 64, input_size: int = 64) -> E4EConfig:
    """Same structure, far fewer channels and units: the inverter of the tiny generator."""
    backbone = IRSEConfig(depths=(16, 32, 48, 64), units=(1, 1, 2, 1))
    return E4EConfig(backbone, n_styles=n_styles, style_dim=style_dim, input_size=input_size)


class MapToStyle(nn.Module):
    """Stride-2 convs from a [C, s, s] feature map down to 1x1, then a linear layer: one W+ row (or delta)."""

    def __init__(self, in_channels: int, style_dim: int, spatial: int):
        super().__init__()
        n_convs = int(math.log2(spatial))
        layers: list[nn.Module] = []
        for i in range(n_convs):
            layers += [nn.Conv2d(in_channels if i == 0 else style_dim, style_dim, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(style_dim, style_dim)
        self.style_dim = style_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(features).reshape(-1, self.style_dim))


def upsample_add(top: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    return F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


class E4EEncoder(nn.Module):
    def __init__(self, config: E4EConfig | None = None):
        super().__init__()
        self.config = config = config or E4EConfig()
        channels = config.backbone.depths
        self.input_layer = make_input_layer(config.backbone)
        self.body = make_body(config.backbone)
        self.styles = nn.ModuleList(
            MapToStyle(channels[3], config.style_dim, config.pyramid_sizes()[self._row_level(i)])
            for i in range(config.n_styles)
        )
        self.latlayer1 = nn.Conv2d(channels[2], channels[3], 1)
        self.latlayer2 = nn.Conv2d(channels[1], channels[3], 1)
        self.register_buffer("latent_avg", torch.zeros(config.n_styles, config.style_dim), persistent=False)
        # e4e's progressive stage s: rows 1..s get a delta, later rows copy w0. The released encoder runs at
        # the inference stage (18), i.e. every row has its delta.
        self.progressive_stage = config.n_styles
        # c1, c2, c3 = outputs of the last units of stages 1, 2, 3 (body indices 6, 20, 23 in IR-SE50).
        self._taps = config.backbone.stage_end_indices()[1:]

    def _row_level(self, row: int) -> int:
        """0, 1, 2: which pyramid level (coarse, middle, fine) W+ row `row` is read from."""
        if row < self.config.coarse_end:
            return 0
        return 1 if row < self.config.middle_end else 2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, S, S] in [-1, 1] -> W+ [B, n_styles, style_dim] (latent_avg included)."""
        size = self.config.input_size
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (size, size):
            raise ValueError(f"e4e expects images [B, 3, {size}, {size}], got {tuple(images.shape)}")
        x = self.input_layer(images)
        taps = run_body(self.body, x, set(self._taps))
        c1, c2, c3 = (taps[i] for i in self._taps)

        w0 = self.styles[0](c3)
        rows = [w0]
        pyramid = [c3]  # coarse, then middle and fine, built only when a row needs them
        for i in range(1, self.config.n_styles):
            if i > self.progressive_stage:
                rows.append(w0)
                continue
            level = self._row_level(i)
            if level >= 1 and len(pyramid) < 2:
                pyramid.append(upsample_add(c3, self.latlayer1(c2)))
            if level == 2 and len(pyramid) < 3:
                pyramid.append(upsample_add(pyramid[1], self.latlayer2(c1)))
            rows.append(w0 + self.styles[i](pyramid[level]))
        return torch.stack(rows, dim=1) + self.latent_avg


def _split_prefixes(state: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
    encoder = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    decoder = {k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")}
    other = [k for k in state if not k.startswith(("encoder.", "decoder."))]
    if other:
        raise ModelError(f"e4e checkpoint: state_dict has keys outside encoder./decoder. (first: {other[0]})")
    return encoder, decoder


def config_from_encoder_state(state: Mapping[str, torch.Tensor]) -> E4EConfig:
    """Read an e4e-shaped encoder's sizes off its tensors, so the same loader serves the release and tiny ones."""
    backbone = config_from_state_dict(state)
    n_styles = 0
    convs_per_row = []
    while f"styles.{n_styles}.linear.weight" in state:
        convs_per_row.append(sum(1 for k in state if k.startswith(f"styles.{n_styles}.convs.") and k.endswith(".weight")))
        n_styles += 1
    if n_styles == 0:
        raise KeyError("no styles.N.linear.weight keys")
    style_dim = int(state["styles.0.linear.weight"].shape[0])
    # Each row's block has log2(spatial) convs; coarse rows see input/16.
    input_size = 16 * 2 ** convs_per_row[0]
    coarse_end = next((i for i, n in enumerate(convs_per_row) if n > convs_per_row[0]), n_styles)
    middle_end = next((i for i, n in enumerate(convs_per_row) if n > convs_per_row[0] + 1), n_styles)
    return E4EConfig(backbone, n_styles, style_dim, input_size, coarse_end, middle_end)


@dataclass
class E4ECheckpoint:
    encoder: E4EEncoder
    decoder_state_dict: dict[str, torch.Tensor]
    latent_avg: torch.Tensor | None
    opts: dict[str, Any]

    def __iter__(self):  # unpacks as (encoder, decoder_state_dict, latent_avg, opts)
        return iter((self.encoder, self.decoder_state_dict, self.latent_avg, self.opts))


def load_e4e_checkpoint(path_or_state: str | Path | Mapping[str, Any]) -> E4ECheckpoint:
    """Load `e4e_ffhq_encode.pt` (or a tiny encoder saved in the same layout) without unpickling code.

    The release is a dict {'state_dict': {'encoder.*', 'decoder.*'}, 'opts': dict, 'latent_avg': [18, 512]}
    (training snapshots may hold more entries, which are ignored). The encoder part is loaded strict; the
    decoder part (rosinality Generator keys) is returned for the generator's own loader.
    """
    ckpt = load_checkpoint(path_or_state, "e4e")
    if "state_dict" not in ckpt:
        raise ModelError("e4e checkpoint: no 'state_dict' entry (expected the pSp/e4e training layout)")
    encoder_state, decoder_state = _split_prefixes(ckpt["state_dict"])
    try:
        config = config_from_encoder_state(encoder_state)
    except (KeyError, ValueError) as exc:
        raise ModelError(f"e4e checkpoint: encoder layout not recognised ({exc})") from exc
    opts = dict(ckpt.get("opts") or {})
    with torch.device("meta"):  # 267 M parameters: skip their random initialisation, adopt the file's tensors
        encoder = E4EEncoder(config)
    load_strict(encoder, {k: v.float() if v.is_floating_point() else v for k, v in encoder_state.items()},
                "e4e encoder", assign=True)
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is not None:
        # pSp saves it already repeated to [n_styles, dim]; older pSp checkpoints hold one [dim] row.
        latent_avg = latent_avg.float().reshape(-1, config.style_dim).expand(config.n_styles, -1).clone()
    encoder.latent_avg = latent_avg if latent_avg is not None else torch.zeros(config.n_styles, config.style_dim)
    encoder.eval()
    return E4ECheckpoint(encoder, decoder_state, latent_avg, opts)


def save_e4e_checkpoint(
    path: str | Path,
    encoder: E4EEncoder,
    decoder_state_dict: Mapping[str, torch.Tensor] | None = None,
    opts: Mapping[str, Any] | None = None,
) -> None:
    """Write an encoder (e.g. the tiny one) in the release's container, so one loader serves both."""
    state = {f"encoder.{k}": v.detach().cpu() for k, v in encoder.state_dict().items()}
    state.update({f"decoder.{k}": v.detach().cpu() for k, v in (decoder_state_dict or {}).items()})
    container = {"state_dict": state, "opts": dict(opts or {}), "latent_avg": encoder.latent_avg.detach().cpu()}
    if isinstance(path, (str, Path)):
        # Through a file object: torch.save names the zip's root folder after a path's file name, so the same
        # model saved under two names (e.g. a temp file, then renamed) would differ in its bytes.
        with open(path, "wb") as f:
            torch.save(container, f)
    else:
        torch.save(container, path)
