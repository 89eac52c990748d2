"""The whole encoder: video -> aligned faces -> latents -> 35 parameters per frame -> .stv.

Stages (each a module of its own; this file only wires them and caches their outputs in the work directory):
pre-processing (codec.preprocess), inversion + ID selection + head pose (codec.encoder.pipeline), facial
attributes (codec.encoder.attributes), quantisation and writing (codec.bitstream).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from codec import interrupts, zoo
from codec.bitstream import StvHeader, StvWriter
from codec.bitstream.background_video import DEFAULT_KBITS, BackgroundVideoEncoder
from codec.bitstream.compress import compress
from codec.bitstream.header import (EXT_BACKGROUND, EXT_BACKGROUND_VIDEO, EXT_COMPACT_LATENT, EXT_NOTE,
                                    EXT_PLACEMENT, EXT_POSE)
from codec.bitstream.latent import encode_compact_latent
from codec.encoder.attributes import (LEARNING_RATE_STEPS, AttributeSettings, AttributeState, FaceNetworks,
                                      encode_attributes, video_learning_rates)
from codec.encoder.cost import RenderCount, measured_stage
from codec.encoder.frames import AlignedFrames, FrameSource, RolledFrames, default_window, fixed_mmap_threshold
from codec.encoder.scene import SceneCollector
from codec.encoder.head_pose import PoseSettings
from codec.encoder.progress import frame_bar
from codec.encoder.losses import make_lpips, mask_rows, resize_mask
from codec.encoder.pipeline import EncoderModels, Part1Settings, encode_part1, inversion_targets
from codec.encoder.refine import RefineSettings, refine
from codec.encoder.roll import RollSettings, estimate_roll
from codec.encoder.pose_directions import ESTIMATORS
from codec.encoder.latent_rate import DEFAULT_LATENT_LOSS_DB, choose_compact_latent
from codec.encoder.rate import (DEFAULT_QUALITY, ClipRenderer, check_quality, choose_quantisation,
                                parameter_sensitivity)
from codec.encoder.sensitivity import load_channel_table
from codec.encoder.styleflow_condition import styleflow_pose_spec
from codec.encoder.workdir import CARRY_PREFIX, cached_stage, read_keyed, resumable_stage, stage_key, write_keyed
from codec.errors import InputError, ModelError
from codec.preprocess.align import align_video_with_sources
from codec.preprocess.masks import canonical_masks, region_masks
from codec.preprocess.video import probe, read_frames

log = logging.getLogger(__name__)

# Region masks are drawn at this size and area-averaged down to the encoder's resolution, so that small regions
# (pupils) keep a soft weight instead of vanishing.
MASK_DRAW_SIZE = 256
# The channel table shipped for each generator.
# eq. 9's whole-face networks (model registry names), used by attribute encoding when installed
FACE_NETWORKS = ("arcface_ir_se50", "bisenet_face_parsing")
CHANNEL_TABLES = {"tiny": "tiny-64-channels.json", "stylegan2-ffhq-config-f": "ffhq-1024-channels.json"}
LATENT_FORMS = ("compact", "exact")  # how the ID latent is stored (EncodeSettings.latent)


@dataclass(frozen=True)
class EncodeSettings:
    generator: str = "tiny"
    # stvenc --pose-editor: None (the generator's default), "styleflow", "linear" or "linear:NAME"
    # (zoo.pose_editor_spec)
    pose_editor: str | None = None
    frames: tuple[int, int | None] = (0, None)
    aligned_input: bool = False  # frames are already aligned crops (e.g. the generator's own renders)
    # With aligned_input: the crops may be rotated in the image (no landmarks to align by, e.g. the tiny
    # generator's pictures): estimate each frame's roll (codec.encoder.roll), undo it for the stages, and fit it
    # with the rest in the refinement, against the frames as they are. False: roll 0.
    aligned_roll: bool = False
    roll: RollSettings = field(default_factory=RollSettings)
    # arith: the fewest bytes, and the default stream needs a format 1.3 reader anyway for its compact latent
    profile: str = "arith"
    # Rate-distortion control (codec.encoder.rate): each parameter's quantiser step from its sensitivity and
    # `quality` (0..100); with max_loss_db, the quality is raised until the measured PSNR loss is at most that.
    quality: float = DEFAULT_QUALITY
    max_loss_db: float | None = None
    # The ID latent: "compact" (format 1.3 `idpc`: coefficients in the generator's shipped PCA basis of W, within
    # latent_max_loss_db of the float32 latent; codec.encoder.latent_rate) or "exact" (float16, every version).
    latent: str = "compact"
    latent_max_loss_db: float = DEFAULT_LATENT_LOSS_DB
    # The whole picture (format 1.2), for full frames: each face's placement ('plac') always, and the scene
    # behind it ('bgnd') as one still picture ("still", coded at background_quality) or not at all ("none"),
    # or the whole frames as a low-rate AV1 video ("video": 'bgvd', format 1.3, at background_kbits; no still
    # beside it: only a fallback, it would add 64% to a 10 s video's bytes, README "The whole picture").
    background: str = "still"
    background_quality: int = 80
    background_kbits: int = DEFAULT_KBITS
    # With the joint refinement after them, the paper's stages only give its starting point, so they run at a
    # fraction of the cost they need alone (e4e without projector steps, 15 pose and 5 attribute steps): measured
    # on a 16-frame tiny clip, 45.9 dB and offsets correlation 0.964 for 144 full-forward equivalents per frame
    # (tools/bench_encode.py: a forward+backward weighed by its measured cost; 56-60 when it counted as one
    # forward), against 31.9 dB / 0.31 for the full-cost stages alone (projector 20, pose 40, attributes 30; 50
    # by that old count).
    part1: Part1Settings = field(default_factory=lambda: Part1Settings(inverter="e4e", pose=PoseSettings(steps=15)))
    attributes: AttributeSettings = field(default_factory=lambda: AttributeSettings(steps=5))
    refine: RefineSettings = field(default_factory=RefineSettings)  # rounds=0: the paper's stages alone


@dataclass(frozen=True)
class EncodeReport:
    frames: int
    id_frame: int
    saturated_values: int
    bytes_written: int
    # generator renders per stage, summed over frames (stages read from the work dir's cache are absent)
    generator_renders: dict[str, RenderCount]
    # the resolution each stage renders at ("pose" and "attributes": the early exit `stop_at`)
    stage_resolution: dict[str, int]
    quality: float = DEFAULT_QUALITY  # the quality the parameters were quantised at (raised by max_loss_db)
    psnr_exact_db: float = float("nan")  # the clip's PSNR rendered from the unquantised parameters
    psnr_loss_db: float = float("nan")  # ... minus its PSNR from the quantised ones (the decoded picture)
    latent: str = "exact"  # how the ID latent is stored: "compact" or "exact"
    id_latent_bytes: int = 0  # its bytes in the header (the `idpc` data, or the float16 latent's zstd frame)
    latent_loss_db: float = float("nan")  # the clip's PSNR loss from storing it so, against the float32 latent


@dataclass
class AlignedClip:
    frames: AlignedFrames  # [N] aligned crops as uint8, read back a window at a time
    roll_deg: np.ndarray  # [N]
    blink: np.ndarray  # [N] bool
    masks: dict[str, torch.Tensor]  # region -> [1 or N, 1, r, r] soft masks at the encoder's resolution
    scene: SceneCollector | None = None  # placement and background samples (full frames only), while aligning
    whole_picture: list[tuple[bytes, bytes]] = field(default_factory=list)  # the scene's extensions, once made


# With a work dir, alignment's results stay there until the stream is written, so an interrupted encode resumes
# after it: the crops in ALIGNED_FILE, the rest (roll, blink, masks, the whole picture's extensions) in ALIGN_RESULT.
ALIGNED_FILE = "aligned.u8"
ALIGN_RESULT = "align.safetensors"
MASK_PREFIX, EXTENSION_PREFIX = "mask.", "extension."


def encode_video(video: Path, out: Path, settings: EncodeSettings, device: str = "cpu",
                 work_dir: Path | None = None, progress: bool = True, note: str = "",
                 window: int | None = None) -> EncodeReport:
    """Encode `video` into the .stv file `out`. The aligned crops are kept as uint8 in a file (in `work_dir` until
    the stream is written, so that an interrupted run resumes after alignment; else in a temporary dir) and the
    stages read at most `window` of them at a time as floats (None: as many as an
    eighth of the free memory holds, see `codec.encoder.frames.default_window`); a window smaller than a stage's
    batch shrinks that batch."""
    if window is not None and window < 1:
        raise InputError(f"the window must hold at least one frame, got {window}")
    check_quality(settings.quality)
    fixed_mmap_threshold()  # streamed source pictures must not grow the heap with the clip (codec.encoder.frames)
    if settings.latent not in LATENT_FORMS:
        raise InputError(f"latent must be one of {', '.join(LATENT_FORMS)}, got {settings.latent!r}")
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        return _encode(video, out, settings, device, Path(work_dir), progress, note, window, Path(work_dir))
    with tempfile.TemporaryDirectory(prefix="stv-frames-") as folder:
        return _encode(video, out, settings, device, None, progress, note, window, Path(folder))


def _encode(video: Path, out: Path, settings: EncodeSettings, device: str, work_dir: Path | None, progress: bool,
            note: str, window: int | None, frames_dir: Path) -> EncodeReport:
    generator = zoo.load_generator(settings.generator, device=device)
    info = probe(video)
    stop_at = settings.part1.stop_at
    start, stop = settings.frames
    size = generator.config.size
    window = window or default_window(3 * size * size * 4, device)
    settings = within_window(settings, window)
    digest = zoo.sha256_of(video)
    align_key = stage_key(digest, "align", {"frames": [start, stop], "aligned_input": settings.aligned_input,
                                            "size": size, "stop_at": stop_at, "background": settings.background,
                                            "background_quality": settings.background_quality,
                                            "background_kbits": settings.background_kbits})
    clip = _stored_alignment(work_dir, align_key, size, device)
    if clip is None:
        if work_dir is not None:  # an earlier run's result must never describe the crops written now
            (work_dir / ALIGN_RESULT).unlink(missing_ok=True)
        clip = _align(video, settings, info, size, stop_at, frames_dir, device, progress)
        if work_dir is not None:
            write_keyed(work_dir / ALIGN_RESULT, align_key, _alignment_tensors(clip))
    if len(clip.frames) == 0:
        raise InputError(f"{video}: no frames in the range {start}:{'' if stop is None else stop}")
    clip.masks = {name: mask.to(device) for name, mask in clip.masks.items()}
    stage_frames: FrameSource = clip.frames
    input_key = f"{digest}:{start}:{stop}:{settings.aligned_input}:{settings.generator}"
    if settings.pose_editor is not None:  # the cached pose (and later) stages depend on the editor
        input_key += f":pose_editor={settings.pose_editor}"
    inverter = _inverter(settings, device)
    renders: dict[str, RenderCount] = {}
    as_read = None  # the frames as they are, when the stages see them turned upright
    if settings.aligned_input and settings.aligned_roll:
        clip.roll_deg, renders["roll"] = estimate_roll(clip.frames, generator, settings.roll)
        as_read = clip.frames
        stage_frames = RolledFrames(clip.frames, -clip.roll_deg)
        input_key += f":roll={json.dumps(asdict(settings.roll), sort_keys=True)}"

    pose_spec, editor = zoo.encoder_pose_editor(settings.pose_editor, settings.generator)  # spec None: StyleFlow's,
    # written below once its condition is known
    wanted = (generator.config.n_latent, generator.config.style_dim)
    directions = getattr(editor, "directions", None)
    if directions is not None and tuple(directions.shape[1:]) != wanted:
        raise ModelError(f"pose editor {pose_spec['model']!r} has directions for W+ {list(directions.shape[1:])}, "
                         f"but generator {settings.generator!r} has W+ {list(wanted)}")
    lpips_module = make_lpips(device)
    arcface = _official_network("arcface_ir_se50", device)
    models = EncoderModels(generator, editor, lpips_module, _identity_network(arcface, device),
                           encoder=inverter, pose_estimator=_pose_estimator(pose_spec and pose_spec["model"]))
    part1 = encode_part1(stage_frames, models, clip.masks, settings.part1, work_dir, input_key, progress, window)
    if part1.styleflow_condition is not None:
        pose_spec = styleflow_pose_spec(part1.styleflow_condition,
                                        zoo.DEFAULT_STYLEFLOW_EDITOR.get(settings.generator, "styleflow"))

    table = load_channel_table(zoo.WEIGHTS_DIR / CHANNEL_TABLES[settings.generator])
    table.check_layout(generator.layout)
    networks_installed = {name: zoo.location(name).is_file() for name in FACE_NETWORKS}
    key = stage_key(part1.key, "attributes", {"settings": asdict(settings.attributes), "table": table.indices,
                                              "networks": networks_installed})
    renders.update(part1.generator_renders)

    measured = {}  # once per run, when some window is computed: eq. 8's learning rates and eq. 9's networks

    def run_attributes(start: int, stop: int, carried: dict | None) -> dict:
        if not measured:
            measured["networks"] = _face_networks(arcface, device)
            # eq. 8 is measured on the ID latent, so under the ID frame's own region masks
            id_masks = {k: mask_rows(m, part1.id_frame, part1.id_frame + 1) for k, m in clip.masks.items()}
            measured["eta"] = video_learning_rates(generator, part1.id_latent.to(device), table, id_masks,
                                                   lpips_module, stop_at)
            renders["attributes"] = RenderCount(forwards=len(table.indices) * len(LEARNING_RATE_STEPS))
        yaw = torch.from_numpy(part1.yaw[start:stop]).float().to(device)
        pitch = torch.from_numpy(part1.pitch[start:stop]).float().to(device)
        with torch.no_grad():
            pose_latents = editor.edit(part1.id_latent.expand(stop - start, -1, -1).to(device), yaw, pitch)
        targets = inversion_targets(generator, part1.latents[start:stop].to(device), stop_at)
        state = None if carried is None else AttributeState.from_tensors(
            {name[len(CARRY_PREFIX):]: value for name, value in carried.items()}, device)
        track = encode_attributes(generator, pose_latents, targets, table.indices, table.regions,
                                  {k: mask_rows(m, start, stop) for k, m in clip.masks.items()}, lpips_module,
                                  stop_at, measured["eta"], clip.blink[start:stop], settings.attributes, bar,
                                  measured["networks"], state)
        # + the targets G(L_t)
        renders["attributes"] += track.renders + RenderCount(forwards=stop - start)
        return {"alpha": torch.from_numpy(track.alpha),
                **{CARRY_PREFIX + name: value for name, value in track.state.to_tensors().items()}}

    with frame_bar(progress, len(clip.frames), "attributes") as bar:
        alpha = resumable_stage(work_dir, "attributes", key, len(clip.frames), window, run_attributes,
                                bar.update)["alpha"].numpy()
    key = stage_key(key, "refine", asdict(settings.refine))

    def run_refinement():
        result = refine(generator, editor, part1.id_latent.to(device), part1.yaw, part1.pitch, alpha,
                        stage_frames if as_read is None else as_read, table.indices, table.channel_spread(),
                        settings.refine, progress, roll=None if as_read is None else clip.roll_deg)
        renders["refine"] = result.renders
        out = {"id_latent": result.id_latent, "yaw": torch.from_numpy(result.yaw),
               "pitch": torch.from_numpy(result.pitch), "alpha": torch.from_numpy(result.alpha)}
        return out if result.roll is None else {**out, "roll": torch.from_numpy(result.roll)}

    if settings.refine.rounds > 0:
        refined = cached_stage(work_dir, "refine", key, run_refinement)
        id_latent, yaw, pitch = refined["id_latent"], refined["yaw"].numpy(), refined["pitch"].numpy()
        alpha = refined["alpha"].numpy()
        if "roll" in refined:
            clip.roll_deg = refined["roll"].numpy()
    else:
        id_latent, yaw, pitch = part1.id_latent, part1.yaw, part1.pitch
    params = np.concatenate([alpha, yaw[:, None], pitch[:, None], clip.roll_deg[:, None]], axis=1)
    targets = stage_frames if as_read is None else as_read

    def render_with(latent_values: np.ndarray, values: np.ndarray) -> torch.Tensor:
        latent_tensor = torch.from_numpy(np.asarray(latent_values, np.float32)).to(device)
        return ClipRenderer(generator, editor, latent_tensor, table.indices, with_roll=as_read is not None)(values)

    with measured_stage("latent"):
        stored = _store_id_latent(id_latent, settings, render_with, targets, params)
    latent = torch.from_numpy(stored.decoded).to(device)
    renderer = ClipRenderer(generator, editor, latent, table.indices, with_roll=as_read is not None)
    with measured_stage("quantise"):
        sensitivity = parameter_sensitivity(ClipRenderer(generator, editor, latent, table.indices, with_roll=True),
                                            params, table.gammas, table.channel_spread())
        choice = choose_quantisation(renderer, targets, params, sensitivity, settings.quality,
                                     settings.max_loss_db, window)
    records, quant, saturation = choice.records, choice.table, choice.saturation
    log.info("quantised at quality %.1f: decoded PSNR %.2f dB from the exact parameters, loss %.4f dB",
             choice.quality, choice.loss.psnr_exact_db, choice.loss.loss_db)
    if saturation.total:
        log.warning("quantisation clipped %d values (%s)", saturation.total, saturation)
    extensions = [(EXT_POSE, json.dumps(pose_spec, sort_keys=True).encode())]
    if note:
        extensions.append((EXT_NOTE, note.encode()))
    extensions += clip.whole_picture + stored.extensions
    header = StvHeader(
        width=generator.config.size, height=generator.config.size,
        fps_num=info.fps.numerator, fps_den=info.fps.denominator,
        generator_name=settings.generator, generator_sha256=bytes.fromhex(zoo.generator_digest(settings.generator)),
        style_indices=tuple(table.indices), quant=quant,
        id_latent=stored.header_latent,
        frame_count=len(records), extensions=tuple(extensions),
    )
    interrupts.check()  # a Ctrl-C swallowed on the way (see codec.interrupts) publishes nothing
    with StvWriter(out, header, profile=settings.profile, groups=region_groups(table.regions)) as writer:
        writer.append(records)
    if work_dir is not None:  # the stream is written: no resume needs the crops (3 MB a frame at 1024²) any more
        for name in (ALIGNED_FILE, ALIGN_RESULT):
            (work_dir / name).unlink(missing_ok=True)
    n = len(records)
    size = generator.config.size
    resolution = {"roll": size, "invert": size, "id_select": size, "pose": stop_at, "attributes": stop_at,
                  "refine": min(settings.refine.resolution or size, size)}
    return EncodeReport(n, part1.id_frame, int(saturation.total), out.stat().st_size, renders, resolution,
                        choice.quality, choice.loss.psnr_exact_db, choice.loss.loss_db, stored.kind, stored.size,
                        stored.loss_db)


@dataclass(frozen=True)
class StoredLatent:
    kind: str  # "compact" or "exact"
    header_latent: np.ndarray  # float16: the header's field (1 x 1 zero under a compact latent)
    decoded: np.ndarray  # float32: the latent a decoder renders with
    extensions: list[tuple[bytes, bytes]]
    size: int  # bytes the latent takes in the header
    loss_db: float  # the clip's PSNR loss against the float32 latent (nan: not measured)


def _store_id_latent(id_latent: torch.Tensor, settings: EncodeSettings, render_with, targets: FrameSource,
                     params: np.ndarray) -> StoredLatent:
    """The ID latent as the stream will carry it: compact when asked for and the generator has a basis."""
    exact = _stored_id_latent(id_latent)
    if settings.latent == "compact":
        name = zoo.latent_basis_name(settings.generator)
        if name is None:
            log.info("no latent basis for generator %r: the ID latent is stored exact (float16)", settings.generator)
        else:
            basis, digest = zoo.load_latent_basis(name)
            latent = id_latent.detach().float().cpu().numpy()
            choice = choose_compact_latent(render_with, latent, targets, params, basis, digest,
                                           settings.latent_max_loss_db)
            data = encode_compact_latent(choice.compact, basis)
            log.info("compact ID latent: %d bytes, PSNR loss %.4f dB against the float32 latent", len(data),
                     choice.loss_db)
            # the header's own field holds a 1 x 1 zero latent: a 1.2 decoder refuses it (not the generator's
            # shape) instead of rendering a wrong face (format_spec.md §3 `idpc`)
            return StoredLatent("compact", np.zeros((1, 1), np.float16), choice.latent, [(EXT_COMPACT_LATENT, data)],
                                len(data), choice.loss_db)
    return StoredLatent("exact", exact, exact.astype(np.float32), [], len(compress(exact.astype("<f2").tobytes())),
                        float("nan"))


def region_groups(regions: list[str]) -> tuple[int, ...]:
    """The arith profile's parameter groups: runs of offsets of one facial region, then the 3 pose parameters."""
    runs: list[int] = []
    for k, region in enumerate(regions):
        if k and region == regions[k - 1]:
            runs[-1] += 1
        else:
            runs.append(1)
    return (*runs, 3)


