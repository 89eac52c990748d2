"""Head-pose encoding (paper eq. 2): for each frame t, the yaw and pitch that make the pose-edited ID latent
render like the frame's own inversion G(L_t).

    min_{Y_t, P_t}  L2(G(edit(L_ID, Y_t, P_t)) * M_rigid, G(L_t) * M_rigid) + LPIPS over the face

M_rigid is the face without eyes, brows and mouth: those move non-rigidly and say nothing about head rotation.
Frames are independent given L_ID, so they are solved in batches; each batch is warm-started from the last
solution of the batch before (poses change smoothly in a video), and the first from the ID latent's own pose.
Everything runs on the generator's early-exit image (`stop_at`): pose is a coarse property, and the low
resolution costs a fraction of a full forward.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import torch

from codec.encoder.cost import RenderCount
from codec.encoder.losses import lpips_distance, mask_rows, masked_l2
from codec.encoder.progress import Progress, frame_bar
from codec.models.pose import PoseEditor


@dataclass(frozen=True)
class PoseSettings:
    steps: int = 40
    # in pose units (StyleFlow slider, nominal -20..20) per Adam step. Measured on a 16-frame tiny-model clip
    # (true latents as targets): lr 1.5 -> max error 0.54 units, lr 1.0 with 30 steps -> 0.80.
    learning_rate: float = 1.5
    batch_frames: int = 16
    lpips_weight: float = 1.0
    l2_weight: float = 1.0


@dataclass(frozen=True)
class PoseTrack:
    yaw: np.ndarray  # [N] pose units
    pitch: np.ndarray  # [N]
    loss: np.ndarray  # [N] final loss per frame (a fit-quality signal for the caller)
    renders: RenderCount  # low-resolution generator renders spent (Adam steps with gradients, a final check)


def encode_head_pose(
    generator: torch.nn.Module,
    editor: PoseEditor,
    id_latent: torch.Tensor,
    targets: torch.Tensor,
    rigid_mask: torch.Tensor,
    face_mask: torch.Tensor,
    lpips_module: torch.nn.Module,
    stop_at: int,
    initial_pose: tuple[float, float] = (0.0, 0.0),
    settings: PoseSettings = PoseSettings(),
    progress: Progress = True,
) -> PoseTrack:
    """Solve eq. 2 for every frame.

    id_latent [n_latent, dim]; targets [N, 3, r, r] in [-1, 1] at r = stop_at (G(L_t) stopped early);
    masks [1 or N, 1, r, r] in {0..1}.
    """
    n_frames = targets.shape[0]
    yaw_out, pitch_out, loss_out = (np.zeros(n_frames, np.float64) for _ in range(3))
    start = torch.tensor(initial_pose, dtype=torch.float32)
    renders = RenderCount()
    bar = frame_bar(progress, n_frames, "head pose")
    for lo in range(0, n_frames, settings.batch_frames):
        hi = min(lo + settings.batch_frames, n_frames)
        pose, loss = _solve_batch(
            generator, editor, id_latent, targets[lo:hi], mask_rows(rigid_mask, lo, hi), mask_rows(face_mask, lo, hi),
            lpips_module, stop_at, start, settings,
        )
        yaw_out[lo:hi], pitch_out[lo:hi], loss_out[lo:hi] = pose[:, 0], pose[:, 1], loss
        start = torch.from_numpy(pose[-1]).float()
        renders += RenderCount(forwards=hi - lo, gradient_steps=(hi - lo) * settings.steps)
        bar.update(hi - lo)
    bar.close()
    return PoseTrack(yaw_out, pitch_out, loss_out, renders)


def pose_loss(
    images: torch.Tensor,
    targets: torch.Tensor,
    rigid_mask: torch.Tensor,
    face_mask: torch.Tensor,
    lpips_module: torch.nn.Module,
    settings: PoseSettings,
) -> torch.Tensor:
    """Per-frame loss of eq. 2."""
    return settings.l2_weight * masked_l2(images, targets, rigid_mask) + settings.lpips_weight * lpips_distance(
        lpips_module, images, targets, face_mask
    )


def _solve_batch(generator, editor, id_latent, targets, rigid_mask, face_mask, lpips_module, stop_at, start,
                 settings: PoseSettings):
    batch = targets.shape[0]
    pose = start.to(targets.device).repeat(batch, 1).clone().requires_grad_(True)
    optimiser = torch.optim.Adam([pose], lr=settings.learning_rate)
    base = id_latent.unsqueeze(0).expand(batch, -1, -1)
    best_loss = torch.full((batch,), float("inf"), device=targets.device)
    best_pose = pose.detach().clone()

    def evaluate() -> torch.Tensor:
        images = generator(editor.edit(base, pose[:, 0], pose[:, 1]), stop_at=stop_at)
        return pose_loss(images, targets, rigid_mask, face_mask, lpips_module, settings)

    for _ in range(settings.steps):
        loss = evaluate()
        _keep_best(loss.detach(), pose.detach(), best_loss, best_pose)
        optimiser.zero_grad(set_to_none=True)
        loss.sum().backward()  # frames are independent: the sum's gradient is each frame's own
        optimiser.step()
    with torch.no_grad():
        _keep_best(evaluate(), pose.detach(), best_loss, best_pose)
    return best_pose.cpu().numpy().astype(np.float64), best_loss.cpu().numpy()


def _keep_best(loss: torch.Tensor, pose: torch.Tensor, best_loss: torch.Tensor, best_pose: torch.Tensor) -> None:
    """Adam overshoots near the minimum; keep each frame's best pose seen, not the last one."""
    better = loss < best_loss
    best_loss[better] = loss[better]
    best_pose[better] = pose[better]
