"""Peak memory of the encoder for N and 10N frames: flat in the clip's length (issue 17)?

    python tools/bench_memory.py [--frames 100] [--size 1024|64] [--window N] [--json]

Each figure comes from a fresh process that runs `stvenc`'s own function (`encode_video`, --aligned input, stvenc's
batches and resolutions, every stage at one step: FEW_STEPS) on a synthetic clip of square crops at the
generator's size, and reports its peak resident set (the kernel's VmHWM) and, on a GPU, torch's peak CUDA
allocation. Both runs read the same 10N-frame clip (the
first run its first N frames), so they differ only in length.

STAND-IN GENERATOR: so that 10N frames at 1024² encode on a CPU in minutes, the generator is a stand-in with the
real one's interface, sizes and StyleSpace layout (config-f at 1024: its mapping, affine layers and weights, 26
style layers, 9088 channels, the real channel table) but a cheap synthesis (a fixed linear map of the styles to a
4x4 picture, upsampled to the asked size); the inverter (e4e) and the pose editor (linear) are seeded stand-ins of
the real shapes. The pictures mean nothing; the frames, windows, latents and renders that the encoder holds have
the real sizes. --size 64 uses the tiny generator's configuration and channel table instead.

With --json the last line is one JSON object: peak_rss_mb_n, peak_rss_mb_10n, ratio (10N over N),
resident_frame_bytes (the float frame data the stages held at once: the largest window read, in bytes),
frame_float_bytes, window_frames, frames_n, size, stand_in (the note above), and peak_cuda_mb_* on a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import zoo  # noqa: E402
from codec.encoder.attributes import AttributeSettings  # noqa: E402
from codec.encoder.head_pose import PoseSettings  # noqa: E402
from codec.encoder.pipeline import Part1Settings  # noqa: E402
from codec.encoder.refine import RefineSettings  # noqa: E402
from codec.encoder import frames as frame_store  # noqa: E402
from codec.models.pose import LinearPoseEditor  # noqa: E402
from codec.models.stylegan2 import Generator, GeneratorConfig  # noqa: E402

STAND_IN_NOTE = ("stand-in generator: the real interface, sizes and StyleSpace layout, a cheap synthesis (styles -> "
                 "4x4 picture, upsampled); seeded stand-in e4e and linear pose editor; every stage at one step: "
                 "memory figures only")
# generator size -> the registry name whose channel table and layout the stand-in takes
GENERATOR_BY_SIZE = {1024: "stylegan2-ffhq-config-f", 64: "tiny"}
SEED = 0
# Every stage runs, with stvenc's batches and resolutions, but with one step where stvenc takes several: a step's
# memory is the same whichever step it is, and 10N frames at 1024² then encode in minutes.
FEW_STEPS = {"part1": Part1Settings(inverter="e4e", pose=PoseSettings(steps=1)),
             "attributes": AttributeSettings(steps=1),
             "refine": RefineSettings(rounds=1, chord_iterations=1, latent_evaluations=2)}


class StandInGenerator(Generator):
    """The real Generator (mapping, affine layers A, layout, weights: what the encoder holds) with a cheap
    synthesis: each picture is a fixed linear map of all its styles to 4x4 RGB, upsampled to the asked size. It
    keeps gradients flowing to W+ and the styles, as the stages need."""

    def __init__(self, config: GeneratorConfig):
        super().__init__(config)
        channels = sum(layer.channels for layer in self.layout.layers)
        generator = torch.Generator().manual_seed(SEED)
        self.register_buffer("picture_map", torch.randn(channels, 3 * 16, generator=generator) / math.sqrt(channels))

    def synthesize(self, styles, stop_at: int | None = None, noise="const") -> torch.Tensor:
        self.layout._check(styles)
        size = self.size if stop_at is None else stop_at
        small = torch.tanh(torch.cat(list(styles), 1) @ self.picture_map).reshape(-1, 3, 4, 4)
        return F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)


class StandInInverter(torch.nn.Module):
    """frames -> W+ of the right shape: the mean latent plus a fixed linear map of an 8x8 thumbnail."""

    def __init__(self, generator: Generator):
        super().__init__()
        self.n_latent, self.dim = generator.n_latent, generator.style_dim
        random = torch.Generator().manual_seed(SEED + 1)
        self.register_buffer("thumbnail_map", 0.1 * torch.randn(3 * 64, self.n_latent * self.dim, generator=random))
        self.register_buffer("latent_avg", generator.latent_avg.detach().clone())

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        thumbnails = F.adaptive_avg_pool2d(frames, 8).flatten(1)
        return self.latent_avg + (thumbnails @ self.thumbnail_map).reshape(-1, self.n_latent, self.dim)


def stand_in_config(size: int) -> GeneratorConfig:
    if size == 1024:
        return GeneratorConfig(size=1024)  # config-f
    return zoo.load_generator(GENERATOR_BY_SIZE[size]).config


def install_stand_ins(size: int) -> None:
    """Serve the stand-ins where encode_video asks the registry for the generator, its inverter and pose editor."""
    torch.manual_seed(SEED)
    generator = StandInGenerator(stand_in_config(size)).eval()
    generator.estimate_latent_avg(n=1000)
    generator.requires_grad_(False)
    inverter = StandInInverter(generator)
    directions = 0.05 * torch.randn(2, generator.n_latent, generator.style_dim,
                                    generator=torch.Generator().manual_seed(SEED + 2))
    editor = LinearPoseEditor(directions)
    zoo.load_generator = lambda name="tiny", device="cpu", dtype=torch.float32: generator.to(device)
    zoo.load_inverter = lambda name, device="cpu": inverter.to(device)
    zoo.encoder_pose_editor = lambda choice, name: ({"editor": "linear", "model": "stand-in"}, editor)
    zoo.generator_digest = lambda name="tiny": "00" * 32


def track_windows() -> dict[str, int]:
    """Record the largest window the frame store hands out (the float frame data resident at once)."""
    largest = {"frames": 0}
    window = frame_store.AlignedFrames.window

    def recording(self, start: int, stop: int) -> torch.Tensor:
        largest["frames"] = max(largest["frames"], stop - start)
        return window(self, start, stop)

    frame_store.AlignedFrames.window = recording
    return largest


def peak_rss_mb() -> float:
    """The process's peak resident set (VmHWM), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def write_clip(path: Path, frames: int, size: int) -> None:
    """Square crops with a moving disc on a gradient: cheap to code, a different picture each frame."""
    from codec.preprocess.video import write_video

    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack([xs, ys, 1 - xs], -1) * 200

    def frame(t: int) -> np.ndarray:
        cx, cy = 0.5 + 0.3 * math.cos(t / 7), 0.5 + 0.3 * math.sin(t / 11)
        disc = ((xs - cx) ** 2 + (ys - cy) ** 2 < 0.02)[..., None]
        return np.where(disc, 240.0, base).astype(np.uint8)

    write_video(path, (frame(t) for t in range(frames)), Fraction(25))