def _stored_id_latent(id_latent: torch.Tensor) -> np.ndarray:
    """The ID latent as the header stores it (float16). A W+ latent of a trained generator is a few units; one
    that does not fit float16 means an inverter or refinement that went wrong (broken or mismatched weights)."""
    values = id_latent.detach().float().cpu().numpy()
    largest = float(np.abs(values).max()) if np.isfinite(values).all() else float("inf")
    if largest > float(np.finfo(np.float16).max):
        raise ModelError(f"the ID latent does not fit the stream's float16 (largest |value| {largest:.3g}; a "
                         "StyleGAN2 W+ latent is a few units): the inverter's or the refinement's output is not "
                         "usable; check the model files (`stv-weights list`)")
    return values.astype(np.float16)


def canonical_soft_masks(resolution: int) -> dict[str, torch.Tensor]:
    """The average aligned face's regions as soft [1, 1, r, r] masks (frames with no detectable face, e.g. the
    tiny generator's renders)."""
    return {k: resize_mask(torch.from_numpy(v), resolution) for k, v in canonical_masks(MASK_DRAW_SIZE).items()}


def within_window(settings: EncodeSettings, window: int) -> EncodeSettings:
    """The settings with every stage's batch of frames held to `window` frames (a batch is what a stage holds
    resident as floats; the batch sizes are part of the stages' cache keys, so a window that shrinks a batch
    changes the key, and one that does not leaves the results and the cache as they were)."""
    part1 = replace(settings.part1, project=replace(settings.part1.project,
                                                    batch_frames=min(settings.part1.project.batch_frames, window)))
    return replace(settings, part1=part1, refine=replace(settings.refine,
                                                         batch_frames=min(settings.refine.batch_frames, window)))


