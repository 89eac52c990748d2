"""Synthesis speed: fused (csrc/) vs reference (PyTorch) modulated conv, side by side in one process.

Frames/s of G_ss (styles -> image) for the tiny, 256x256 and 1024x1024 config-f generators (random weights:
speed does not depend on their values) at several batch sizes. Prints ratios (>1: fused is faster); with
--json the last line is one JSON object: fused_over_reference (geometric mean of the ratios),
max_abs_diff (fused vs reference images, float32), kernel (the path the 'fused' runs took), and every row.

    python tools/bench_decode.py                     # tiny + 256 at batch 1/4/8, 1024 at batch 1
    python tools/bench_decode.py --configs 1024 --batches 1 4 --json

--whole-decoder adds the whole decoder's frames/s per resolution (codec.decoder.decode: bitstream -> pose edit
-> A -> offsets -> synthesis -> roll -> uint8, with a linear pose editor), reference vs fused; with --json its
rows go under "whole_decoder".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import ops, zoo  # noqa: E402
from codec.models.stylegan2 import Generator, GeneratorConfig  # noqa: E402


def make_generator(name: str) -> Generator:
    if name == "tiny":
        return zoo.load_generator("tiny")
    torch.manual_seed(0)
    return Generator(GeneratorConfig(size=int(name))).eval()


def _synthesize_on(g: Generator, styles: list[torch.Tensor], path: str) -> tuple[float, torch.Tensor]:
    os.environ["STV_OPS"] = "reference" if path == "reference" else "fused"
    try:
        start = time.perf_counter()
        image = g.synthesize(styles)
        return time.perf_counter() - start, image
    finally:
        os.environ.pop("STV_OPS", None)


@torch.no_grad()
def compare(g: Generator, styles: list[torch.Tensor], repeats: int) -> tuple[float, float, float]:
    """(best reference seconds, best fused seconds, max |difference|). The two paths alternate, one warm-up
    each, best of `repeats`: on a shared machine the minimum is the least disturbed measurement."""
    best = {"reference": math.inf, "fused": math.inf}
    images = {}
    for round_index in range(repeats + 1):
        for path in ("reference", "fused"):
            seconds, images[path] = _synthesize_on(g, styles, path)
            if round_index:  # round 0 warms up oneDNN primitives and loads the extension
                best[path] = min(best[path], seconds)
    return best["reference"], best["fused"], (images["reference"] - images["fused"]).abs().max().item()


# --- the whole decoder (issue 7): bitstream -> pose edit -> A -> offsets -> synthesis -> roll -> uint8 ------------

def decoder_stream(g: Generator, frames: int) -> bytes:
    """An in-memory .stv for generator `g` with random tracks and 32 StyleSpace indices that exist in it."""
    import io

    import numpy as np

    from codec.bitstream import QuantTable, StvHeader, StvWriter

    rng = np.random.default_rng(0)
    convs = [k for k, layer in enumerate(g.layout.layers) if not layer.is_torgb]
    indices = [(convs[k % len(convs)], (37 * k) % g.layout.channels[convs[k % len(convs)]]) for k in range(32)]
    tracks = rng.normal(0.0, 1.0, (frames, 35))
    tracks[:, 34] *= 5.0  # roll in degrees: exercise the rotation
    with torch.no_grad():
        latent = g.mapping(torch.randn(1, g.style_dim, generator=torch.Generator().manual_seed(0)))
    header = StvHeader(width=g.size, height=g.size, fps_num=25, fps_den=1, generator_name="bench",
                       generator_sha256=bytes(32), style_indices=indices, quant=QuantTable.from_data(tracks),
                       id_latent=latent.expand(g.n_latent, -1).numpy())
    out = io.BytesIO()
    with StvWriter(out, header) as writer:
        writer.append(tracks)
    return out.getvalue()


def _decode_on(reader, g: Generator, editor, settings, path: str) -> float:
    from codec.decoder.decode import decode

    os.environ["STV_OPS"] = "reference" if path == "reference" else "fused"
    try:
        start = time.perf_counter()
        for _ in decode(reader, g, editor, settings=settings):
            pass
        return time.perf_counter() - start
    finally:
        os.environ.pop("STV_OPS", None)


def compare_decode(g: Generator, stream: bytes, batch: int, repeats: int) -> tuple[float, float]:
    """(best reference seconds, best fused seconds) to decode the whole stream; the paths alternate, round 0
    warms up, best of `repeats` (as `compare` does for synthesis alone)."""
    from codec.bitstream import StvReader
    from codec.decoder.decode import DecodeSettings
    from codec.models.pose import LinearPoseEditor

    reader = StvReader(stream)
    directions = 0.1 * torch.randn(2, g.n_latent, g.style_dim, generator=torch.Generator().manual_seed(1))
    editor, settings = LinearPoseEditor(directions), DecodeSettings(batch=batch)
    best = {"reference": math.inf, "fused": math.inf}
    for round_index in range(repeats + 1):
        for path in ("reference", "fused"):
            seconds = _decode_on(reader, g, editor, settings, path)
            if round_index:
                best[path] = min(best[path], seconds)
    return best["reference"], best["fused"]


def bench_whole_decoder(configs: list[str], batch: int, batches: int, repeats: int,
                        max_batch_1024: int) -> list[dict]:
    """Frames/s of the whole decoder per resolution, fused vs reference modulation (linear pose editor)."""
    rows = []
    print(f"whole decoder (bitstream -> uint8 frames, linear pose editor, {batches} batches per run)")
    print(f"{'config':>7} {'batch':>5} {'ref fps':>9} {'fused fps':>9} {'ratio':>6}")
    for name in configs:
        g = make_generator(name)
        size = min(batch, max_batch_1024) if name == "1024" else batch
        n = size * batches
        stream = decoder_stream(g, n)
        t_ref, t_fused = compare_decode(g, stream, size, repeats)
        row = {"config": name, "batch": size, "frames": n, "reference_fps": n / t_ref, "fused_fps": n / t_fused,
               "ratio": t_ref / t_fused}
        rows.append(row)
        print(f"{name:>7} {size:>5} {row['reference_fps']:9.2f} {row['fused_fps']:9.2f} {row['ratio']:6.2f}",
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "256", "1024"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--max-batch-1024", type=int, default=1, help="cap on the batch for 1024x1024 (CPU time)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    parser.add_argument("--whole-decoder", action="store_true",
                        help="also time the whole decoder (bitstream -> uint8 frames, pose editor, roll)")
    parser.add_argument("--decoder-batch", type=int, default=4, help="frames per batch for --whole-decoder")
    args = parser.parse_args()

    os.environ["STV_OPS"] = "fused"  # the path under test, whatever the default dispatch picks
    kernel = ops.active_kernel("cpu")
    os.environ.pop("STV_OPS", None)
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fused path: {kernel}")
    print(f"{'config':>7} {'batch':>5} {'ref fps':>9} {'fused fps':>9} {'ratio':>6} {'max|diff|':>10}")
    for name in args.configs:
        g = make_generator(name)
        for batch in args.batches:
            if name == "1024" and batch > args.max_batch_1024:
                continue
            gen = torch.Generator().manual_seed(batch)
            with torch.no_grad():
                w = g.mapping(torch.randn(batch, g.style_dim, generator=gen))
                styles = g.styles(w)
            t_ref, t_fused, diff = compare(g, styles, args.repeats)
            row = {"config": name, "batch": batch, "reference_fps": batch / t_ref, "fused_fps": batch / t_fused,
                   "ratio": t_ref / t_fused, "max_abs_diff": diff}
            rows.append(row)
            print(f"{name:>7} {batch:>5} {row['reference_fps']:9.2f} {row['fused_fps']:9.2f} "
                  f"{row['ratio']:6.2f} {row['max_abs_diff']:10.2e}", flush=True)
    geo = math.exp(sum(math.log(r["ratio"]) for r in rows) / len(rows))
    print(f"fused over reference (geometric mean of {len(rows)} rows): {geo:.2f}x")
    decoder_rows = []
    if args.whole_decoder:
        decoder_rows = bench_whole_decoder(args.configs, args.decoder_batch, 2, args.repeats, args.max_batch_1024)
    if args.json:
        figures = {"fused_over_reference": geo, "max_abs_diff": max(r["max_abs_diff"] for r in rows),
                   "kernel": kernel, "threads": torch.get_num_threads(), "rows": rows}
        if decoder_rows:
            figures["whole_decoder"] = decoder_rows
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
