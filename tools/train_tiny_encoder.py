#!/usr/bin/env python3
"""Train the tiny e4e-shaped encoder (codec.models.e4e.tiny_e4e_config) on the tiny generator's own samples.

    python tools/train_tiny_encoder.py --out weights/tiny-64-e4e.pt -y     (held-out figures: weights/tiny-64-e4e.json)

Data: W+ latents in e4e's "close to W" regime, each rendered once by the generator into a fixed training pool:
  w = mapping(z), z ~ N(0, I), broadcast to every W+ row, then
  * every row moved by its own Gaussian step of s * sigma_W (s ~ U(0, row_noise) per sample; sigma_W is W's
    per-dimension spread): inversions of real frames are not exactly in W;
  * with probability 1/2 the first k rows (k ~ U{1..n-1}) moved together by t * sigma_W * N(0, I)
    (t ~ U(0, block_shift)): what a pose edit of the coarse rows does to an ID latent.
Losses (e4e's, plus one that only synthetic data allows):
  * latent L2 to the true W+, in units of sigma_W (cheap: no generator in the loop, and a strong signal);
  * after `latent_steps` steps, also image L2 and LPIPS between G(E(x)) and x (a generator forward and backward
    per step: few steps, where they matter most, at the end);
  * e4e's delta regularisation: the L2 norm of each row's offset from row 0, keeping rows near row 0.
Deterministic on the CPU: seeded pool and batches, deterministic algorithms, a fixed thread count (one by
default: the machine is shared, and two threads were slower than one under load). Bounded by step counts.

At the end the held-out figures (PSNR of G(E(x)) vs x, latent error, then the same after N projector steps
started from E(x)) are measured and written to the JSON beside the checkpoint, with a random-init encoder's
figures for comparison.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

import click
import torch
from tqdm.auto import tqdm

from codec import zoo
from codec.cli.common import atomic_output, clean_errors, refuse_overwrite
from codec.encoder.invert import ProjectSettings, invert
from codec.encoder.losses import backbone_available, lpips_distance, make_lpips, psnr
from codec.models.e4e import E4EEncoder, save_e4e_checkpoint, tiny_e4e_config

DATA_DESCRIPTION = (
    "W+ = mapping(z) broadcast to all rows, z ~ N(0, I); each row + s * sigma_W * N(0, I), s ~ U(0, row_noise) per "
    "sample; with p = 1/2 rows [0, k), k ~ U{1..n-1}, + t * sigma_W * N(0, I), t ~ U(0, block_shift); "
    "sigma_W = per-dimension std of mapping(z) over 4096 z (seed 0); images = G(W+) with its constant noise"
)
RENDER_BATCH = 64
SIGMA_SAMPLES = 4096  # z samples behind sigma_W (per-dimension std of W)


@dataclass(frozen=True)
class TrainSettings:
    seed: int = 20261201
    pool: int = 4096  # training images, rendered once
    batch: int = 32
    latent_steps: int = 1200  # latent L2 + delta regularisation only
    image_steps: int = 60  # + image L2 and LPIPS of G(E(x)) vs x
    warmup_steps: int = 50
    learning_rate: float = 1e-3  # Adam, linear warm-up then cosine decay over all steps
    latent_weight: float = 1.0
    l2_weight: float = 1.0  # e4e: l2_lambda 1.0
    lpips_weight: float = 0.8  # e4e: lpips_lambda 0.8
    delta_weight: float = 2e-4  # e4e: delta_norm_lambda 2e-4
    row_noise: float = 0.5
    block_shift: float = 0.5
    threads: int = 1


@dataclass(frozen=True)
class LatentDistribution:
    """Where the training (and held-out) W+ latents come from; see the module doc."""

    sigma_w: torch.Tensor  # [style_dim]
    row_noise: float
    block_shift: float

    @classmethod
    def for_generator(cls, generator, row_noise: float, block_shift: float) -> "LatentDistribution":
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            w = generator.mapping(torch.randn(SIGMA_SAMPLES, generator.style_dim, generator=gen))
        return cls(w.std(0), row_noise, block_shift)

    def sample(self, generator, n: int, gen: torch.Generator) -> torch.Tensor:
        """n W+ latents [n, n_latent, style_dim]."""
        n_latent, dim = generator.n_latent, generator.style_dim
        with torch.no_grad():
            w = generator.mapping(torch.randn(n, dim, generator=gen))
        row_scale = self.row_noise * torch.rand(n, 1, 1, generator=gen)
        w_plus = w[:, None] + row_scale * self.sigma_w * torch.randn(n, n_latent, dim, generator=gen)
        shifted = torch.rand(n, generator=gen) < 0.5
        first_k = torch.randint(1, n_latent, (n,), generator=gen)
        block = (torch.arange(n_latent)[None] < first_k[:, None]) & shifted[:, None]  # [n, n_latent]
        shift = self.block_shift * torch.rand(n, 1, generator=gen) * self.sigma_w * torch.randn(n, dim, generator=gen)
        return w_plus + block[..., None].float() * shift[:, None]


def latent_distribution(generator, settings: TrainSettings) -> LatentDistribution:
    return LatentDistribution.for_generator(generator, settings.row_noise, settings.block_shift)


def render(generator, w_plus: torch.Tensor, progress: bool = False) -> torch.Tensor:
    """W+ -> images in [-1, 1]-ish, without gradients, in batches."""
    with torch.no_grad():
        batches = range(0, w_plus.shape[0], RENDER_BATCH)
        return torch.cat([generator(w_plus[i:i + RENDER_BATCH])
                          for i in tqdm(batches, desc="render", disable=not progress)])


def new_encoder(generator) -> E4EEncoder:
    """A random-init tiny encoder whose output starts around the generator's mean latent (pSp's
    start_from_latent_avg)."""
    encoder = E4EEncoder(tiny_e4e_config(generator.n_latent, generator.style_dim, generator.size))
    encoder.latent_avg = generator.latent_avg.detach().reshape(1, -1).expand(generator.n_latent, -1).clone()
    return encoder


def delta_norm(w_plus: torch.Tensor) -> torch.Tensor:
    """e4e's L_d-reg per sample: sum over rows of the L2 norm of the row's offset from row 0."""
    return (w_plus[:, 1:] - w_plus[:, :1]).norm(dim=2).sum(1)


def learning_rate(settings: TrainSettings, step: int) -> float:
    total = settings.latent_steps + settings.image_steps
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, total - settings.warmup_steps)
    return settings.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))


@contextlib.contextmanager
def deterministic(seed: int, threads: int) -> Iterator[None]:
    """Seeded RNG, deterministic algorithms and a fixed thread count inside; the caller's settings restored after
    (the training runs inside test sessions too)."""
    previous_threads, previous_flag = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.set_num_threads(previous_threads)
            torch.use_deterministic_algorithms(previous_flag)


def train(generator, lpips_module, settings: TrainSettings, progress: bool = True) -> tuple[E4EEncoder, list[dict]]:
    """Train a fresh tiny encoder; returns it (eval mode) and a log of the loss terms every 50 steps."""
    with deterministic(settings.seed, settings.threads):
        return _train(generator, lpips_module, settings, progress)


def _train(generator, lpips_module, settings: TrainSettings, progress: bool) -> tuple[E4EEncoder, list[dict]]:
    for p in generator.parameters():
        p.requires_grad_(False)
    distribution = latent_distribution(generator, settings)
    data_gen = torch.Generator().manual_seed(settings.seed)
    latents = distribution.sample(generator, settings.pool, data_gen)
    images = render(generator, latents, progress)
    encoder = new_encoder(generator).train()
    optimiser = torch.optim.Adam(encoder.parameters(), lr=settings.learning_rate)
    inv_var = distribution.sigma_w.pow(-2)
    total = settings.latent_steps + settings.image_steps
    log, window = [], []
    order = torch.randperm(settings.pool, generator=data_gen)
    cursor = 0
    for step in tqdm(range(total), desc="train", disable=not progress):
        if cursor + settings.batch > settings.pool:  # next epoch: a new seeded shuffle
            order, cursor = torch.randperm(settings.pool, generator=data_gen), 0
        idx = order[cursor:cursor + settings.batch]
        cursor += settings.batch
        x, truth = images[idx], latents[idx]
        predicted = encoder(x)
        terms = {"latent": ((predicted - truth).pow(2) * inv_var).mean(),
                 "delta": delta_norm(predicted).mean()}
        loss = settings.latent_weight * terms["latent"] + settings.delta_weight * terms["delta"]
        if step >= settings.latent_steps:
            reconstruction = generator(predicted)
            terms["l2"] = (reconstruction - x).pow(2).mean()
            terms["lpips"] = lpips_distance(lpips_module, reconstruction, x).mean()
            loss = loss + settings.l2_weight * terms["l2"] + settings.lpips_weight * terms["lpips"]
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(settings, step)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        window.append({k: float(v.detach()) for k, v in terms.items()})
        if (step + 1) % 50 == 0 or step + 1 in (settings.latent_steps, total):  # a window never spans both phases
            log.append({"step": step + 1, **{k: sum(w[k] for w in window) / len(window) for k in window[-1]}})
            window = []
    return encoder.eval(), log


def held_out(generator, settings: TrainSettings, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n (W+, image) pairs from the training distribution under another seed."""
    distribution = latent_distribution(generator, settings)
    latents = distribution.sample(generator, n, torch.Generator().manual_seed(settings.seed + 1))
    return latents, render(generator, latents)


