"""stv-eval: fidelity of a decoded video against its reference (L1, PSNR, SSIM, LPIPS, identity)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
from tqdm.auto import tqdm

from codec.cli.common import check_input_file, clean_errors
from codec.errors import InputError
from codec.decoder.decode import resolve_device
from codec.eval.metrics import Evaluator, paired_batches
from codec.preprocess.video import probe, read_frames

PROG = "stv-eval"
HIGHER_IS_BETTER = {"l1": False, "psnr": True, "ssim": True, "lpips": False, "identity_similarity": True,
                    "identity_distance_dlib": False}


def report_json(result, counts: list[int]) -> dict:
    out: dict = {name: None for name in result.skipped}  # a stable shape: skipped metrics are null
    out.update(result.means)
    out.update(frames=result.frames, reference_frames=counts[0], test_frames=counts[1],
               skipped=result.skipped, notes=result.notes)
    return out


def report_text(result, counts: list[int], per_frame: bool) -> list[str]:
    names = list(result.per_frame)
    lines = []
    if per_frame:
        lines.append("frame " + " ".join(f"{n:>12}" for n in names))
        for k in range(result.frames):
            lines.append(f"{k:5d} " + " ".join(f"{result.per_frame[n][k]:12.6f}" for n in names))
    lines.append(f"frames compared: {result.frames} (reference {counts[0]}, test {counts[1]})")
    for name, value in result.means.items():
        lines.append(f"{name:>22}: {value:.6f}  ({'higher' if HIGHER_IS_BETTER[name] else 'lower'} is better)")
    lines += [f"{name:>22}: {note}" for name, note in result.notes.items()]
    lines += [f"{name:>22}: skipped: {why}" for name, why in result.skipped.items()]
    return lines


def region_masks(stream: Path | None, region: str):
    """frame index, (height, width) -> the bool mask of `region` in that frame, from the stream's placement and
    roll; InputError when there is no stream or it has no usable placement."""
    from codec.bitstream import StvReader
    from codec.bitstream.schema import PARAM_NAMES
    from codec.errors import BitstreamError
    from codec.preprocess.background import face_region

    if stream is None:
        raise InputError(f"--region {region} needs --stream FILE.stv (the placement of each frame's face)")
    check_input_file(stream)
    reader = StvReader(stream)
    try:
        placement = reader.header.placement
    except BitstreamError as exc:
        raise InputError(f"{stream}: {exc}") from None
    if placement is None:
        raise InputError(f"{stream}: no placement ('plac', format 1.2): it was encoded without the whole frame")
    rolls = reader.values()[:, PARAM_NAMES.index("roll")]

    def mask(index: int, shape: tuple[int, int]) -> np.ndarray:
        if (shape[1], shape[0]) != (placement.width, placement.height):
            raise InputError(f"the videos are {shape[1]}x{shape[0]}, but {stream} places faces in "
                             f"{placement.width}x{placement.height} pictures")
        if index >= len(placement) or index >= len(rolls) or np.isnan(placement.side[index]):
            return np.zeros(shape, bool)  # no face placed: the frame is left out of the region's figures
        face = face_region(placement.centre[index], placement.side[index], float(rolls[index]), shape)
        return face if region == "face" else ~face

    return mask


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("ref", metavar="REF", type=click.Path(path_type=Path))
@click.argument("test", metavar="TEST", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: the mean of each metric, "
              "frame counts, skipped metrics with reasons, notes.")
@click.option("--per-frame", is_flag=True, help="Also list every frame's metrics (text output).")
@click.option("--no-lpips", is_flag=True, help="Skip LPIPS.")
@click.option("--no-identity", is_flag=True, help="Skip the identity measures (ArcFace and dlib).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N (LPIPS, ArcFace).")
@click.option("--batch", default=8, show_default=True, type=click.IntRange(1, 1024), help="Frames per batch.")
@click.option("--region", type=click.Choice(["all", "face", "background"]), default="all", show_default=True,
              help="Compare only the face (each frame's face ellipse, placed as the stream says) or only the rest "
                   "(L1, PSNR, SSIM); needs --stream.")
@click.option("--stream", "stream", type=click.Path(path_type=Path), default=None,
              help="The .stv whose placement ('plac', format 1.2) gives each frame's face region.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@clean_errors(PROG)
def main(ref: Path, test: Path, as_json: bool, per_frame: bool, no_lpips: bool, no_identity: bool, device: str,
         batch: int, region: str, stream: Path | None, quiet: bool) -> None:
    """Compare TEST (e.g. stvdec's output) with REF frame by frame: L1 and PSNR over RGB values, SSIM, LPIPS,
    identity similarity (ArcFace, when its official weights are installed) and the distance of dlib's face
    descriptors (offline; frames without a detectable face are left out), per frame and mean.

    Both videos must have the same frame size; frames are paired in order up to the shorter video (the counts
    are reported). FID and FVD are listed as skipped: their networks' weights are not available offline."""
    check_input_file(ref)
    check_input_file(test)
    total = min(probe(ref).frame_count, probe(test).frame_count)
    regions = None if region == "all" else region_masks(stream, region)
    evaluator = Evaluator(resolve_device(device), lpips=not no_lpips, identity=not no_identity,
                          dlib_identity=not no_identity, region=regions, region_name=region)
    counts: list[int] = []
    with tqdm(total=total, unit="frame", desc=PROG, disable=quiet or as_json) as bar:
        for refs, tests in paired_batches(read_frames(ref), read_frames(test), batch, counts):
            evaluator.add(refs, tests)
            bar.update(len(refs))
    result = evaluator.finish()
    if counts[0] != counts[1]:
        click.echo(f"{PROG}: warning: reference has {counts[0]} frames, test {counts[1]}: compared the first "
                   f"{result.frames}", err=True)
    if as_json:
        click.echo(json.dumps(report_json(result, counts)))
    else:
        click.echo("\n".join(report_text(result, counts, per_frame)))


if __name__ == "__main__":
    main()
