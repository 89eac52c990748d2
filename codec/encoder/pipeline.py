"""Encoder stages 2-4 (paper Fig. 2): inversion -> ID-latent selection -> head-pose encoding, each cached.

    frames [N,3,R,R] --invert--> L_t --G(L_t), ID similarity, frontal pose--> L_ID
                     --eq. 2 against G(L_t) at low resolution--> (yaw_t, pitch_t)

The targets of the later stages are the inversions' renderings G(L_t), not the raw frames: the paper found the
StyleSpace optimisation too sensitive to the real pictures' noise (§4.2), and it keeps every comparison inside the
generator's own image domain.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
import numpy as np
import torch

from codec.encoder.cost import RenderCount
from codec.encoder.frames import FrameRange, FrameSource, as_frame_source, checkpoint_window, windows
from codec.encoder.head_pose import PoseSettings, encode_head_pose
from codec.encoder.id_select import select_id_frame
from codec.encoder.invert import Encoder, ProjectSettings, in_batches, invert
from codec.encoder.pose_directions import PoseEstimator
from codec.encoder.styleflow_condition import ConditionSettings, estimate_condition
from codec.encoder.progress import frame_bar
from codec.encoder.losses import mask_rows
from codec.encoder.workdir import CARRY_PREFIX, cached_stage, resumable_stage, stage_key
from codec.models.pose import PoseEditor
from codec.models.styleflow import PITCH_INDEX, YAW_INDEX, StyleFlowPoseEditor

@dataclass
class EncoderModels:
    generator: torch.nn.Module
    editor: PoseEditor
    lpips: torch.nn.Module
    identity: torch.nn.Module  # identity_similarity(a, b) -> [B]: ArcFace, or its seeded stand-in for the tiny model
    encoder: Encoder | None = None  # feed-forward inverter (e4e); None: projection from the mean latent
    pose_estimator: PoseEstimator | None = None  # for the frontal preference of ID selection


@dataclass(frozen=True)
class Part1Settings:
    inverter: str = "project"  # e4e's answer refined by the projector (e4e alone: add no generator forwards)
    stop_at: int = 32  # resolution of the pose stage's early-exit images
    project: ProjectSettings = field(default_factory=ProjectSettings)
    pose: PoseSettings = field(default_factory=PoseSettings)
    frontal_weight: float = 0.5
    condition: ConditionSettings = field(default_factory=ConditionSettings)  # StyleFlow editors only


@dataclass(frozen=True)
class Part1Result:
    latents: torch.Tensor  # [N, n_latent, dim]
    id_frame: int
    id_latent: torch.Tensor  # [n_latent, dim]
    id_scores: np.ndarray  # [N]
    yaw: np.ndarray  # [N]
    pitch: np.ndarray  # [N]
    key: str  # cache key of the last stage (what later stages chain on)
    generator_renders: dict[str, RenderCount]  # per stage run (not read from the cache), summed over frames;
    # pose at the `stop_at` resolution
    styleflow_condition: torch.Tensor | None = None  # [17] the ID latent's condition, when the editor is StyleFlow


def inversion_targets(generator: torch.nn.Module, latents: torch.Tensor, stop_at: int | None = None,
                      batch: int = 8) -> torch.Tensor:
    """G(L_t) (at the early-exit resolution `stop_at`): what every later stage compares its renders with."""
    with torch.no_grad():
        return in_batches(lambda w: generator(w, stop_at=stop_at), latents, batch)


def encode_part1(
    frames: FrameSource | torch.Tensor,
    models: EncoderModels,
    masks: dict[str, torch.Tensor],
    settings: Part1Settings = Part1Settings(),
    work_dir: Path | None = None,
    input_key: str = "",
    progress: bool = True,
    window: int | None = None,
) -> Part1Result:
    """frames [N, 3, R, R] in [-1, 1] at the generator's resolution, read a window of
    `settings.project.batch_frames` at a time; masks: 'face' and 'face_rigid' at `settings.stop_at`
    ([1 or N, 1, r, r]). `input_key` names the frames (e.g. the video's digest and range) for the work-dir cache.
    Inversion and head pose keep their results in the work dir a `window` of frames at a time (in whole batches;
    None: the whole clip at once), so that an interrupted run resumes at the window it was in."""
    frames = as_frame_source(frames)
    window = window or max(len(frames), 1)
    generator = models.generator
    renders: dict[str, RenderCount] = {}

    key = stage_key(input_key, "invert", {"inverter": settings.inverter, "project": asdict(settings.project)})

    def run_inversion(start: int, stop: int, carried: dict | None) -> dict:
        inversion = invert(FrameRange(frames, start, stop), generator, settings.inverter, models.encoder,
                           models.lpips, settings.project, progress=bar,
                           previous=None if carried is None else carried[CARRY_PREFIX + "latent"])
        renders["invert"] = renders.get("invert", RenderCount()) + inversion.renders
        return {"latents": inversion.w_plus, CARRY_PREFIX + "latent": inversion.w_plus[-1:].clone()}

    with frame_bar(progress, len(frames), "inversion") as bar:
        latents = resumable_stage(work_dir, "invert", key, len(frames),
                                  checkpoint_window(window, settings.project.batch_frames), run_inversion,
                                  bar.update)["latents"]

    key = stage_key(key, "id_select", {"frontal_weight": settings.frontal_weight,
                                       "estimator": models.pose_estimator is not None})

    def run_selection():
        similarity, pose = _identity_and_pose(frames, latents, models, settings.project.batch_frames)
        renders["id_select"] = RenderCount(forwards=len(latents))
        choice = select_id_frame(similarity, *(pose.T if pose is not None else (None, None)),
                                 frontal_weight=settings.frontal_weight)
        return {"id_frame": torch.tensor([choice.frame]), "scores": torch.from_numpy(choice.scores)}

    selection = cached_stage(work_dir, "id_select", key, run_selection)
    id_frame = int(selection["id_frame"][0])
    id_latent = latents[id_frame]

    condition = None
    if isinstance(models.editor, StyleFlowPoseEditor):
        if models.editor.condition is None:
            # StyleFlow edits need the ID latent's own condition: estimated offline, under the flow
            key = stage_key(key, "condition", asdict(settings.condition))

            def run_condition():
                models.editor.to(next(generator.parameters()).device)  # the ODE fit runs where the generator does
                estimate = estimate_condition(models.editor.flow, id_latent, settings=settings.condition)
                return {"condition": estimate.condition[0].cpu()}

            models.editor.condition = cached_stage(work_dir, "condition", key, run_condition)["condition"]
        condition = torch.as_tensor(models.editor.condition, dtype=torch.float32).reshape(-1).cpu()
    # StyleFlow's yaw/pitch are absolute (they replace the condition's): start from the ID latent's own pose
    initial_pose = (0.0, 0.0) if condition is None else (float(condition[YAW_INDEX]), float(condition[PITCH_INDEX]))
    pose_key = {"pose": asdict(settings.pose), "stop_at": settings.stop_at}
    key = stage_key(key, "pose", pose_key if condition is None else {**pose_key, "condition": condition.tolist()})

    def run_pose(start: int, stop: int, carried: dict | None) -> dict:
        targets = inversion_targets(generator, latents[start:stop], settings.stop_at)
        first = initial_pose if carried is None else tuple(carried[CARRY_PREFIX + "pose"].tolist())
        track = encode_head_pose(generator, models.editor, id_latent, targets,
                                 mask_rows(masks["face_rigid"], start, stop), mask_rows(masks["face"], start, stop),
                                 models.lpips, settings.stop_at, first, settings=settings.pose, progress=bar)
        # + the targets G(L_t)
        renders["pose"] = renders.get("pose", RenderCount()) + track.renders + RenderCount(forwards=stop - start)
        return {"yaw": torch.from_numpy(track.yaw), "pitch": torch.from_numpy(track.pitch),
                CARRY_PREFIX + "pose": torch.tensor([track.yaw[-1], track.pitch[-1]])}

    with frame_bar(progress, len(latents), "head pose") as bar:
        pose = resumable_stage(work_dir, "pose", key, len(latents),
                               checkpoint_window(window, settings.pose.batch_frames), run_pose, bar.update)
    return Part1Result(latents, id_frame, id_latent, selection["scores"].numpy(), pose["yaw"].numpy(),
                       pose["pitch"].numpy(), key, renders, condition)



def _identity_and_pose(frames: FrameSource, latents: torch.Tensor, models: EncoderModels,
                       window: int) -> tuple[np.ndarray, np.ndarray | None]:
    """ID selection's inputs, a window of frames and their full-resolution reconstructions G(L_t) at a time:
    each frame's identity similarity to its reconstruction [N], and its estimated (yaw, pitch) [N, 2] (None
    without an estimator)."""
    similarity, pose = [], []
    with torch.no_grad():
        for lo, hi in windows(len(frames), window):
            images = frames.window(lo, hi)
            reconstructions = models.generator(latents[lo:hi].to(images.device))
            similarity.append(models.identity.identity_similarity(images, reconstructions).float().cpu())
            if models.pose_estimator is not None:
                pose.append(models.pose_estimator(images).cpu())
    return torch.cat(similarity).numpy(), torch.cat(pose).numpy() if pose else None
