"""Puppeteering (paper Tab. 2, Fig. 4): one stream's motion on another face.

The 35 parameters per frame are edits relative to an ID latent (pose offsets and StyleSpace offsets), so they can
be applied to any other ID latent of the same generator. The new identity comes from

- another .stv file: its header's ID latent (and its pose-editor description, which describes that latent);
- a face image: aligned and inverted exactly as the encoder treats a frame (codec.encoder.identity_image).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from codec.bitstream import StvHeader, StvReader
from codec.bitstream.schema import MAGIC
from codec.decoder.decode import stream_id_latent
from codec.errors import InputError, StvError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Identity:
    """A replacement identity: its ID latent and the pose-editor description that goes with it (None: the
    driving stream's)."""

    latent: np.ndarray | torch.Tensor  # [n_latent, style_dim]
    pose_spec: dict | None
    source: str


def identity_from_stv(path: Path, driving: StvHeader) -> Identity:
    """The ID latent of another .stv; it must name the same generator weights as the driving stream."""
    other = StvReader(path).header
    if (other.generator_name, other.generator_sha256) != (driving.generator_name, driving.generator_sha256):
        raise StvError(f"{path}: its ID latent belongs to generator {other.generator_name!r} "
                       f"(sha256 {other.generator_sha256.hex()[:16]}...), the stream uses {driving.generator_name!r} "
                       f"(sha256 {driving.generator_sha256.hex()[:16]}...): a latent only means something with "
                       "the generator it was inverted for")
    return Identity(stream_id_latent(other), other.pose_editor, str(path))


def identity_from_image(path: Path, generator: torch.nn.Module, generator_name: str,
                        device: torch.device) -> Identity:
    """A face image aligned and inverted like an encoder frame; the driving stream's pose editor goes with it."""
    from codec.encoder.identity_image import id_latent_from_image

    return Identity(id_latent_from_image(Path(path), generator, generator_name, device), None, str(path))


def load_identity(path: Path, driving: StvHeader, generator: torch.nn.Module, device: torch.device) -> Identity:
    """--identity FILE: a .stv (recognised by its magic) or a face image (by its suffix)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--identity {path}: no such file")
    with open(path, "rb") as f:
        is_stv = f.read(len(MAGIC)) == MAGIC
    if is_stv:
        return identity_from_stv(path, driving)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return identity_from_image(path, generator, driving.generator_name, device)
    raise InputError(f"--identity {path}: neither a .stv file nor an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
