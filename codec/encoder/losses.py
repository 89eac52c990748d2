"""Image losses of the encoder: LPIPS (optionally masked), masked L2, and their batched forms.

LPIPS uses the `lpips` package's own linear layers (shipped inside the package). Its AlexNet backbone is an
ImageNet download made by torchvision; when that file is not in torch's hub cache (no network here), the backbone
is randomly initialised from a fixed seed instead (`pnet_rand=True`) and a warning is logged once: a seeded
random backbone still gives a smooth, deterministic feature distance (good enough for closed-loop tests on the
tiny model), but not the perceptual calibration the paper relies on for real faces.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# torchvision's file name for the ImageNet AlexNet weights that lpips' backbone loads.
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
# AlexNet's first layers need some spatial extent; smaller images (the tiny model's early exit) are upsampled.
LPIPS_MIN_SIZE = 64
BACKBONE_SEED = 1234


# lpips' AlexNet trunk: slice k holds torchvision's `features.i` for i in this range.
LPIPS_ALEX_SLICES = {1: range(0, 2), 2: range(2, 5), 3: range(5, 8), 4: range(8, 10), 5: range(10, 12)}


def backbone_file() -> Path | None:
    """The ImageNet AlexNet weights: fetched into stv's cache (`stv-weights fetch lpips_alex_backbone`) or
    already in torch's hub cache; None when neither has them."""
    from codec import zoo

    for candidate in (zoo.location("lpips_alex_backbone"), Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE):
        if candidate.is_file():
            return candidate
    return None


def backbone_available() -> bool:
    return backbone_file() is not None


def _load_alexnet_trunk(module: torch.nn.Module, file: Path) -> None:
    """torchvision AlexNet `features.*` weights -> lpips' sliced trunk (no download, weights_only load)."""
    state = torch.load(file, map_location="cpu", weights_only=True)
    trunk = {}
    for key, value in state.items():
        if key.startswith("features."):
            _, index, rest = key.split(".", 2)
            slice_no = next(k for k, span in LPIPS_ALEX_SLICES.items() if int(index) in span)
            trunk[f"slice{slice_no}.{index}.{rest}"] = value
    module.net.load_state_dict(trunk, strict=True)


def make_lpips(device: torch.device | str = "cpu") -> torch.nn.Module:
    """An LPIPS(alex) module, frozen, in eval mode: real backbone when cached, seeded random otherwise."""
    import lpips  # imported here: it prints at import and is only needed by the encoder

    trunk_file = backbone_file()
    if trunk_file is None:
        log.warning(
            "LPIPS: ImageNet AlexNet weights not found in %s; using a seeded random backbone "
            "(fine for tests, not for real-face fidelity; fetch them with `stv-weights fetch lpips_alex_backbone`)",
            Path(torch.hub.get_dir()) / "checkpoints",
        )
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's deprecation notes about lpips' call
        torch.manual_seed(BACKBONE_SEED)
        # The trunk is always built empty and filled here: lpips' own loading would try a download.
        module = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    if trunk_file is not None:
        from codec import zoo

        if trunk_file == zoo.location("lpips_alex_backbone"):
            zoo.verify("lpips_alex_backbone", trunk_file)
        _load_alexnet_trunk(module, trunk_file)
    module = module.to(device).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _at_least(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] >= size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def lpips_distance(
    lpips_module: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample LPIPS between images in [-1, 1]; with a mask [B or 1, 1, H, W] both are multiplied by it
    first (paper eq. 5: LPIPS(S * M, S' * M))."""
    if mask is not None:
        images, targets = images * mask, targets * mask
    images, targets = _at_least(images, LPIPS_MIN_SIZE), _at_least(targets, LPIPS_MIN_SIZE)
    return lpips_module(images, targets).flatten()


def masked_l2(images: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample mean squared error over the mask's area (whole image without a mask)."""
    sq = (images - targets) ** 2
    if mask is None:
        return sq.flatten(1).mean(1)
    mask = mask.expand(sq.shape[0], 1, *sq.shape[2:])
    area = mask.flatten(1).sum(1).clamp_min(1.0) * sq.shape[1]
    return (sq * mask).flatten(1).sum(1) / area


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """A [.., H, W] mask at another resolution (area-averaged: soft edges instead of aliasing)."""
    mask = mask.float()
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    if mask.shape[-1] == size:
        return mask
    return F.interpolate(mask, size=(size, size), mode="area" if mask.shape[-1] > size else "bilinear")


def mask_rows(mask: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Frames lo..hi of a per-frame mask [N, 1, r, r]; a mask shared by all frames ([1, 1, r, r]) as it is."""
    return mask if mask.shape[0] == 1 else mask[lo:hi]


def psnr(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = ((images - targets) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return 10.0 * torch.log10(4.0 / mse)
