#!/usr/bin/env python3
"""Fit the linear pose editor's yaw/pitch directions for a generator and save them as safetensors.

    python tools/fit_pose_directions.py --generator tiny --estimator moments --out weights/tiny-64-pose.safetensors

The method (regression of a pose estimate on W, then calibration of the response) is in
codec/encoder/pose_directions.py. The shipped tiny-model directions were made with the command above (seed 0,
2000 samples); for a real FFHQ generator use `--estimator landmarks` (dlib, degrees).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import torch
from safetensors.torch import save_file

from codec import zoo
from codec.cli.common import atomic_output, clean_errors, refuse_overwrite
from codec.encoder.pose_directions import ESTIMATORS, POSE_ROWS, fit_pose_directions


@click.command()
@click.option("--generator", "generator_name", default="tiny", show_default=True, help="zoo generator name")
@click.option("--estimator", type=click.Choice(sorted(ESTIMATORS)), default="moments", show_default=True)
@click.option("--samples", default=2000, show_default=True, help="generator samples for the regression")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("-y", "overwrite", is_flag=True, help="overwrite OUT")
@clean_errors("fit_pose_directions")
def main(generator_name: str, estimator: str, samples: int, seed: int, out_path: Path, overwrite: bool) -> None:
    refuse_overwrite(out_path, overwrite)
    torch.manual_seed(seed)
    generator = zoo.load_generator(generator_name)
    fit = fit_pose_directions(generator, ESTIMATORS[estimator], samples=samples, rows=POSE_ROWS, seed=seed)
    how = {
        "generator": generator_name,
        "generator_sha256": zoo.generator_digest(generator_name),
        "estimator": estimator,
        "rows": list(fit.rows),
        "samples": fit.samples_used,
        "seed": seed,
        "r_squared": list(fit.r_squared),
        "measured_slope": list(fit.measured_slope),
        "made_by": "tools/fit_pose_directions.py",
    }
    # One metadata entry: safetensors writes several in hash order, which would make the bytes (and the sha256
    # the manifest pins) vary from run to run.
    with atomic_output(out_path) as tmp:
        save_file({"directions": fit.directions.contiguous()}, str(tmp), metadata={"stv": json.dumps(how, sort_keys=True)})
    click.echo(json.dumps({k: how[k] for k in ("estimator", "samples", "r_squared", "measured_slope")}))


if __name__ == "__main__":
    sys.exit(main())