def _align(video: Path, settings: EncodeSettings, info, size: int, stop_at: int, folder: Path, device: str,
           progress: bool) -> AlignedClip:
    """Decode and align the clip's frames into a new store in `folder`, then make the whole picture's extensions
    from what the scene saw (its sampled source pictures are let go)."""
    start, stop = settings.frames
    store = AlignedFrames(Path(folder) / ALIGNED_FILE, size, device)
    expected = max(0, (info.frame_count if stop is None else min(stop, info.frame_count)) - start)
    scene = None if settings.aligned_input else SceneCollector(size, expected, video=_video_encoder(settings, info.fps))
    try:
        with measured_stage("align"):
            clip = _aligned_clip(video, store, stop_at, start, stop, settings.aligned_input, progress, scene)
    except BaseException:
        store.remove()  # a half-aligned clip is never read back
        raise
    clip.whole_picture, clip.scene = _whole_picture(scene, settings), None
    return clip


def _alignment_tensors(clip: AlignedClip) -> dict[str, torch.Tensor]:
    tensors = {"roll": torch.from_numpy(np.asarray(clip.roll_deg, np.float64)),
               "blink": torch.from_numpy(np.asarray(clip.blink, np.uint8))}
    tensors.update({MASK_PREFIX + name: mask.cpu() for name, mask in clip.masks.items()})
    for index, (tag, data) in enumerate(clip.whole_picture):
        name = f"{EXTENSION_PREFIX}{index}.{tag.decode('ascii')}"
        tensors[name] = torch.from_numpy(np.frombuffer(data, np.uint8).copy())
    return tensors