def measure(video: Path, frames: int, size: int, window: int | None, work_dir: Path) -> dict:
    """One encode of the first `frames` frames, in this process (run it in a fresh one)."""
    from codec.encoder.encode import EncodeSettings, encode_video

    install_stand_ins(size)
    largest = track_windows()
    on_gpu = torch.cuda.is_available()
    device = "cuda" if on_gpu else "cpu"
    settings = EncodeSettings(generator=GENERATOR_BY_SIZE[size], aligned_input=True, frames=(0, frames),
                              **FEW_STEPS)
    started = time.perf_counter()
    report = encode_video(video, work_dir / "out.stv", settings, device=device, work_dir=work_dir, progress=False,
                          window=window)
    out = {"frames": report.frames, "peak_rss_mb": peak_rss_mb(), "largest_window_frames": largest["frames"],
           "seconds": time.perf_counter() - started}
    if on_gpu:
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_child(video: Path, frames: int, size: int, window: int | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as work:
        command = [sys.executable, __file__, "--child", str(video), "--frames", str(frames), "--size", str(size),
                   "--work-dir", work] + ([] if window is None else ["--window", str(window)])
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench_memory: the {frames}-frame encode failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100, help="N (the second run encodes 10N)")
    parser.add_argument("--size", type=int, choices=sorted(GENERATOR_BY_SIZE), default=1024,
                        help="generator size (1024: config-f's layout; 64: the tiny model's)")
    parser.add_argument("--window", type=int, default=None, help="stvenc --window (default: stvenc's)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.frames < 1 or (args.window is not None and args.window < 1):
        parser.error("--frames and --window must be at least 1")
    if args.child is not None:
        print(json.dumps(measure(args.child, args.frames, args.size, args.window, args.work_dir)))
        return

    n = args.frames
    with tempfile.TemporaryDirectory(prefix="bench-memory-clip-") as folder:
        video = Path(folder) / "clip.mp4"
        write_clip(video, 10 * n, args.size)
        short, long = (run_child(video, frames, args.size, args.window) for frames in (n, 10 * n))
    frame_bytes = 3 * args.size * args.size * 4
    largest = max(short["largest_window_frames"], long["largest_window_frames"])
    figures = {
        "stand_in": STAND_IN_NOTE,
        "size": args.size,
        "frames_n": n,
        "peak_rss_mb_n": short["peak_rss_mb"],
        "peak_rss_mb_10n": long["peak_rss_mb"],
        "ratio": long["peak_rss_mb"] / short["peak_rss_mb"],
        "frame_float_bytes": frame_bytes,
        "window_frames": largest,
        "resident_frame_bytes": largest * frame_bytes,
        # what the whole clip as one float tensor would have held, for scale
        "whole_clip_float_bytes_10n": 10 * n * frame_bytes,
        "seconds_n": short["seconds"],
        "seconds_10n": long["seconds"],
    }
    if "peak_cuda_mb" in short:
        figures["peak_cuda_mb_n"], figures["peak_cuda_mb_10n"] = short["peak_cuda_mb"], long["peak_cuda_mb"]
    print(f"{STAND_IN_NOTE}")
    print(f"{args.size}x{args.size}: peak RSS {figures['peak_rss_mb_n']:.0f} MB for {n} frames, "
          f"{figures['peak_rss_mb_10n']:.0f} MB for {10 * n} (ratio {figures['ratio']:.3f}); float frames resident "
          f"at once: {largest} ({figures['resident_frame_bytes'] / 2**20:.1f} MB; the whole {10 * n}-frame clip "
          f"would be {figures['whole_clip_float_bytes_10n'] / 2**20:.0f} MB)")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
