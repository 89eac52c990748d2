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
    """Show every known model: where it lives, whether it is installed and verified, and which command needs it.

    Files that `install`/`fetch` placed are not hashed again unless their size, time or inode changed."""
    from codec import zoo

    models = zoo.manifest()
    width = max(len(e.role) for e in models.values())
    for name, e in models.items():
        state, check = zoo.status(name)
        click.echo(f"{name:26s} {e.role:{width}s} {state:9s} {check}")
        click.echo(f"{'':26s} file: {zoo.location(name)}")
        for use in e.used_by:
            click.echo(f"{'':26s} needed by {use}")
        if not e.used_by:
            click.echo(f"{'':26s} needed by no stv command")
        click.echo(f"{'':26s} licence: {e.licence}")


@main.command()
@click.argument("name")
@click.option("--allow-unverified", is_flag=True, help="Download models whose sha256 is not published.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@clean_errors(PROG)
def fetch(name: str, allow_unverified: bool, quiet: bool) -> None:
    """Download model NAME (or 'all') into the cache; an interrupted download resumes on the next run.

    Files that no script can download (Google Drive) are listed with where to get them and the
    `stv-weights install` command that registers the downloaded file."""
    from codec import zoo

    names = list(zoo.manifest()) if name == "all" else [name]
    failures, by_hand = [], []
    for n in names:
        try:
            click.echo(f"{n}: {zoo.fetch(n, allow_unverified, _progress(quiet))}")
        except zoo.ManualDownload as exc:
            if name != "all":
                raise
            by_hand.append(exc)
        except ModelError as exc:
            if name != "all":
                raise
            failures.append(f"{n}: {exc}")
    for line in failures:
        click.echo(f"{PROG}: skipped {line}", err=True)
    if by_hand:
        click.echo("To download by hand (no script can), then register with the command below it:")
        for exc in by_hand:
            click.echo(f"  {exc.name}: {exc.url}\n    {exc.command}")


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("name")
@click.option("--allow-unverified", is_flag=True, help="Install a file whose digest is not published, unchecked.")
@clean_errors(PROG)
def install(path: Path, name: str, allow_unverified: bool) -> None:
    """Register PATH, a file you already have (e.g. downloaded from Google Drive), as model NAME.

    Checks its size and digest against weights/manifest.json and that it loads without running code, then
    hard-links it (same filesystem) or copies it into $STV_HOME/weights atomically. A file that fails any
    check changes nothing there."""
    from codec import zoo

    zoo.entry(name)
    check_input_file(path)
    dest, how = zoo.install(name, path, allow_unverified)
    click.echo(f"{name}: {dest} ({how})")


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output .safetensors (default: the cache file of stylegan2-ffhq-config-f).")
@click.option("--kind", type=click.Choice(["auto", "checkpoint", "nvidia"]), default="auto",
              help="Input format: a torch checkpoint (.pt: e4e/pSp with 'decoder.' keys, or rosinality's "
                   "{'g_ema', 'latent_avg'}) or an NVIDIA stylegan2-ada pickle (.pkl).")
@click.option("-y", "overwrite", is_flag=True, help="Overwrite the output.")
@clean_errors(PROG)
def convert(source: Path, output: Path | None, kind: str, overwrite: bool) -> None:
    """Convert an official generator checkpoint to stv's safetensors format.

    NVIDIA pickles are read with a restricted unpickler (no code from the file runs); torch checkpoints with
    torch.load(weights_only=True). The output depends only on the weights, not on the source's layout, so
    its sha256 (printed: the generator digest .stv files store) is the same from e4e's decoder, rosinality's
    .pt or the NGC pickle.
    """
    from codec import zoo

    check_input_file(source)
    if output is None:
        output = zoo.location("stylegan2-ffhq-config-f")
        output.parent.mkdir(parents=True, exist_ok=True)
    check_output(output, overwrite)
    with atomic_output(output) as tmp:
        g, layout = zoo.convert_generator(source, tmp, kind)
    click.echo(f"{output}  sha256 {zoo.sha256_of(output)}  ({layout} layout, {g.size}x{g.size}, "
               f"StyleSpace {g.layout.total})")


if __name__ == "__main__":
    main()
