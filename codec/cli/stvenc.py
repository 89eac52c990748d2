"""stvenc IN OUT: encode a talking-head video into a .stv stream (one W+ latent + 35 numbers per frame)."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import click

from codec.bitstream.background_video import DEFAULT_KBITS
from codec.cli.common import check_input_file, check_output, clean_errors, prepare_kernel
from codec.encoder.encode import LATENT_FORMS, EncodeSettings
from codec.errors import InputError

DEFAULTS = EncodeSettings()


def _frame_range(text: str | None) -> tuple[int, int | None]:
    if not text:
        return 0, None
    first, _, last = text.partition(":")
    try:
        start = int(first) if first else 0
        stop = int(last) if last else None
    except ValueError:
        raise click.BadParameter(f"expected A:B frame indices, got {text!r}") from None
    if start < 0 or (stop is not None and stop <= start):
        raise click.BadParameter(f"empty or negative frame range {text!r}")
    return start, stop


def parse_background(text: str) -> tuple[str, int]:
    """'still', 'none', 'video' or 'video:KBITS' -> (mode, kbit/s of the video); ValueError saying what is wrong."""
    mode, colon, rate = text.partition(":")
    if mode not in ("still", "video", "none") or (colon and mode != "video"):
        raise ValueError(f"{text!r} is not still, video[:KBITS] or none")
    if not colon:
        return mode, DEFAULT_KBITS
    if not rate.isdigit() or not 1 <= int(rate) <= 100_000:
        raise ValueError(f"video rate {rate!r} is not a whole number of kbit/s from 1 to 100000")
    return mode, int(rate)


class BackgroundChoice(click.ParamType):
    """--background's value, checked when parsed (kept as the text given: stv-batch records options as given)."""

    name = "background"

    def convert(self, value, param, ctx):
        try:
            parse_background(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return value


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("video", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--model", "generator", default="tiny", show_default=True,
              help="generator from the model registry (`stv-weights list`): 'tiny' ships here; "
                   "'stylegan2-ffhq-config-f' after `stv-weights fetch`")
@click.option("--device", default="auto", show_default=True, help="auto (cuda when available), cpu or cuda")
@click.option("--frames", "frame_range", default=None, metavar="A:B", help="encode frames A (inclusive) to B")
@click.option("--profile", type=click.Choice(["raw", "entropy", "arith"]), default=DEFAULTS.profile,
              show_default=True,
              help="arith: context-adaptive rANS chunks (format 1.3; fewest bytes: about 5-10 a frame at the "
                   "default quality); entropy: delta + zstd chunks; raw: 70-byte records (chunk profile 0, "
                   "which every reader knows). All decode to the same values")
@click.option("--quality", type=click.FloatRange(0, 100), default=DEFAULTS.quality, show_default=True,
              help="0..100: each parameter's quantiser step follows how much the picture moves with it; the "
                   "quantisation noise is a tenth of the clip's own re-synthesis error at 50 (about 0.043 dB of "
                   "decoded PSNR, measured and corrected once), halved every +10 (0.011 dB at 60, 0.17 dB at 30)")
@click.option("--max-loss-db", "max_loss_db", type=float, default=None, metavar="D",
              help="raise the quality until the measured decoded-PSNR loss against the unquantised parameters is "
                   "at most D dB (starting from the quality the noise model predicts for D)")
@click.option("--latent", type=click.Choice(list(LATENT_FORMS)), default=DEFAULTS.latent, show_default=True,
              help="the ID latent: compact (format 1.3: coefficients in the generator's shipped PCA basis of W, "
                   "within 0.02 dB of the exact picture; a generator without a basis falls back to exact) or exact "
                   "(float16, readable by every decoder)")
@click.option("--pose-editor", "pose_editor", default=None, metavar="styleflow|linear[:NAME]",
              help="head-pose editor: styleflow (the paper's; needs `stv-weights fetch styleflow`), or linear "
                   "directions in W+: 'linear' alone is the generator's own (tiny: tiny-pose; config-f: "
                   "ffhq-pose-interfacegan, the published InterFaceGAN yaw + angle_pitch pair). "
                   "[default: config-f: styleflow; tiny: linear]")
@click.option("--inverter", type=click.Choice(["e4e", "project"]), default=DEFAULTS.part1.inverter,
              show_default=True, help="e4e: encoder only; project: encoder answer refined by LPIPS+L2 optimisation")
@click.option("--project-steps", default=DEFAULTS.part1.project.steps, show_default=True,
              help="projector steps per frame (with --inverter project)")
@click.option("--pose-steps", default=DEFAULTS.part1.pose.steps, show_default=True,
              help="head-pose optimisation steps per frame (eq. 2)")
@click.option("--attribute-steps", default=DEFAULTS.attributes.steps, show_default=True,
              help="Algorithm 1 steps per frame")
@click.option("--refine-rounds", type=click.IntRange(min=0), default=DEFAULTS.refine.rounds, show_default=True,
              help="joint refinement of the ID latent and every frame's 34 numbers against the frames themselves "
                   "(ours, after the paper's stages; 0: the paper's stages alone, e.g. with --inverter project "
                   "--pose-steps 40 --attribute-steps 30)")
@click.option("--aligned", is_flag=True,
              help="input frames are already aligned square face crops (e.g. rendered by the generator): "
                   "skip face detection and alignment, roll 0")
@click.option("--aligned-roll", is_flag=True,
              help="with --aligned: the crops may be rotated in the picture; estimate each frame's roll by "
                   "registration (no landmarks needed), undo it for the stages, fit it in the refinement and store it")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="cache each stage here; a re-run with the same input and settings resumes from it (inversion, "
                   "head pose and attributes from the window they were in). The aligned crops (3 MB a frame at "
                   "1024²) stay here until the stream is written")
