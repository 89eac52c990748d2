"""stv-weights: list, fetch and convert the models stv uses (see weights/manifest.json)."""

from __future__ import annotations

from pathlib import Path

import click

from codec.cli.common import atomic_output, check_input_file, check_output, clean_errors
from codec.errors import ModelError

PROG = "stv-weights"


def _progress(quiet: bool):
    if quiet:
        return None
    from tqdm import tqdm

    def factory(total: int | None, initial: int):
        return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, leave=False)

    return factory


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Manage stv's model weights.

    Files go to $STV_HOME/weights (default ~/.cache/stv/weights); the tiny generator ships in weights/.
    Every download is resumable and checked against the sha256 in weights/manifest.json.
    """


@main.command("list")
@clean_errors(PROG)
def list_models() -> None:
    """Show every known model, where it lives, and whether it is present."""
    from codec import zoo

    for name, e in zoo.manifest().items():
        where = zoo.location(name)
        state = "pip" if e.pip else ("present" if where.exists() else "missing")
        digest = e.sha256[:12] if e.sha256 else ("prefix " + e.sha256_prefix if e.sha256_prefix else "unverified")
        click.echo(f"{name:26s} {e.role:24s} {state:8s} {digest:20s} {where}")
        click.echo(f"{'':26s} licence: {e.licence}")


@main.command()
@click.argument("name")
@click.option("--allow-unverified", is_flag=True, help="Download models whose sha256 is not published.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@clean_errors(PROG)
def fetch(name: str, allow_unverified: bool, quiet: bool) -> None:
    """Download model NAME (or 'all') into the cache; an interrupted download resumes on the next run."""
    from codec import zoo

    names = list(zoo.manifest()) if name == "all" else [name]
    failures = []
    for n in names:
        try:
            click.echo(f"{n}: {zoo.fetch(n, allow_unverified, _progress(quiet))}")
        except ModelError as exc:
            if name != "all":
                raise
            failures.append(f"{n}: {exc}")
    for line in failures:
        click.echo(f"{PROG}: skipped {line}", err=True)


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output .safetensors (default: the cache file of stylegan2-ffhq-config-f).")
@click.option("--kind", type=click.Choice(["auto", "e4e", "nvidia"]), default="auto",
              help="Input format: an e4e/pSp checkpoint (.pt) or an NVIDIA stylegan2-ada pickle (.pkl).")
@click.option("-y", "overwrite", is_flag=True, help="Overwrite the output.")
@clean_errors(PROG)
def convert(source: Path, output: Path | None, kind: str, overwrite: bool) -> None:
    """Convert an official generator checkpoint to stv's safetensors format.

    NVIDIA pickles are read with a restricted unpickler (no code from the file runs); e4e checkpoints with
    torch.load(weights_only=True). Prints the sha256 of the result: the generator digest .stv files store.
    """
    from codec import zoo

    check_input_file(source)
    if kind == "auto":
        kind = "nvidia" if source.suffix == ".pkl" else "e4e"
    if output is None:
        output = zoo.location("stylegan2-ffhq-config-f")
        output.parent.mkdir(parents=True, exist_ok=True)
    check_output(output, overwrite)
    g = zoo.generator_from_nvidia_pickle(source) if kind == "nvidia" else zoo.generator_from_e4e(source)
    with atomic_output(output) as tmp:
        zoo.save_generator(g, tmp, {"converted_from": source.name, "kind": kind})
    click.echo(f"{output}  sha256 {zoo.sha256_of(output)}  ({g.size}x{g.size}, StyleSpace {g.layout.total})")


if __name__ == "__main__":
    main()
