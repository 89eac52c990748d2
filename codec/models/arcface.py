"""ArcFace IR-SE50 identity network (`model_ir_se50.pth`, TreB1eN's InsightFace_Pytorch, as used by pSp/e4e).

Layout (the checkpoint's keys): `input_layer.*`, `body.0..23.*` (codec.models.irse) and
`output_layer` = BatchNorm2d(512) -> Dropout -> Flatten -> Linear(512*7*7, 512) -> BatchNorm1d(512, affine)
(indices 0 and 4 hold BatchNorms, 3 the Linear). The output is l2-normalised, so a dot product is the cosine.

Input convention, as pSp/e4e's identity loss: RGB in [-1, 1] at 256x256 (larger images are average-pooled
to 256, as pSp's face_pool does), crop rows 35:223 and columns 32:220 (the face in an FFHQ-aligned
image), average-pool to 112x112.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from codec.errors import ModelError
from codec.models.irse import (
    IRSE50,
    IRSEConfig,
    config_from_state_dict,
    fill_missing_batch_counters,
    make_body,
    make_input_layer,
)
from codec.models.safe_load import load_checkpoint, load_strict

NET_INPUT = 112
ALIGNED_SIZE = 256
FACE_ROWS = slice(35, 223)
FACE_COLS = slice(32, 220)


def crop_face_for_identity(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] aligned faces in [-1, 1] -> [B, 3, 112, 112] crops as pSp's IDLoss makes them."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
    if images.shape[-1] >= ALIGNED_SIZE and images.shape[-2] >= ALIGNED_SIZE:
        images = F.adaptive_avg_pool2d(images, ALIGNED_SIZE)
    else:  # smaller renders (the tiny generator's): upsample to the aligned frame the crop is defined on
        images = F.interpolate(images, size=(ALIGNED_SIZE, ALIGNED_SIZE), mode="bilinear", align_corners=False)
    return F.adaptive_avg_pool2d(images[:, :, FACE_ROWS, FACE_COLS], NET_INPUT)


class ArcFaceIRSE(nn.Module):
    def __init__(self, config: IRSEConfig = IRSE50, embedding_dim: int = 512, drop_ratio: float = 0.6):
        super().__init__()
        self.config = config
        spatial = NET_INPUT // 2 ** len(config.depths)  # 7 for four stride-2 stages
        self.input_layer = make_input_layer(config)
        self.body = make_body(config)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(config.out_channels),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(config.out_channels * spatial * spatial, embedding_dim),
            nn.BatchNorm1d(embedding_dim),
        )

    def forward(self, faces112: torch.Tensor) -> torch.Tensor:
        """Already cropped [B, 3, 112, 112] faces -> l2-normalised embeddings [B, embedding_dim]."""
        x = self.output_layer(self.body(self.input_layer(faces112)))
        return F.normalize(x, dim=1)

    def identity_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """Aligned face images [B, 3, H, W] in [-1, 1] -> unit-length identity embeddings."""
        return self(crop_face_for_identity(images))

    def identity_similarity(self, a_images: torch.Tensor, b_images: torch.Tensor) -> torch.Tensor:
        """Cosine similarity [B] of the identities in two batches of aligned faces (1 = same embedding)."""
        both = self.identity_embedding(torch.cat([a_images, b_images]))
        a, b = both.split(a_images.shape[0])
        return (a * b).sum(dim=1)


def load_arcface(path_or_state: str | Path | Mapping[str, torch.Tensor]) -> ArcFaceIRSE:
    """Load `model_ir_se50.pth` (a bare state_dict) strict, in eval mode."""
    state = load_checkpoint(path_or_state, "ArcFace IR-SE50")
    state = state.get("state_dict", state)
    try:
        config = config_from_state_dict(state)
        embedding_dim = int(state["output_layer.3.weight"].shape[0])
    except (KeyError, ValueError) as exc:
        raise ModelError(f"ArcFace IR-SE50: layout not recognised ({exc})") from exc
    net = ArcFaceIRSE(config, embedding_dim)
    load_strict(net, fill_missing_batch_counters(net, state), "ArcFace IR-SE50")
    return net.eval()


def seeded_standin(seed: int = 0) -> ArcFaceIRSE:
    """A small net of the same structure with seeded random weights: for tests, not a real face metric.

    BatchNorm statistics are set from one seeded batch of noise so that activations stay in a sane range
    (with the default unit statistics deep random nets collapse every input onto nearly the same embedding).
    """
    generator = torch.Generator().manual_seed(seed)
    config = IRSEConfig(depths=(16, 32, 48, 64), units=(1, 1, 1, 1))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ArcFaceIRSE(config, embedding_dim=64)
        net.train()
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = None  # cumulative average: one batch sets the statistics exactly
        with torch.no_grad():
            net(torch.rand(16, 3, NET_INPUT, NET_INPUT, generator=generator) * 2 - 1)
    return net.eval()
