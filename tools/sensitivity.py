#!/usr/bin/env python3
"""Index sensitivity analysis (paper eq. 5): choose a generator's 32 StyleSpace channels and write the table.

    python tools/sensitivity.py --model tiny --out weights/tiny-64-channels.json
    python tools/sensitivity.py --model stylegan2-ffhq-config-f --device cuda --out ffhq-1024-channels.json
    python tools/sensitivity.py --model stylegan2-ffhq-config-f --plan    # what that run costs; no weights needed

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


def _alexnet_macs(size: int) -> int:
    """Multiply-adds of LPIPS' AlexNet features (conv1-5, torchvision's layout) on one size x size image."""
    side = (size + 2 * 2 - 11) // 4 + 1  # conv1: 64 x 11x11, stride 4, padding 2
    macs = side * side * 64 * 3 * 11 * 11
    side = (side - 3) // 2 + 1  # max pool 3/2
    macs += side * side * 192 * 64 * 5 * 5
    side = (side - 3) // 2 + 1
    return macs + side * side * 9 * (384 * 192 + 256 * 384 + 256 * 256)


def synthesis_macs(config) -> int:
    """Multiply-adds of one synthesis forward (modulated 3x3 convs and toRGB; the upsampling conv is a transposed
    conv over its input grid). Blur and the skip branch's up-sampling (FIR filters: about 1.5% at config-f, 10% on
    a 32² generator with 8-32 channels), noise, bias and the style affines are left out."""
    ch = config.channel_table
    first = config.resolutions[0]
    macs = first * first * ch[first] * (ch[first] * 9 + 3)
    for r in config.resolutions[1:]:
        macs += (r // 2) ** 2 * ch[r // 2] * ch[r] * 9 + r * r * ch[r] * (ch[r] * 9 + 3)
    return macs


def plan(config, settings: SensitivitySettings) -> dict:
    """What `analyse` runs for a generator of `config`: renders per stage, LPIPS pairs, and their multiply-adds."""
    from codec.encoder.sensitivity import candidate_indices
    from codec.models.stylespace import StyleSpaceLayout

    layout = StyleSpaceLayout.for_generator(config.resolutions, config.channel_table)
    candidates = len(candidate_indices(layout))
    k = len(settings.steps_in_std)
    shortlist = settings.shortlist_factor * sum(n for _, n in settings.allocation)
    screen = settings.identities * 2 * candidates  # the two end offsets of every candidate
    score = settings.identities * shortlist * k  # every offset of every shortlisted channel
    lpips_pairs = settings.identities * shortlist * (k - 1) * 3  # region, its leakage area, the face
    per_render = synthesis_macs(config)
    per_pair = 2 * _alexnet_macs(config.size)
    total = (screen + score) * per_render + lpips_pairs * per_pair
    return {"size": config.size, "candidates": candidates, "identities": settings.identities,
            "renders_stage1": screen, "renders_stage2": score, "lpips_pairs": lpips_pairs,
            "mapping_forwards": settings.spread_samples + settings.identities,
            "gmac_per_render": round(per_render / 1e9, 2), "gmac_per_lpips_pair": round(per_pair / 1e9, 2),
            "total_tflop": round(2 * total / 1e12, 1)}


@click.command()
@click.option("--model", "--generator", "generator_name", default="tiny", show_default=True,
              help="zoo generator name: tiny, or stylegan2-ffhq-config-f (after `stv-weights convert`)")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="channel table to write (JSON); required unless --plan")
@click.option("--plan", "plan_only", is_flag=True,
              help="print the renders and LPIPS evaluations the run needs, and their multiply-adds, then stop "
                   "(reads no weights: config-f's architecture is known)")
@click.option("--identities", default=3, show_default=True, help="seeded identities to score on")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--batch", "batch_images", default=64, show_default=True, help="renders per generator forward")
@click.option("-y", "overwrite", is_flag=True, help="overwrite OUT")
@click.option("--quiet", is_flag=True, help="no progress bars")
@clean_errors("sensitivity")
def main(generator_name: str, out_path: Path | None, plan_only: bool, identities: int, seed: int, device: str,
         batch_images: int, overwrite: bool, quiet: bool) -> None:
    """Choose the generator's 32 StyleSpace channels (20 mouth/jaw, 10 eyes/brows, 2 pupils) by index
    sensitivity (paper eq. 5) on seeded identities, and write them as a channel table (JSON) to OUT.

    Stage 1 screens every non-toRGB channel by pixel change inside vs outside each region; stage 2 scores the
    shortlist with masked LPIPS per unit offset. Offsets are in units of each channel's standard deviation.
    The tiny model takes a few minutes on 2 CPU cores; use --device cuda for config-f 1024."""
    if identities < 1 or batch_images < 1:
        raise StvError("--identities and --batch must be at least 1")
    settings = SensitivitySettings(identities=identities, seed=seed, batch_images=batch_images)
    if plan_only:
        click.echo(json.dumps(plan(_architecture(generator_name), settings)))
        return
    if out_path is None:
        raise StvError("--out is required (or --plan)")
    refuse_overwrite(out_path, overwrite)
    torch.manual_seed(seed)
    if not zoo.location(generator_name).is_file():
        raise StvError(f"generator {generator_name!r} is not installed ({zoo.location(generator_name)}): "
                       + ("make it with `stv-weights convert` from e4e_ffhq_encode.pt or the official "
                          "checkpoint (`stv-weights list`)" if zoo.entry(generator_name).derived_from
                          else f"`stv-weights fetch {generator_name}`"))
    generator = zoo.load_generator(generator_name, device=device)
    lpips_module = make_lpips(device)

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


def _architecture(generator_name: str):
    """The generator's config without loading it: the installed file's metadata, else config-f's known one."""
    from codec.models.stylegan2 import GeneratorConfig

    if zoo.location(generator_name).is_file():
        from safetensors import safe_open

        with safe_open(str(zoo.location(generator_name)), framework="pt") as f:
            return GeneratorConfig.from_json(json.loads(f.metadata()["stv"])["config"])
    if generator_name == "stylegan2-ffhq-config-f":
        return GeneratorConfig()  # 1024, 512, 8 mapping layers, channel multiplier 2
    zoo.path(generator_name)  # says how to get it
    raise StvError(f"unknown architecture for {generator_name!r}")


if __name__ == "__main__":
    sys.exit(main())
