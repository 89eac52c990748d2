"""Encoder cost and closed-loop accuracy on a tiny-model clip with known parameters, in one process.

    python tools/bench_encode.py [--frames 16] [--seed 0] [--inverter e4e|project] [--project-steps N]
        [--pose-steps N] [--attribute-steps N] [--refine-rounds N] [--json]

1. Renders a clip from the tiny generator with known ID latent, yaw/pitch and 32 offset tracks
   (codec.encoder.synthetic), writes it losslessly, and encodes it with `stvenc`'s own function (--aligned).
2. Cost: generator forwards per frame and per stage, and the same in full-resolution-forward equivalents: the
   pose and attribute stages run at the early-exit resolution, whose forward costs a fraction of a full one,
   measured here side by side in this process (median of repeated timings). Target: <= 60 per frame.
3. Accuracy: correlation of the decoded yaw/pitch/offsets with the truth (yaw and pitch as offsets from the
   chosen ID frame's true pose, offsets likewise, since the stream is relative to the ID latent), re-synthesis
   PSNR against the clip, and what quantisation costs in dB.
With --json the last line is one JSON object holding at least generator_forwards_per_frame (full-forward
equivalents, the figure the target counts), yaw_corr, pitch_corr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import zoo  # noqa: E402
from codec.bitstream import StvReader  # noqa: E402
from codec.decoder.render import render  # noqa: E402
from codec.encoder.encode import EncodeSettings, encode_video  # noqa: E402
from codec.encoder.attributes import AttributeSettings  # noqa: E402
from codec.encoder.head_pose import PoseSettings  # noqa: E402
from codec.encoder.invert import ProjectSettings  # noqa: E402
from codec.encoder.losses import psnr  # noqa: E402
from codec.encoder.pipeline import Part1Settings  # noqa: E402
from codec.encoder.refine import RefineSettings  # noqa: E402
from codec.encoder.sensitivity import load_channel_table  # noqa: E402
from codec.encoder.synthetic import make_truth, render_truth  # noqa: E402
from codec.preprocess.video import write_video  # noqa: E402

FULL_RES_STAGES = ("invert", "id_select")
LOW_RES_STAGES = ("pose", "attributes")


def forward_cost_ratio(generator, stop_at: int, batch: int = 8, repeats: int = 7) -> float:
    """Time of a forward stopped at `stop_at` over a full forward (same batch, alternating, median)."""
    w = generator.latent_avg.reshape(1, 1, -1).expand(batch, generator.n_latent, -1).contiguous()
    times = {"low": [], "full": []}
    with torch.no_grad():
        for _ in range(repeats):
            for name, stop in (("low", stop_at), ("full", None)):
                start = time.perf_counter()
                generator(w, stop_at=stop)
                times[name].append(time.perf_counter() - start)
    return statistics.median(times["low"]) / statistics.median(times["full"])


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    defaults = EncodeSettings()  # stvenc's own defaults
    parser.add_argument("--inverter", choices=["e4e", "project"], default=defaults.part1.inverter)
    parser.add_argument("--project-steps", type=int, default=defaults.part1.project.steps)
    parser.add_argument("--pose-steps", type=int, default=defaults.part1.pose.steps)
    parser.add_argument("--attribute-steps", type=int, default=defaults.attributes.steps)
    parser.add_argument("--refine-rounds", type=int, default=defaults.refine.rounds,
                        help="joint refinement rounds (0: the paper's stages alone)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args()

    generator = zoo.load_generator("tiny")
    editor = zoo.load_pose_editor(None, "tiny")
    table = load_channel_table(zoo.WEIGHTS_DIR / "tiny-64-channels.json")
    spread = table.channel_spread()
    truth = make_truth(generator, editor, table.indices, spread, args.frames, args.seed)
    frames = render_truth(generator, editor, truth)
    settings = EncodeSettings(generator="tiny", aligned_input=True, part1=Part1Settings(
        inverter=args.inverter, project=ProjectSettings(steps=args.project_steps),
        pose=PoseSettings(steps=args.pose_steps)),
        attributes=AttributeSettings(steps=args.attribute_steps),
        refine=RefineSettings(rounds=args.refine_rounds))

    with tempfile.TemporaryDirectory() as folder:
        video, stream, work = Path(folder) / "clip.mkv", Path(folder) / "clip.stv", Path(folder) / "work"
        pixels = ((frames.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        write_video(video, iter(pixels), Fraction(25), lossless=True)
        started = time.perf_counter()
        report = encode_video(video, stream, settings, work_dir=work, progress=False)
        seconds = time.perf_counter() - started
        reader = StvReader(stream)
        values = np.stack([reader[i] for i in range(len(reader))])
        from safetensors.torch import load_file

        last_stage = "refine" if args.refine_rounds > 0 else "attributes"
        alpha_float = load_file(str(work / f"{last_stage}.safetensors"))["alpha"].numpy()

    alpha, yaw, pitch = values[:, :32], values[:, 32], values[:, 33]
    ref = report.id_frame
    id_latent = torch.from_numpy(reader.header.id_latent.astype(np.float32))

    def resynthesis(alpha_values: np.ndarray) -> float:
        with torch.no_grad():
            images = render(generator, editor, id_latent, table.indices, torch.tensor(alpha_values).float(),
                            torch.tensor(yaw).float(), torch.tensor(pitch).float())
        return float(psnr(images, frames).mean())

    ratio = forward_cost_ratio(generator, settings.part1.stop_at)
    n = args.frames
    per_stage = {k: v / n for k, v in report.generator_forwards.items()}
    refine_res = min(settings.refine.resolution or generator.config.size, generator.config.size)
    refine_ratio = 1.0 if refine_res == generator.config.size else forward_cost_ratio(generator, refine_res)
    stage_cost = {**{k: 1.0 for k in FULL_RES_STAGES}, **{k: ratio for k in LOW_RES_STAGES}, "refine": refine_ratio}
    equivalents = sum(v * stage_cost[k] for k, v in per_stage.items())
    psnr_quantised = resynthesis(alpha)
    psnr_float = resynthesis(alpha_float)
    figures = {
        "frames": n,
        "seconds_per_frame": seconds / n,
        # in full-resolution generator-forward equivalents: what the <= 60 target counts
        "generator_forwards_per_frame": equivalents,
        "generator_forwards_per_frame_raw": sum(per_stage.values()),  # low- and full-resolution forwards alike
        "generator_forwards_per_frame_by_stage": per_stage,
        "low_res_forward_cost": ratio,
        "yaw_corr": correlation(yaw, truth.yaw - truth.yaw[ref]),
        "pitch_corr": correlation(pitch, truth.pitch - truth.pitch[ref]),
        "alpha_corr": correlation(alpha, truth.alpha - truth.alpha[ref]),
        # Each channel's offsets relative to its own mean over the clip: a constant per channel is what the
        # inverted ID latent's own style values absorb (they need not equal the true identity's), so this is
        # the motion the stream carries.
        "alpha_corr_centred": correlation(alpha - alpha.mean(0), truth.alpha - truth.alpha.mean(0)),
        # temporal jitter: RMS of the second differences of (recovered - true) offsets, in each index's spread
        # (the truth's tracks are smooth, so what remains is the encoder's frame-to-frame noise)
        "alpha_jitter": float(np.sqrt(np.mean(np.diff((alpha - truth.alpha) / spread, 2, axis=0) ** 2))),
        "yaw_rmse": float(np.sqrt(np.mean((yaw - (truth.yaw - truth.yaw[ref])) ** 2))),
        "pitch_rmse": float(np.sqrt(np.mean((pitch - (truth.pitch - truth.pitch[ref])) ** 2))),
        "resynthesis_psnr_db": psnr_quantised,
        "quantisation_cost_db": psnr_float - psnr_quantised,
        "id_frame": ref,
        "file_bytes_per_frame": report.bytes_written / n,  # header included
    }
    print(f"{n} frames, {figures['seconds_per_frame']:.2f} s/frame; generator forwards/frame "
          f"{figures['generator_forwards_per_frame_raw']:.1f} ({', '.join(f'{k} {v:.0f}' for k, v in per_stage.items())})"
          f" = {equivalents:.1f} full-forward equivalents (low-res forward costs {ratio:.2f} of a full one; "
          f"target <= 60)")
    print(f"yaw corr {figures['yaw_corr']:.3f} (rmse {figures['yaw_rmse']:.2f}), pitch corr "
          f"{figures['pitch_corr']:.3f} (rmse {figures['pitch_rmse']:.2f}), offsets corr {figures['alpha_corr']:.3f} "
          f"(each channel about its mean: {figures['alpha_corr_centred']:.3f}), jitter {figures['alpha_jitter']:.4f} "
          f"channel spreads")
    print(f"re-synthesis {psnr_quantised:.2f} dB; quantisation costs {figures['quantisation_cost_db']:.4f} dB")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