def _stored_alignment(work_dir: Path | None, key: str, size: int, device: str) -> AlignedClip | None:
    """The alignment an earlier run with the same input and settings left in the work dir, when its crops are all
    there; else None."""
    if work_dir is None:
        return None
    stored = read_keyed(work_dir / ALIGN_RESULT, key)
    crops = work_dir / ALIGNED_FILE
    if stored is None or not crops.is_file():
        return None
    count = len(stored["roll"])
    frames = AlignedFrames(crops, size, device, frames=count)
    if crops.stat().st_size != count * frames.frame_bytes:
        return None
    log.info("alignment: %d frames read back from %s", count, work_dir)
    extensions = sorted((int(name.split(".")[1]), name.split(".", 2)[2].encode("ascii"), value.numpy().tobytes())
                        for name, value in stored.items() if name.startswith(EXTENSION_PREFIX))
    return AlignedClip(frames, stored["roll"].numpy(),
                       stored["blink"].numpy().astype(bool),
                       {name[len(MASK_PREFIX):]: value for name, value in stored.items()
                        if name.startswith(MASK_PREFIX)},
                       whole_picture=[(tag, data) for _, tag, data in extensions])


def _whole_picture(scene: SceneCollector | None, settings: EncodeSettings) -> list[tuple[bytes, bytes]]:
    """The `plac` and (--background still) `bgnd` or (video) `bgvd` extensions: where each face goes back, over
    what."""
    placement = scene.placement() if scene is not None else None
    if placement is None:
        return []
    extensions = [(EXT_PLACEMENT, placement)]
    if settings.background == "still":
        with measured_stage("background"):
            extensions.append((EXT_BACKGROUND, scene.background(settings.background_quality)))
    elif settings.background == "video":
        with measured_stage("background"):
            extensions.append((EXT_BACKGROUND_VIDEO, scene.background_video()))
    return extensions


