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

--device cuda runs everything on the GPU in float16 (stvdec's choice there; --dtype float32 to compare) and adds
stvdec's end-to-end frames/s (`stvdec_fps`: bitstream -> CUDA-graph synthesis -> pinned copy -> H.264 on the
writer thread, stvdec's own `write_frames`), with and without the H.264 encode, so the figure shows which side
limits it. With --json its row is under "stvdec".

--paste WxH adds the paste-back's cost per frame (format 1.2: the face turned, placed and feathered into a WxH
source picture) beside the generator's: OpenCV on the host (stvdec's CPU path) and torch on --device (stvdec's
GPU path), each in ms per frame next to the fused synthesis' ms per frame at the largest batch timed. With --json
its rows go under "paste_back".
"""

from __future__ import annotations

import argparse
import contextlib
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


def make_generator(name: str, device: torch.device = torch.device("cpu"),
                   dtype: torch.dtype = torch.float32) -> Generator:
    if name == "tiny":
        return zoo.load_generator("tiny", device=device, dtype=dtype)
    torch.manual_seed(0)
    return Generator(GeneratorConfig(size=int(name))).eval().to(device, dtype)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work: a host clock read before it times the launches, not the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _synthesize_on(g: Generator, styles: list[torch.Tensor], path: str) -> tuple[float, torch.Tensor]:
    os.environ["STV_OPS"] = "reference" if path == "reference" else "fused"
    try:
        synchronize(styles[0].device)
        start = time.perf_counter()
        image = g.synthesize(styles)
        synchronize(styles[0].device)
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


def stvdec_fps(g: Generator, device: torch.device, dtype: torch.dtype, batch: int, frames: int,
               encode_video: bool = True) -> float:
    """Frames/s of stvdec's decode and output loop after one warm-up batch: the stream's frames through
    `decode` (CUDA graph on a GPU) into stvdec's `write_frames`, to an H.264 file as stvdec writes it
    (encode_video=False: the frames are dropped, which isolates the rendering side)."""
    import tempfile
    from fractions import Fraction

    from codec.bitstream import StvReader
    from codec.cli.stvdec import write_frames
    from codec.decoder.decode import DecodeSettings, decode
    from codec.models.pose import LinearPoseEditor
    from codec.preprocess.video import VideoWriter

    reader = StvReader(decoder_stream(g.float().cpu(), frames + batch))
    g.to(device, dtype)
    directions = 0.1 * torch.randn(2, g.n_latent, g.style_dim, generator=torch.Generator().manual_seed(1))
    editor = LinearPoseEditor(directions.to(device, dtype))
    settings = DecodeSettings(batch=batch, device=device, dtype=dtype)
    warm = list(decode(reader, g, editor, 0, batch, settings))  # extension load, graph capture
    del warm
    with tempfile.TemporaryDirectory() as tmp:
        video = VideoWriter(Path(tmp) / "out.mp4", Fraction(25), (g.size, g.size)) if encode_video else None
        with video if video is not None else contextlib.nullcontext():
            synchronize(device)
            start = time.perf_counter()
            write_frames(decode(reader, g, editor, batch, batch + frames, settings), video, None)
            synchronize(device)
            return frames / (time.perf_counter() - start)


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


# --- paste-back (issue 13): the blend's cost beside the generator's -------------------------------------------

def _best_seconds_per_frame(paste_one, frames: int, repeats: int, device: torch.device) -> float:
    """Best of `repeats` runs (after one warm-up) of pasting `frames` frames, per frame."""
    best = math.inf
    for round_index in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        for k in range(frames):
            paste_one(k)
        synchronize(device)
        if round_index:
            best = min(best, (time.perf_counter() - start) / frames)
    return best


def paste_cost(face_size: int, picture: tuple[int, int], device: torch.device, repeats: int,
               frames: int = 8) -> dict:
    """ms per frame to put a face_size² rendering into a picture (width, height): OpenCV on the host, torch on
    `device`. The face covers 40% of the picture's height and turns a little from frame to frame, as a talking
    head's does."""
    import numpy as np

    from codec.decoder.paste import paste_face
    from codec.decoder.paste_torch import paste_face_torch
    from codec.preprocess.masks import face_blend_mask

    width, height = picture
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (face_size, face_size, 3), dtype=np.uint8)
    background = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = face_blend_mask(face_size)
    centre, side = np.array([width / 2, height / 2]), 0.4 * height
    host = _best_seconds_per_frame(lambda k: paste_face(face, centre + k, side, k - 4.0, background, mask),
                                   frames, repeats, torch.device("cpu"))
    face_t, background_t = torch.from_numpy(face).to(device), torch.from_numpy(background).to(device)
    mask_t = torch.from_numpy(mask).to(device)
    on_device = _best_seconds_per_frame(
        lambda k: paste_face_torch(face_t, centre + k, side, k - 4.0, background_t, mask_t), frames, repeats, device)
    return {"opencv_ms": 1000 * host, "torch_ms": 1000 * on_device}


