"""stv-batch encode INPUTS... OUT_DIR [-- STVENC OPTIONS]: encode many clips, several at once, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import click
from tqdm.auto import tqdm

from codec.cli.common import clean_errors
from codec.errors import InputError

PROG = "stv-batch"


class _StvencTail(click.Command):
    """Everything after `--` is stvenc's options, handed over untouched (click would otherwise read them)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            split = args.index("--")
            ctx.meta["stvenc_options"] = args[split + 1 :]
            args = args[:split]
        return super().parse_args(ctx, args)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Encode a corpus of talking-head videos with stvenc."""


@main.command(cls=_StvencTail)
@click.argument("paths", nargs=-1, required=True, metavar="INPUTS... OUT_DIR")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: processes on this machine; ray: Ray tasks (pip install 'stv[ray]'), on a local Ray "
                   "started here or on the cluster at --address")
@click.option("--address", default=None, help="a Ray cluster to join (e.g. ray://head:10001 or auto); the inputs "
                                              "and OUT_DIR must be on storage every node sees")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 256),
              help="clips encoded at once (each in its own process; with Ray: the CPUs of the local Ray)")
@click.option("--gpus-per-job", default=0.0, show_default=True, type=click.FloatRange(0.0, 64.0),
              help="GPUs each Ray task asks for (0.25: four clips share a GPU)")
@click.option("--resume", is_flag=True,
              help="skip clips whose output exists, reads without damage, and was made from the same input bytes "
                   "with the same options (recorded in OUT_DIR/.stv-batch)")
@click.option("--retries", default=2, show_default=True, type=click.IntRange(0, 100),
              help="new attempts for a clip whose worker died (killed, out of memory); a clip that fails cleanly "
                   "(no face, unreadable) is not retried")
@click.option("--plot", "plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="histograms of bytes per frame and seconds per frame (PNG)")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
@click.pass_context
@clean_errors(PROG)
def encode(ctx: click.Context, paths: tuple[str, ...], engine: str, address: str | None, jobs: int,
           gpus_per_job: float, resume: bool, retries: int, plot: Path | None, quiet: bool) -> None:
    """Encode INPUTS (video files, folders of them, or .txt/.csv lists: a path and optionally A:B frames per
    line; CSV columns input,frames) into OUT_DIR/NAME.stv, one stvenc job per clip. Options after `--` go to
    stvenc as they are (e.g. `-- --frames 0:8 --model tiny`); each output is what `stvenc IN OUT OPTIONS` writes.
    One bad clip fails alone with its reason; OUT_DIR/report.json lists every clip and the totals. Exit status 1
    if any clip failed."""
    from codec.batch import expand_inputs, run_batch

    if len(paths) < 2:
        raise click.UsageError("give at least one input and the output folder")
    *inputs, out_dir = paths
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    options = list(ctx.meta.get("stvenc_options", []))
    clips = expand_inputs(inputs, out_dir)
    with tqdm(total=len(clips), unit="clip", desc=PROG, disable=quiet) as bar:
        def done(result):
            if result.status == "failed":
                tqdm.write(f"{PROG}: {result.input}: failed: {result.error}")
            bar.update(1)

        report = run_batch(clips, options, jobs=jobs, resume=resume, retries=retries, on_done=done, engine=engine,
                           address=address, gpus_per_job=gpus_per_job)
    (out_dir / "report.json").write_text(json.dumps(report.to_json(), indent=1))
    if plot is not None:
        _plot(report, plot)
    totals = report.totals
    if not quiet:
        click.echo(f"{totals['ok']} encoded, {totals['skipped']} skipped, {totals['failed']} failed; "
                   f"report: {out_dir / 'report.json'}")
    if totals["failed"]:
        raise SystemExit(1)


def _plot(report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [c for c in report.clips if c.status == "ok" and c.frames]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.hist([c.bytes / c.frames for c in done], bins=20)
    left.set_xlabel("bytes per frame (whole file)")
    right.hist([c.seconds / c.frames for c in done], bins=20)
    right.set_xlabel("seconds per frame")
    for axis in (left, right):
        axis.set_ylabel("clips")
    figure.suptitle(f"stv-batch: {len(done)} clips")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
