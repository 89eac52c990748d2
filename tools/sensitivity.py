#!/usr/bin/env python3
"""Index sensitivity analysis (paper eq. 5): choose a generator's 32 StyleSpace channels and write the table.

    python tools/sensitivity.py --generator tiny --out weights/tiny-64-channels.json

Two stages (codec/encoder/sensitivity.py): every non-toRGB channel of the generator is screened on a few seeded
identities by its pixel change inside each region versus outside it; the shortlist (3x the channels wanted) is
then scored with eq. 5 (masked LPIPS per unit offset) and the most region-specific channels are kept:
20 mouth/jaw, 10 eyes/brows, 2 pupils. Regions are those of the average FFHQ-aligned face
(codec.preprocess.masks.canonical_masks), which for a well-aligned generator (FFHQ config-f, or the untrained
tiny model whose "face" is defined by those masks) is where its faces are. Offsets are in units of each
channel's standard deviation over generated faces. The last line printed is the table's summary as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
import torch
from tqdm.auto import tqdm

from codec import zoo
from codec.cli.common import atomic_output, clean_errors, refuse_overwrite
from codec.encoder.losses import backbone_available, make_lpips
from codec.encoder.sensitivity import SensitivitySettings, analyse, save_channel_table, table_from_choices
from codec.errors import StvError
from codec.preprocess.masks import canonical_masks


@click.command()
@click.option("--generator", "generator_name", default="tiny", show_default=True, help="zoo generator name")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="channel table to write (JSON)")
@click.option("--identities", default=3, show_default=True, help="seeded identities to score on")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--batch", "batch_images", default=64, show_default=True, help="renders per generator forward")
@click.option("-y", "overwrite", is_flag=True, help="overwrite OUT")
@click.option("--quiet", is_flag=True, help="no progress bars")
@clean_errors("sensitivity")
def main(generator_name: str, out_path: Path, identities: int, seed: int, device: str, batch_images: int,
         overwrite: bool, quiet: bool) -> None:
    """Choose the generator's 32 StyleSpace channels (20 mouth/jaw, 10 eyes/brows, 2 pupils) by index
    sensitivity (paper eq. 5) on seeded identities, and write them as a channel table (JSON) to OUT.

    Stage 1 screens every non-toRGB channel by pixel change inside vs outside each region; stage 2 scores the
    shortlist with masked LPIPS per unit offset. Offsets are in units of each channel's standard deviation.
    The tiny model takes a few minutes on 2 CPU cores; use --device cuda for config-f 1024."""
    refuse_overwrite(out_path, overwrite)
    if identities < 1 or batch_images < 1:
        raise StvError("--identities and --batch must be at least 1")
    torch.manual_seed(seed)
    generator = zoo.load_generator(generator_name, device=device)
    lpips_module = make_lpips(device)
    settings = SensitivitySettings(identities=identities, seed=seed, batch_images=batch_images)

    def bar(total: int, label: str):
        return tqdm(total=total, desc=label, unit="ch", disable=quiet, leave=False).update

    started = time.perf_counter()
    choices = analyse(generator, lpips_module, canonical_masks(generator.size), settings, bar)
    seconds = time.perf_counter() - started
    record = settings.to_json() | {
        "regions_from": "codec.preprocess.masks.canonical_masks (average FFHQ-aligned face)",
        "lpips": "alex, ImageNet backbone" if backbone_available() else "alex, seeded random backbone (offline)",
        "offset_units": "standard deviation of each channel over spread_samples generated faces",
        "gamma_units": "LPIPS per channel standard deviation",
        "device": device,
        "torch": torch.__version__,
        "seconds": round(seconds, 1),
    }
    table = table_from_choices(choices, generator_name, zoo.generator_digest(generator_name),
                               "tools/sensitivity.py", record)
    with atomic_output(out_path) as tmp:
        save_channel_table(table, tmp)
    counts = {r: table.regions.count(r) for r in dict.fromkeys(table.regions)}
    click.echo(json.dumps({"out": str(out_path), "regions": counts, "seconds": round(seconds, 1),
                           "indices": [f"{l}_{c}" for l, c in table.indices]}))


if __name__ == "__main__":
    sys.exit(main())