def bench_paste(configs: list[str], rows: list[dict], picture: tuple[int, int], device: torch.device,
                repeats: int) -> list[dict]:
    """Per generator: its synthesis' ms per frame (fused, the largest batch timed) and the paste-back's."""
    print(f"paste-back into {picture[0]}x{picture[1]} (ms per frame; torch on {device})")
    print(f"{'config':>7} {'batch':>5} {'generator':>9} {'opencv':>8} {'torch':>8}")
    out = []
    for name in configs:
        timed = [r for r in rows if r["config"] == name]
        if not timed:
            continue
        largest = max(timed, key=lambda r: r["batch"])
        size = zoo.load_generator("tiny").size if name == "tiny" else int(name)
        row = {"config": name, "picture": f"{picture[0]}x{picture[1]}", "batch": largest["batch"],
               "generator_ms": 1000 / largest["fused_fps"], **paste_cost(size, picture, device, repeats)}
        out.append(row)
        print(f"{name:>7} {row['batch']:>5} {row['generator_ms']:9.2f} {row['opencv_ms']:8.2f} {row['torch_ms']:8.2f}",
              flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "256", "1024"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--max-batch-1024", type=int, default=1, help="cap on the batch for 1024x1024 (CPU time)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda: float16 unless --dtype float32, and "
                        "stvdec's end-to-end frames/s at 1024x1024)")
    parser.add_argument("--dtype", choices=["float16", "float32"], default=None,
                        help="default: float16 on cuda, float32 on cpu (stvdec's choices)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    parser.add_argument("--whole-decoder", action="store_true",
                        help="also time the whole decoder (bitstream -> uint8 frames, pose editor, roll)")
    parser.add_argument("--decoder-batch", type=int, default=4, help="frames per batch for --whole-decoder")
    parser.add_argument("--stvdec-batch", type=int, default=16, help="stvdec's batch for the end-to-end figure")
    parser.add_argument("--stvdec-frames", type=int, default=64, help="frames timed for the end-to-end figure")
    parser.add_argument("--paste", metavar="WxH", default=None,
                        help="also time the paste-back into a WxH picture beside the generator (e.g. 1280x720)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "bench_decode: error: --device cuda: no CUDA device here\n")
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)

    os.environ["STV_OPS"] = "fused"  # the path under test, whatever the default dispatch picks
    kernel = ops.active_kernel(device)
    os.environ.pop("STV_OPS", None)
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device} {dtype}, fused path: {kernel}")
    print(f"{'config':>7} {'batch':>5} {'ref fps':>9} {'fused fps':>9} {'ratio':>6} {'max|diff|':>10}")
    for name in args.configs:
        g = make_generator(name, device, dtype)
        for batch in args.batches:
            if name == "1024" and batch > args.max_batch_1024 and device.type == "cpu":
                continue
            gen = torch.Generator().manual_seed(batch)
            with torch.no_grad():
                w = g.mapping(torch.randn(batch, g.style_dim, generator=gen).to(device, dtype))
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
    paste_rows = []
    if args.paste:
        width, height = (int(v) for v in args.paste.lower().split("x"))
        paste_rows = bench_paste(args.configs, rows, (width, height), device, args.repeats)
    stvdec_row = None
    if device.type == "cuda":
        g = make_generator("1024")
        stvdec_row = {"size": 1024, "batch": args.stvdec_batch, "dtype": str(dtype).removeprefix("torch."),
                      "frames": args.stvdec_frames,
                      "fps_h264": stvdec_fps(g, device, dtype, args.stvdec_batch, args.stvdec_frames, True),
                      "fps_no_output": stvdec_fps(g, device, dtype, args.stvdec_batch, args.stvdec_frames, False)}
        print(f"stvdec end to end at 1024x1024, batch {args.stvdec_batch}, {stvdec_row['dtype']}: "
              f"{stvdec_row['fps_h264']:.1f} fps writing H.264, {stvdec_row['fps_no_output']:.1f} fps rendering "
              "only")
    if args.json:
        figures = {"fused_over_reference": geo, "max_abs_diff": max(r["max_abs_diff"] for r in rows),
                   "kernel": kernel, "threads": torch.get_num_threads(), "device": str(device), "rows": rows}
        if decoder_rows:
            figures["whole_decoder"] = decoder_rows
        if stvdec_row:
            figures["stvdec"] = stvdec_row
        if paste_rows:
            figures["paste_back"] = paste_rows
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
