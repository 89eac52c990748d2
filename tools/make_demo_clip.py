#!/usr/bin/env python3
"""Render a demo clip from the tiny generator with known parameters, and write the truth as JSON.

    python tools/make_demo_clip.py demo.mp4 --truth truth.json [--seed N] [--frames 50]
    stvenc demo.mp4 demo.stv --aligned && stvdec demo.stv demo_decoded.mp4

The frames are the generator's own renders (already aligned), so encode them with `stvenc --aligned`. The truth
JSON holds `alpha` (frames x 32), `yaw`, `pitch`, `roll` (frames) in the units `stvinfo --json` reports, and the
32 (layer, channel) indices they apply to. `.mkv` output is lossless (FFV1); `.mp4` is H.264 (CRF 18).
"""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path

import click
import numpy as np

from codec import zoo
from codec.cli.common import atomic_output, clean_errors, refuse_overwrite
from codec.encoder.sensitivity import load_channel_table
from codec.encoder.synthetic import make_truth, render_truth
from codec.preprocess.video import write_video


@click.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--truth", "truth_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--frames", "n_frames", default=50, show_default=True)
@click.option("--fps", default=25, show_default=True)
@click.option("-y", "overwrite", is_flag=True, help="overwrite existing outputs")
@clean_errors("make_demo_clip")
def main(out: Path, truth_path: Path, seed: int, n_frames: int, fps: int, overwrite: bool) -> None:
    refuse_overwrite(out, overwrite)
    refuse_overwrite(truth_path, overwrite)
    generator = zoo.load_generator("tiny")
    editor = zoo.load_pose_editor(None, "tiny")
    table = load_channel_table(zoo.WEIGHTS_DIR / "tiny-64-channels.json")
    spread = table.channel_spread()
    truth = make_truth(generator, editor, table.indices, spread, n_frames, seed)
    frames = render_truth(generator, editor, truth)
    pixels = ((frames.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    write_video(out, iter(pixels), Fraction(fps), lossless=out.suffix.lower() == ".mkv")
    record = {"seed": seed, "fps": fps, "style_indices": [list(i) for i in truth.style_indices],
              "alpha": truth.alpha.tolist(), "yaw": truth.yaw.tolist(), "pitch": truth.pitch.tolist(),
              "roll": truth.roll.tolist()}
    with atomic_output(truth_path) as tmp:
        tmp.write_text(json.dumps(record))
    click.echo(f"{out}: {n_frames} frames of the tiny model; truth in {truth_path}")


if __name__ == "__main__":
    sys.exit(main())
