"""stv-eval: fidelity of a decoded video against its reference (L1, PSNR, SSIM, LPIPS, identity)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from tqdm.auto import tqdm

from codec.cli.common import check_input_file, clean_errors
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
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@clean_errors(PROG)
def main(ref: Path, test: Path, as_json: bool, per_frame: bool, no_lpips: bool, no_identity: bool, device: str,
         batch: int, quiet: bool) -> None:
    """Compare TEST (e.g. stvdec's output) with REF frame by frame: L1 and PSNR over RGB values, SSIM, LPIPS,
    identity similarity (ArcFace, when its official weights are installed) and the distance of dlib's face
    descriptors (offline; frames without a detectable face are left out), per frame and mean.

    Both videos must have the same frame size; frames are paired in order up to the shorter video (the counts
    are reported). FID and FVD are listed as skipped: their networks' weights are not available offline."""
    check_input_file(ref)
    check_input_file(test)
    total = min(probe(ref).frame_count, probe(test).frame_count)
    evaluator = Evaluator(resolve_device(device), lpips=not no_lpips, identity=not no_identity,
                          dlib_identity=not no_identity)
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
