"""Facial-attribute encoding (paper Algorithm 1, eqs. 3 and 7-12): per frame, 32 StyleSpace offsets alpha_t on
the pose-adjusted latent so that G_ss(A(LH_t) + alpha_t) renders like the frame's inversion S_t = G(L_t).

Per frame t, in order (frames depend on their predecessor):
- s_t = A(LH_t). Warm start (eq. 7): the optimised channels start where frame t-1 ended,
  s_t[V] <- s_{t-1}[V] + alpha_{t-1}, written as an initial alpha_t = s_{t-1}[V] + alpha_{t-1} - s_t[V] so the
  stream stays "offsets on A(LH_t)", which is what the decoder computes (eq. 13).
- Index-specific learning rates (eq. 8), eta_{f,i} = exp(-1.5 Gamma_{f,i} / max_{i in V_f} Gamma_{f,i}), measured
  once per video on the ID latent (channels that move the picture a lot take smaller steps).
- Losses per region (eqs. 10-12): mouth+jaw and eyes+brows: LPIPS + L2 + inter-frame; pupils: L2 + inter-frame
  L2. The inter-frame term asks the rendered change from t-1 to t to equal the target's change, which is what
  keeps the offsets from jittering between equally good solutions.
- The whole-face terms of eq. 9, when their networks are given (stvenc passes the official ArcFace and BiSeNet
  when they are installed; seeded stand-ins would only add noise): L_ID = 1 - cos(ArcFace(hat S_t),
  ArcFace(hat S_1)), identity held to the first rendered frame (Algorithm 1 lists hat S_1 among its inputs for
  this), and L_FP = the L1 distance of the BiSeNet class probabilities of hat S_t and S_t.
- "Optimisation is done in parallel for all the attributes": with `region_gradients`, each region's loss moves
  only its own channels (a mouth channel is never used to repair an eye). That needs well-localised channels;
  the default follows the total loss, which measured better on the tiny model (see AttributeSettings).
- Gaze channels are frozen on frames where a blink is detected (the pupils are hidden; their offsets carry over).
Everything runs on the generator's early-exit image (`stop_at`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from codec.encoder.cost import RenderCount
from codec.encoder.losses import lpips_distance, mask_rows, masked_l2
from codec.encoder.progress import Progress, frame_bar
from codec.encoder.sensitivity import REGIONS, ChannelTable, index_learning_rates, perturbation_gammas
from codec.models.stylespace import apply_offsets

# Regions whose loss includes LPIPS (eqs. 10-11); the pupils use pixel terms only (eq. 12).
LPIPS_REGIONS = ("mouth_jaw", "eyes_brows")
GAZE_REGION = "pupils"
# BiSeNet's trunk divides by 32; below 64 pixels its deepest features are a single pixel.
PARSING_MIN_SIZE = 64
# eq. 5's offsets for eq. 8's learning rates, in each index's spread: one low-resolution render each per index
LEARNING_RATE_STEPS = (-2.0, -1.0, 0.0, 1.0, 2.0)


@dataclass(frozen=True)
class AttributeSettings:
    # Measured on the tiny model (6-frame closed loop, 30 steps, early exit 32): lr 0.2 with the total-loss
    # gradient recovers alpha with correlation 0.957 and re-synthesis 41-50 dB; per-region gradients at lr 0.1
    # reached only 0.66 and 36-41 dB, because the untrained model's channels are not localised (specificity
    # 0.55-0.78) and a region-only gradient cannot undo one channel's leak into another region.
    steps: int = 30
    learning_rate: float = 0.2  # StyleSpace units per Adam step before the per-index factor eta
    lpips_weight: float = 1.0
    l2_weight: float = 10.0
    interframe_weight: float = 10.0
    # True: each region's loss moves only its own channels (the paper's "in parallel for all the attributes");
    # False: every channel follows the total loss (for generators whose channels are not well localised).
    region_gradients: bool = False
    # eq. 9's whole-face terms, used when their networks are given to encode_attributes
    identity_weight: float = 1.0
    parsing_weight: float = 1.0


@dataclass
class _Previous:
    styles_at_indices: torch.Tensor | None = None  # s_{t-1}[V] + alpha_{t-1}, [K]
    target: torch.Tensor | None = None  # S_{t-1}
    render: torch.Tensor | None = None  # hat S_{t-1}


@dataclass(frozen=True)
class AttributeState:
    """What the last frame encoded hands to the next (a clip encoded a window at a time passes it on)."""
    previous: _Previous
    identity_reference: torch.Tensor | None  # [1, D] the identity of hat S_1, when eq. 9's L_ID is on

    def to_tensors(self) -> dict[str, torch.Tensor]:
        out = {"styles_at_indices": self.previous.styles_at_indices, "target": self.previous.target,
               "render": self.previous.render}
        if self.identity_reference is not None:
            out["identity_reference"] = self.identity_reference
        return {name: value.detach() for name, value in out.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], device) -> "AttributeState":
        at = {name: value.to(device) for name, value in tensors.items()}
        return cls(_Previous(at["styles_at_indices"], at["target"], at["render"]), at.get("identity_reference"))


@dataclass(frozen=True)
class AttributeTrack:
    alpha: np.ndarray  # [N, K]
    loss: np.ndarray  # [N] final total loss per frame
    renders: RenderCount  # low-resolution generator renders spent (Adam steps with gradients, a final check)
    state: AttributeState | None = None  # after the last frame (None for no frames)


@dataclass(frozen=True)
class FaceNetworks:
    """The networks of eq. 9's whole-face terms; either may be None (that term is then left out)."""
    identity: torch.nn.Module | None = None  # ArcFace-shaped: identity_embedding(images) -> unit vectors
    parsing: torch.nn.Module | None = None  # BiSeNet (codec.models.bisenet)