def _video_encoder(settings: EncodeSettings, fps) -> BackgroundVideoEncoder | None:
    """The background video's encoder (`--background video`): it sees each source frame as alignment reads it."""
    if settings.background != "video":
        return None
    return BackgroundVideoEncoder(fps, settings.background_kbits)


def _aligned_clip(video: Path, store: AlignedFrames, stop_at: int, start: int, stop: int | None,
                  aligned_input: bool, progress: bool, scene: SceneCollector | None = None) -> AlignedClip:
    """Frames [start, stop) of `video`, decoded and aligned one at a time into `store` (uint8), with each frame's
    roll, blink and region masks (small: at the encoder's `stop_at` resolution); `scene` sees each source picture
    with its crop (placement, background samples)."""
    frames = read_frames(video, start, stop)
    if aligned_input:
        for frame in tqdm(frames, desc="read", unit="frame", disable=not progress):
            store.append(_resize(frame, store.size))
        n = len(store.finish())
        return AlignedClip(store, np.zeros(n), np.zeros(n, bool), canonical_soft_masks(stop_at))
    scale = MASK_DRAW_SIZE / store.size
    roll, blink, masks = [], [], {}
    for source, a in tqdm(align_video_with_sources(frames, output_size=store.size), desc="align", unit="frame",
                          disable=not progress):
        if scene is not None:
            scene.add(source, a.crop_transform, a.roll_deg)
        store.append(a.image)
        roll.append(a.roll_deg)
        blink.append(a.blink)
        drawn = region_masks(a.landmarks_aligned * scale, MASK_DRAW_SIZE, pupil_centres=a.pupils_aligned * scale)
        for region, mask in drawn.items():
            masks.setdefault(region, []).append(resize_mask(torch.from_numpy(mask), stop_at))
    store.finish()
    return AlignedClip(store, np.array(roll), np.array(blink, dtype=bool),
                       {region: torch.cat(per_frame) for region, per_frame in masks.items()}, scene)