@click.option("--window", type=click.IntRange(min=1), default=None, metavar="N",
              help="frames each stage holds in memory (as floats) at a time; the aligned crops wait in a uint8 "
                   "file in --work-dir (else the temporary dir), so memory does not grow with the clip. "
                   "[default: as many as an eighth of the free memory of the device holds, at most 64; "
                   "below a stage's batch (8 frames) the results change slightly]")
@click.option("--background", type=BackgroundChoice(), default="still", show_default=True,
              metavar="still|video[:KBITS]|none",
              help="full frames: besides each face's place in the picture (always stored, format 1.2), store the "
                   "scene behind the faces as one still picture (WebP; the median of a few frames with the faces "
                   "taken out), which stvdec pastes the faces over; video: instead, the whole frames as a "
                   f"low-rate AV1 video (format 1.3; KBITS kbit/s, default {DEFAULT_KBITS}), so the body and hands "
                   "move; none: black behind them")
@click.option("--background-quality", type=click.IntRange(0, 100), default=80, show_default=True,
              help="the still picture's quality (WebP, 0-100)")
@click.option("-y", "overwrite", is_flag=True, help="overwrite OUT if it exists")
@click.option("-q", "--quiet", is_flag=True, help="no progress bars")
@click.option("-v", "--verbose", is_flag=True,
              help="say what each stage did: its time and peak memory (RSS) as it ends")
@clean_errors("stvenc")
def main(**options) -> None:
    """Encode VIDEO (mp4/mov/mkv/webm/y4m) into the .stv stream OUT."""
    encode(options, note="stvenc " + " ".join(shlex.quote(a) for a in sys.argv[1:]))


def encode(options: dict, note: str):
    """stvenc's work for its parsed options (`main.make_context("stvenc", args).params`), the stream's `note`
    given: what `stv-batch` runs for each clip, so its outputs are stvenc's byte for byte. Returns the report."""
    import torch

    from codec.encoder.attributes import AttributeSettings
    from codec.encoder.encode import encode_video
    from codec.encoder.head_pose import PoseSettings
    from codec.encoder.invert import ProjectSettings
    from codec.encoder.pipeline import Part1Settings
    from codec.encoder.refine import RefineSettings
    from codec import zoo
    from codec.preprocess.video import probe

    (video, out, generator, device, frame_range, profile, quality, max_loss_db, latent, pose_editor, inverter,
     project_steps, pose_steps, attribute_steps, refine_rounds, aligned, aligned_roll, work_dir, window, background,
     background_quality, overwrite, quiet, verbose) = (
        options[k] for k in ("video", "out", "generator", "device", "frame_range", "profile", "quality",
                             "max_loss_db", "latent", "pose_editor", "inverter", "project_steps", "pose_steps",
                             "attribute_steps", "refine_rounds", "aligned", "aligned_roll", "work_dir", "window",
                             "background", "background_quality", "overwrite", "quiet", "verbose"))
    logging.basicConfig(level=logging.ERROR if quiet else logging.WARNING, format="stvenc: %(message)s")
    if verbose:
        logging.getLogger("codec.encoder").setLevel(logging.INFO)
    if aligned_roll and not aligned:
        raise click.UsageError("--aligned-roll applies to --aligned input only (full frames get roll from landmarks)")
    if max_loss_db is not None and not max_loss_db > 0:
        raise InputError(f"--max-loss-db must be a positive number of dB, got {max_loss_db:g}")
    check_input_file(video)
    check_output(out, overwrite)
    zoo.pose_editor_spec(pose_editor, generator)  # a bad editor name is refused before any work
    probe(video)  # an unreadable video is refused before the models load and the kernel builds
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    background, background_kbits = parse_background(background)
    settings = EncodeSettings(
        generator=generator, pose_editor=pose_editor, frames=_frame_range(frame_range), aligned_input=aligned,
        aligned_roll=aligned_roll, profile=profile, quality=quality, max_loss_db=max_loss_db, latent=latent,
        background=background, background_quality=background_quality, background_kbits=background_kbits,
        part1=Part1Settings(inverter=inverter, project=ProjectSettings(steps=project_steps),
                            pose=PoseSettings(steps=pose_steps)),
        attributes=AttributeSettings(steps=attribute_steps),
        refine=RefineSettings(rounds=refine_rounds),
    )
    prepare_kernel("stvenc", device, quiet)
    report = encode_video(video, out, settings, device=device, work_dir=work_dir, progress=not quiet, note=note,
                          window=window)
    if not quiet:
        click.echo(f"{out}: {report.frames} frames, ID latent from frame {report.id_frame}, "
                   f"{report.bytes_written} bytes, {report.saturated_values} saturated values, quality "
                   f"{report.quality:g}: decoded PSNR loss {report.psnr_loss_db:.4f} dB against the unquantised "
                   f"parameters ({report.psnr_exact_db:.2f} dB from them); ID latent {report.latent}, "
                   f"{report.id_latent_bytes} bytes"
                   + (f", {report.latent_loss_db:.4f} dB" if report.latent == "compact" else ""))
    return report
