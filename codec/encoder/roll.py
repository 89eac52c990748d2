"""Roll of frames that are crops in the generator's framing but may be rotated in the image: `stvenc --aligned`
input from a source whose head tilts, e.g. the tiny generator's pictures, where no face landmarks exist to align
by (full frames take their roll from the landmarks, codec.preprocess.align).

1. Relative roll: each frame's rotation against a reference frame (the middle one), by a search over angles for
   the highest normalised correlation inside the inscribed disc (a rotation pads the corners), refined by a
   parabola through the best angle and its neighbours. Frames of one clip differ by pose and expression, not by
   content, so the correlation peaks at their relative rotation.
2. Absolute roll: the generator renders upright pictures, and its average picture G(w_avg) is the canonical one
   (as the mean face's landmarks are FFHQ alignment's template): each frame's rotation against it, less its
   relative roll, estimates the clip's common roll; the median over frames is taken. Measured on mismatched tiny
   clips (tools/bench_encode.py --truth mismatched, 8 frames, 4 seeds): 0.2-2.7 degrees off (e4e's reconstruction
   error as the score instead: up to 12 degrees off). The joint refinement then fits each frame's roll with the
   rest (codec.encoder.refine).
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import torch

from codec.decoder.render import apply_roll
from codec.encoder.cost import RenderCount
from codec.encoder.frames import FrameSource, as_frame_source, windows


@dataclass(frozen=True)
class RollSettings:
    search_deg: float = 30.0  # relative roll searched within +-this
    step_deg: float = 1.0


def _disc(size: int, device) -> torch.Tensor:
    centre = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    return ((centre[:, None] ** 2 + centre[None] ** 2) <= (0.45 * size) ** 2).float()


def _peak(angles: np.ndarray, scores: np.ndarray) -> float:
    """The angle of the highest score, refined by a parabola through it and its two neighbours (kept inside)."""
    best = int(np.argmax(scores))
    lo, hi = max(best - 1, 0), min(best + 2, len(angles))
    if hi - lo < 3:
        return float(angles[best])
    a, b, _ = np.polyfit(angles[lo:hi], scores[lo:hi], 2)
    if a >= 0:
        return float(angles[best])
    return float(np.clip(-b / (2 * a), angles[lo], angles[hi - 1]))


def relative_roll(frames: FrameSource | torch.Tensor, reference: torch.Tensor,
                  settings: RollSettings = RollSettings()) -> np.ndarray:
    """frames [N, 3, R, R], reference [3, R, R] -> [N] degrees that each frame is rolled by against the reference."""
    return _rolls_against(frames, [reference], settings)[0]


def _rolls_against(frames: FrameSource | torch.Tensor, references: list[torch.Tensor],
                   settings: RollSettings) -> list[np.ndarray]:
    """relative_roll against each reference, each frame read once (one frame resident at a time)."""
    source = as_frame_source(frames)
    angles = np.arange(-settings.search_deg, settings.search_deg + 1e-9, settings.step_deg)
    device = references[0].device
    turns = torch.tensor(angles, dtype=torch.float32, device=device)
    disc = _disc(references[0].shape[-1], device)

    def centred(x: torch.Tensor) -> torch.Tensor:
        x = x.mean(-3)  # luminance-like: one channel
        x = (x - (x * disc).sum((-1, -2), keepdim=True) / disc.sum()) * disc
        return x.flatten(-2) / x.flatten(-2).norm(dim=-1, keepdim=True).clamp_min(1e-12)

    targets = [centred(reference) for reference in references]
    out = [np.zeros(len(source)) for _ in references]
    with torch.no_grad():
        for t, _ in windows(len(source), 1):
            frame = source.window(t, t + 1)[0]
            turned = centred(apply_roll(frame.expand(len(angles), -1, -1, -1), -turns))
            for found, target in zip(out, targets):
                found[t] = _peak(angles, (turned @ target).cpu().numpy())
    return out


def estimate_roll(frames: FrameSource | torch.Tensor, generator: torch.nn.Module,
                  settings: RollSettings = RollSettings()) -> tuple[np.ndarray, RenderCount]:
    """frames [N, 3, R, R] in [-1, 1] at the generator's resolution, read one at a time -> (roll [N] degrees in
    the stream's convention: `apply_roll(upright, roll)` gives the frame; the full-resolution renders spent)."""
    source = as_frame_source(frames)
    middle = source.window(len(source) // 2, len(source) // 2 + 1)[0]
    with torch.no_grad():
        template = generator(generator.latent_avg.reshape(1, 1, -1).expand(1, generator.n_latent, -1))[0]
    relative, against_template = _rolls_against(source, [middle, template.to(middle)], settings)
    return relative + float(np.median(against_template - relative)), RenderCount(forwards=1)