def reconstruction_figures(generator, images, latents, w_plus, sigma_w) -> dict:
    quality = psnr(render(generator, w_plus), images)
    normalised = ((w_plus - latents) / sigma_w).pow(2).mean().sqrt()
    return {"psnr_mean": round(float(quality.mean()), 3), "psnr_min": round(float(quality.min()), 3),
            "latent_rmse_over_sigma_w": round(float(normalised), 4)}


def evaluate(generator, encoder, lpips_module, settings: TrainSettings, n: int = 64,
             project_steps: tuple[int, ...] = (0, 20, 50), progress: bool = False) -> dict:
    """Held-out figures: the encoder alone, then after N projector steps started from its answer."""
    latents, images = held_out(generator, settings, n)
    sigma_w = latent_distribution(generator, settings).sigma_w
    with torch.no_grad():
        encoded = encoder(images)
    figures = {"samples": n, "encoder": reconstruction_figures(generator, images, latents, encoded, sigma_w)}
    for steps in project_steps:
        refined = invert(images, generator, "project", encoder=encoder, lpips_module=lpips_module,
                         settings=ProjectSettings(steps=steps, batch_frames=n), progress=progress).w_plus
        figures[f"project_{steps}"] = reconstruction_figures(generator, images, latents, refined.detach(), sigma_w)
    return figures