def _parsing_size(images: torch.Tensor) -> int:
    # parsed at the comparison's own resolution (the early exit), not the net's 512: it runs every step
    return max(images.shape[-1], PARSING_MIN_SIZE)


def parse_target(networks: FaceNetworks, target: torch.Tensor) -> torch.Tensor | None:
    """The target's face-parsing class probabilities for L_FP (None without a parsing network)."""
    if networks.parsing is None:
        return None
    from codec.models.bisenet import parse

    with torch.no_grad():
        return parse(networks.parsing, target, _parsing_size(target))


def face_losses(render: torch.Tensor, target: torch.Tensor, identity_reference: torch.Tensor | None,
                networks: FaceNetworks, settings: AttributeSettings,
                target_parsed: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """eq. 9's L_ID and L_FP for one frame (scalars), for the networks that are there. identity_reference: the
    unit identity embedding [1, D] the render must keep (that of hat S_1); target_parsed: the target's class
    probabilities from `parse_target` (parsed once for all the frame's steps; parsed here when None)."""
    out = {}
    if networks.identity is not None and identity_reference is not None:
        embedding = networks.identity.identity_embedding(render)
        out["identity"] = settings.identity_weight * (1 - (embedding * identity_reference).sum(1)).sum()
    if networks.parsing is not None:
        from codec.models.bisenet import face_parsing_loss

        if target_parsed is None:
            target_parsed = parse_target(networks, target)
        loss = face_parsing_loss(networks.parsing, render, target_parsed, size=_parsing_size(render),
                                 targets_parsed=True)
        out["parsing"] = settings.parsing_weight * loss.sum()
    return out


def video_learning_rates(
    generator: torch.nn.Module,
    id_latent: torch.Tensor,
    table: ChannelTable,
    masks: dict[str, torch.Tensor],
    lpips_module: torch.nn.Module,
    stop_at: int,
    steps_in_std: Sequence[float] = LEARNING_RATE_STEPS,
) -> np.ndarray:
    """eq. 8's eta for this video: Gamma_{f,i} (eq. 5) of each table index on its own region, measured on the
    video's ID latent (sensitivities differ between people, paper §3.4), with offsets in units of each channel's
    spread as the table records it. Costs len(table.indices) * len(steps_in_std) renders at `stop_at`."""
    spread = torch.from_numpy(table.channel_spread())
    offsets = spread[:, None] * torch.tensor(steps_in_std, dtype=torch.float64)[None]
    with torch.no_grad():
        gammas = perturbation_gammas(generator, lpips_module, id_latent[None], table.indices, offsets,
                                     {region: masks[region] for region in set(table.regions)}, stop_at)
    return index_learning_rates([float(gammas[r][k]) for k, r in enumerate(table.regions)], table.regions)


def encode_attributes(
    generator: torch.nn.Module,
    pose_latents: torch.Tensor,
    targets: torch.Tensor,
    style_indices: Sequence[tuple[int, int]],
    regions: Sequence[str],
    masks: dict[str, torch.Tensor],
    lpips_module: torch.nn.Module,
    stop_at: int,
    eta: np.ndarray,
    blink: np.ndarray | None = None,
    settings: AttributeSettings = AttributeSettings(),
    progress: Progress = True,
    networks: FaceNetworks = FaceNetworks(),
    state: AttributeState | None = None,
) -> AttributeTrack:
    """pose_latents [N, n_latent, dim] (LH_t); targets [N, 3, r, r] (S_t at r = stop_at); masks: region name ->
    [1 or N, 1, r, r]; regions[k] names index k's region; eta [K] from `video_learning_rates`; networks: eq. 9's
    whole-face terms (none by default); state: the track's state after the frame before these (None: these
    frames start the clip)."""
    n_frames, k_count = targets.shape[0], len(style_indices)
    region_of = np.asarray(regions)
    device = targets.device
    # the regions that have indices (decided here, once: asking the device every step would wait for it)
    member = {f: torch.from_numpy(region_of == f).to(device) for f in REGIONS if (region_of == f).any()}
    lr = torch.as_tensor(eta, dtype=torch.float32, device=device) * settings.learning_rate
    alpha_out, loss_out = np.zeros((n_frames, k_count)), np.zeros(n_frames)
    previous = _Previous() if state is None else state.previous
    identity_reference = None if state is None else state.identity_reference
    starts_clip = state is None
    renders = RenderCount()
    bar = frame_bar(progress, n_frames, "attributes")
    for t in range(n_frames):
        frame_masks = {f: mask_rows(m, t, t + 1).to(device) for f, m in masks.items()}
        with torch.no_grad():
            styles = [s.detach() for s in generator.styles(pose_latents[t : t + 1])]
            base = _at_indices(styles, style_indices)
        start = (torch.zeros(k_count, device=device) if previous.styles_at_indices is None
                 else previous.styles_at_indices - base)
        frozen = torch.zeros(k_count, dtype=torch.bool, device=device)
        if blink is not None and bool(blink[t]) and GAZE_REGION in member:
            frozen |= member[GAZE_REGION]
        if identity_reference is None and networks.identity is not None:  # hat S_1 is not rendered yet: S_1
            with torch.no_grad():
                identity_reference = networks.identity.identity_embedding(targets[t : t + 1])
        alpha, loss, render = _optimise_frame(
            generator, styles, style_indices, start, frozen, lr, targets[t : t + 1], previous, frame_masks, member,
            lpips_module, stop_at, settings, networks, identity_reference,
        )
        if t == 0 and starts_clip and networks.identity is not None:
            with torch.no_grad():
                identity_reference = networks.identity.identity_embedding(render)
        renders += RenderCount(forwards=1, gradient_steps=settings.steps)
        alpha_out[t], loss_out[t] = alpha.cpu().numpy(), loss
        previous = _Previous(base + alpha, targets[t : t + 1], render)
        bar.update(1)
    bar.close()
    final = AttributeState(previous, identity_reference) if n_frames else state
    return AttributeTrack(alpha_out, loss_out, renders, final)


def _at_indices(styles: Sequence[torch.Tensor], style_indices: Sequence[tuple[int, int]]) -> torch.Tensor:
    return torch.stack([styles[layer][0, channel] for layer, channel in style_indices])


def region_losses(
    render: torch.Tensor,
    target: torch.Tensor,
    previous: _Previous,
    masks: dict[str, torch.Tensor],
    lpips_module: torch.nn.Module,
    settings: AttributeSettings,
) -> dict[str, torch.Tensor]:
    """eqs. 10-12 for one frame: region name -> scalar loss."""
    out = {}
    for region in REGIONS:
        mask = masks[region]
        loss = settings.l2_weight * masked_l2(render, target, mask).sum()
        if region in LPIPS_REGIONS:
            loss = loss + settings.lpips_weight * lpips_distance(lpips_module, render, target, mask).sum()
        if previous.render is not None:
            change, wanted = render - previous.render, target - previous.target
            loss = loss + settings.interframe_weight * masked_l2(change, wanted, mask).sum()
        out[region] = loss
    return out


def _gradient(losses: dict[str, torch.Tensor], alpha: torch.Tensor, member: dict[str, torch.Tensor],
              by_region: bool) -> torch.Tensor:
    if not by_region:
        (g,) = torch.autograd.grad(sum(losses.values()), alpha)
        return g[0]
    grad = torch.zeros(alpha.shape[1], dtype=alpha.dtype, device=alpha.device)
    regions = [f for f in REGIONS if f in member]
    whole_face = [v for k, v in losses.items() if k not in REGIONS]
    for i, region in enumerate(regions):
        (g,) = torch.autograd.grad(losses[region], alpha, retain_graph=bool(whole_face) or i < len(regions) - 1)
        grad = torch.where(member[region], g[0], grad)
    if whole_face:  # identity and parsing concern the whole face: every channel follows them
        (g,) = torch.autograd.grad(sum(whole_face), alpha)
        grad = grad + g[0]
    return grad


def _optimise_frame(generator, styles, style_indices, start, frozen, lr, target, previous, masks, member,
                    lpips_module, stop_at, settings: AttributeSettings, networks: FaceNetworks, identity_reference):
    alpha = start.clone().unsqueeze(0).requires_grad_(True)
    target_parsed = parse_target(networks, target)  # the target holds still over the frame's steps
    # Adam's moments per index, kept by hand so that each index has its own learning rate (eq. 8) and each
    # region its own gradient.
    first, second = torch.zeros_like(start), torch.zeros_like(start)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    # the best step so far, kept on the device: a Python comparison per step would wait for the device every step
    best_total, best_alpha, best_render = torch.tensor(float("inf"), device=start.device), start.clone(), None
    for step in range(settings.steps + 1):
        with torch.set_grad_enabled(step < settings.steps):  # the last render only scores the last step
            render = generator.synthesize(apply_offsets(styles, style_indices, alpha), stop_at=stop_at)
            losses = region_losses(render, target, previous, masks, lpips_module, settings)
            losses.update(face_losses(render, target, identity_reference, networks, settings, target_parsed))
        total = sum(v.detach() for v in losses.values()).reshape(())
        better = total < best_total
        best_total = torch.where(better, total, best_total)
        best_alpha = torch.where(better, alpha.detach()[0], best_alpha)
        best_render = render.detach() if best_render is None else torch.where(better, render.detach(), best_render)
        if step == settings.steps:
            break
        grad = _gradient(losses, alpha, member, settings.region_gradients)
        grad = torch.where(frozen, torch.zeros_like(grad), grad)
        first = beta1 * first + (1 - beta1) * grad
        second = beta2 * second + (1 - beta2) * grad * grad
        corrected = (first / (1 - beta1 ** (step + 1))) / ((second / (1 - beta2 ** (step + 1))).sqrt() + eps)
        with torch.no_grad():
            alpha[0] -= lr * corrected
    return best_alpha, float(best_total), best_render