def _resize(frame: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if frame.shape[0] == size and frame.shape[1] == size:
        return frame
    if frame.shape[0] != frame.shape[1]:
        raise InputError(f"--aligned input must be square frames, got {frame.shape[1]}x{frame.shape[0]}")
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)


def _official_network(name: str, device: str) -> torch.nn.Module | None:
    """Model `name` of FACE_NETWORKS from its official weights, or None when they are not installed."""
    from codec.models.arcface import load_arcface
    from codec.models.bisenet import load_bisenet

    load = {"arcface_ir_se50": load_arcface, "bisenet_face_parsing": load_bisenet}[name]
    try:
        return load(zoo.path(name)).to(device)
    except ModelError:
        return None


def _identity_network(arcface: torch.nn.Module | None, device: str) -> torch.nn.Module:
    """ID selection's metric: the official ArcFace, else a seeded stand-in (ranking frames needs some metric)."""
    from codec.models.arcface import seeded_standin

    if arcface is not None:
        return arcface
    log.warning("ArcFace weights not installed: ID selection uses a seeded stand-in network "
                "(`stv-weights fetch arcface_ir_se50` for the real metric)")
    return seeded_standin(0).to(device)


def _face_networks(arcface: torch.nn.Module | None, device: str) -> FaceNetworks:
    """eq. 9's identity and face-parsing networks, each only when its official weights are installed: a seeded
    stand-in would pull the offsets towards noise."""
    networks = FaceNetworks(identity=arcface, parsing=_official_network("bisenet_face_parsing", device))
    if networks.identity is None and networks.parsing is None:
        log.info("identity and face-parsing terms of eq. 9 off: their official weights are not installed")
    return networks


def _inverter(settings: EncodeSettings, device: str):
    if settings.part1.inverter in ("e4e", "project"):
        try:
            return zoo.load_inverter(settings.generator, device)
        except ModelError:
            if settings.part1.inverter == "e4e":
                raise
            return None  # the projector starts from the mean latent instead
    raise InputError(f"unknown inverter {settings.part1.inverter!r}")


def _pose_estimator(pose_model: str | None):
    """The estimator the pose editor's directions were fitted with (its units are the stream's); None for
    StyleFlow and for published direction files (their units are not an estimator's)."""
    from safetensors import safe_open

    if not pose_model or pose_model in zoo.LINEAR_DIRECTION_PAIRS:
        return None
    try:
        with safe_open(str(zoo.path(pose_model)), framework="pt") as f:
            how = json.loads((f.metadata() or {}).get("stv", "{}"))
    except ModelError:
        return None
    return ESTIMATORS.get(how.get("estimator"))

