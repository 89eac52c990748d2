"""Paste-back with torch, on the decoder's device: the same geometry and blend as codec.decoder.paste's OpenCV
path (bicubic warp of the face with replicated borders, bilinear warp of the feathered mask, the face rounded to
8 bits before the blend as OpenCV's uint8 warp does), so a GPU decode keeps its renderings on the GPU and copies
only finished frames back. Only the crop square's bounding box in the frame is resampled: outside it the mask is
zero and the frame is the background. OpenCV quantises its sampling positions to 1/32 pixel and its bicubic
weights to fixed point, torch does neither, so the two paths differ by a grey level here and there
(tests/test_paste_torch.py bounds it).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from codec.decoder.pipeline import to_host
from codec.preprocess.crop import crop_similarity
from codec.preprocess.masks import face_blend_mask


def paste_frames(paste, first: int, upright: torch.Tensor, rolls: np.ndarray) -> np.ndarray:
    """Frames first, first + 1, ... of `paste` (a codec.decoder.paste.PasteBack) from their upright renderings
    [B, S, S, 3] uint8 on a device -> [B, H, W, 3] uint8 on the host, placed and blended on that device."""
    device = upright.device
    mask = torch.from_numpy(face_blend_mask(upright.shape[1])).to(device)
    backgrounds = _DeviceCopies(device)
    frames = []
    for k in range(upright.shape[0]):
        index = first + k
        background = backgrounds(paste.scene(index))
        source = paste.placed(index)
        if source is None:
            picture = resized(upright[k], (paste.placement.width, paste.placement.height))
        else:
            picture = paste_face_torch(upright[k], paste.placement.centre[source],
                                       float(paste.placement.side[source]), float(rolls[k]), background, mask)
        if paste.size is not None and paste.size != (picture.shape[1], picture.shape[0]):
            picture = resized(picture, paste.size)
        frames.append(picture)
    return to_host(torch.stack(frames)).numpy()


class _DeviceCopies:
    """Host pictures copied to the device once each (the still is the same array for every frame)."""

    def __init__(self, device: torch.device):
        self.device, self.last, self.copy = device, None, None

    def __call__(self, picture: np.ndarray) -> torch.Tensor:
        if picture is not self.last:
            self.last, self.copy = picture, torch.from_numpy(np.ascontiguousarray(picture)).to(self.device)
        return self.copy


def paste_face_torch(face: torch.Tensor, centre: np.ndarray, side: float, roll_deg: float,
                     background: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """codec.decoder.paste.paste_face on tensors: face [S, S, 3] uint8 upright, background [H, W, 3] uint8, both
    on one device -> the frame [H, W, 3] uint8 there."""
    size = face.shape[0]
    mask = torch.from_numpy(face_blend_mask(size)).to(face.device) if mask is None else mask
    transform = crop_similarity(centre, side, roll_deg, size)  # frame pixels -> face pixels
    box = _square_box(transform, size, background.shape[:2])
    if box is None:
        return background.clone()
    (x0, x1), (y0, y1) = box
    grid = _sampling_grid(transform, size, x0, x1, y0, y1, face.device)
    placed = F.grid_sample(face.permute(2, 0, 1)[None].float(), grid, mode="bicubic", padding_mode="border",
                           align_corners=True)[0].round().clamp(0, 255)
    alpha = F.grid_sample(mask[None, None].float(), grid, mode="bilinear", padding_mode="zeros",
                          align_corners=True)[0]
    under = background[y0:y1, x0:x1].permute(2, 0, 1).float()
    blended = (alpha * placed + (1.0 - alpha) * under).round().clamp(0, 255).to(torch.uint8)
    frame = background.clone()
    frame[y0:y1, x0:x1] = blended.permute(1, 2, 0)
    return frame


def _square_box(transform: np.ndarray, size: int, shape: tuple[int, int]):
    """The frame pixels the face square (grown by a pixel for the interpolation's reach) can touch, as
    ((x0, x1), (y0, y1)) half-open, clipped to the frame; None when it lies wholly outside."""
    inverse = np.linalg.inv(transform)
    corners = np.array([[-1, -1], [size, -1], [-1, size], [size, size]], np.float64)
    points = corners @ inverse[:2, :2].T + inverse[:2, 2]
    height, width = shape
    x0, y0 = np.maximum(np.floor(points.min(axis=0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(points.max(axis=0)).astype(int) + 2, [width, height])
    return None if x0 >= x1 or y0 >= y1 else ((int(x0), int(x1)), (int(y0), int(y1)))


def _sampling_grid(transform: np.ndarray, size: int, x0: int, x1: int, y0: int, y1: int,
                   device: torch.device) -> torch.Tensor:
    """[1, h, w, 2] grid_sample coordinates (align_corners=True: -1 and 1 at the face's first and last pixel
    centres) of the face position each frame pixel of the box samples."""
    linear = torch.tensor(transform[:2, :2], dtype=torch.float64, device=device)
    offset = torch.tensor(transform[:2, 2], dtype=torch.float64, device=device)
    ys, xs = torch.meshgrid(torch.arange(y0, y1, dtype=torch.float64, device=device),
                            torch.arange(x0, x1, dtype=torch.float64, device=device), indexing="ij")
    source = torch.stack([xs, ys], -1) @ linear.T + offset
    return (source * (2.0 / (size - 1)) - 1.0).float()[None]


def resized(picture: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[H, W, 3] uint8 -> [height, width, 3] uint8 for size = (width, height), as OpenCV's INTER_AREA: the mean
    over each output pixel's area when shrinking, bilinear when growing."""
    image = picture.permute(2, 0, 1)[None].float()
    shrinking = size[0] <= picture.shape[1] and size[1] <= picture.shape[0]
    image = F.interpolate(image, size=(size[1], size[0]), mode="area" if shrinking else "bilinear",
                          **({} if shrinking else {"align_corners": False}))
    return image[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