def baseline_figures(generator, settings: TrainSettings, n: int = 64) -> dict:
    """What an untrained (random-init, same seed) encoder and the mean latent score: the floor to beat."""
    latents, images = held_out(generator, settings, n)
    sigma_w = latent_distribution(generator, settings).sigma_w
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(settings.seed)
        untrained = new_encoder(generator).eval()(images)
    mean = generator.latent_avg.reshape(1, 1, -1).expand_as(latents)
    return {"untrained_encoder": reconstruction_figures(generator, images, latents, untrained, sigma_w),
            "mean_latent": reconstruction_figures(generator, images, latents, mean, sigma_w)}


def write_checkpoint(out_path: Path, encoder: E4EEncoder, opts: dict) -> None:
    """Atomically, and with bytes that depend on the contents only: torch.save names the zip's root folder after
    the file it writes to (here a random temporary name), but 'archive' when given an open file."""
    with atomic_output(out_path) as tmp, open(tmp, "wb") as f:
        save_e4e_checkpoint(f, encoder, opts=opts)


@click.command(help="\b\n" + __doc__.replace("\n\n", "\n\n\b\n"))  # \b: click keeps these lines as written
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="checkpoint to write (e4e container layout); a JSON of how it was made goes beside it")
@click.option("--generator", "generator_name", default="tiny", show_default=True, help="zoo generator name")
@click.option("--seed", default=TrainSettings.seed, show_default=True)
@click.option("--pool", default=TrainSettings.pool, show_default=True, help="training images rendered once")
@click.option("--latent-steps", default=TrainSettings.latent_steps, show_default=True)
@click.option("--image-steps", default=TrainSettings.image_steps, show_default=True)
@click.option("--threads", default=TrainSettings.threads, show_default=True,
              help="torch threads (part of what makes the result reproducible)")
@click.option("--eval-samples", default=64, show_default=True, help="held-out samples for the final figures")
@click.option("-y", "overwrite", is_flag=True, help="overwrite OUT")
@clean_errors("train_tiny_encoder")
def main(out_path: Path, generator_name: str, seed: int, pool: int, latent_steps: int, image_steps: int,
         threads: int, eval_samples: int, overwrite: bool) -> None:
    refuse_overwrite(out_path, overwrite)
    settings = replace(TrainSettings(), seed=seed, pool=pool, latent_steps=latent_steps, image_steps=image_steps,
                       threads=threads)
    generator = zoo.load_generator(generator_name)
    lpips_module = make_lpips()
    started = time.monotonic()
    encoder, log = train(generator, lpips_module, settings)
    train_seconds = time.monotonic() - started
    opts = {  # the release's opts keys that describe the architecture, then our provenance
        "encoder_type": "Encoder4Editing", "stylegan_size": generator.size, "start_from_latent_avg": True,
        "input_nc": 3, "made_by": "tools/train_tiny_encoder.py", "generator": generator_name,
        "generator_sha256": zoo.generator_digest(generator_name), "seed": seed,
    }
    write_checkpoint(out_path, encoder, opts)
    figures = evaluate(generator, encoder, lpips_module, settings, n=eval_samples, progress=True)
    report = {
        "file": out_path.name, "sha256": zoo.sha256_of(out_path), "size": out_path.stat().st_size,
        "made_by": "tools/train_tiny_encoder.py", "generator": generator_name,
        "generator_sha256": opts["generator_sha256"], "config": "tiny_e4e_config(n_styles, style_dim, input_size)",
        "parameters": sum(p.numel() for p in encoder.parameters()), "settings": asdict(settings),
        "data": DATA_DESCRIPTION,
        "lpips_backbone": "ImageNet AlexNet" if backbone_available() else "seeded random AlexNet",
        "train_seconds": round(train_seconds, 1), "held_out": figures,
        "held_out_baselines": baseline_figures(generator, settings, eval_samples), "loss_log": log,
    }
    with atomic_output(out_path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    click.echo(json.dumps({"held_out": figures, "baselines": report["held_out_baselines"]}))


if __name__ == "__main__":
    sys.exit(main())
