"""A face image -> ID latent, treated exactly like an encoder frame: aligned (FFHQ crop, roll removed) and
inverted with the generator's default inverter. Used by puppeteering (`stvdec --identity FACE.png`)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from codec import zoo
from codec.encoder.invert import ProjectSettings, invert
from codec.encoder.losses import make_lpips
from codec.errors import InputError, ModelError
from codec.preprocess.align import align_video


def read_image(path: Path) -> np.ndarray:
    """RGB uint8; grayscale and alpha images are converted."""
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def id_latent_from_image(path: Path, generator: torch.nn.Module, generator_name: str,
                         device: torch.device | str = "cpu", steps: int = ProjectSettings.steps) -> torch.Tensor:
    """[n_latent, dim] W+ latent of the face in the image at `path`."""
    size = generator.config.size
    aligned = next(align_video([read_image(Path(path))], output_size=size)).image
    frame = torch.from_numpy(aligned).permute(2, 0, 1)[None].float().to(device) / 127.5 - 1.0
    try:
        encoder = zoo.load_inverter(generator_name, device)
    except ModelError:  # no encoder for this generator: the projector starts from the mean latent
        encoder = None
    inversion = invert(frame, generator, "project", encoder, make_lpips(device), ProjectSettings(steps=steps),
                       progress=False)
    return inversion.w_plus[0].detach()
