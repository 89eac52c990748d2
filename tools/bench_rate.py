"""Bytes per frame of the raw and the entropy-coded .stv profiles on realistic, seeded parameter traces.

    python tools/bench_rate.py [--clips 3] [--seconds 120] [--chunk-frames 250] [--json]

Trace model (25 fps, natural units, then quantised with the default table: step 2^-6 for every parameter;
see codec/bitstream/quant.py):

- Expressions are driven by 6 hidden drivers (mouth opening, smile, jaw, eye closure, brows, gaze). Each is an
  AR(1) series x_t = 0.97 x_{t-1} + e_t (time constant ~1.3 s, unit stationary std) whose mean level jumps
  at random (speech onsets: Poisson 0.5/s, new level ~ N(0, 1)), smoothed by a 3-frame moving average (faces
  move smoothly, and the attribute encoder warm-starts each frame from the last). The eye driver also gets
  blinks: Poisson 0.3/s, a 5-frame triangular pulse of height 2.5.
- The 32 alphas mix the drivers: each loads on 1-2 drivers with weights ~ N(0, 0.5) (correlated channels, as
  channels of one facial region are), plus its own small AR(1) (phi 0.9, std 0.1) and the encoder's
  per-frame optimisation jitter, white N(0, 0.004^2) StyleSpace units.
- Yaw, pitch (slider units) and roll (degrees): a smooth head motion, velocity v_t = 0.9 v_{t-1} + N(0, s^2)
  integrated into a mean-reverting position p_t = 0.995 p_{t-1} + v_t (s = 0.12 for yaw, 0.08 pitch, 0.06 roll),
  plus white estimation jitter N(0, 0.02^2).

Bytes/frame count the chunks (sync, head, payload, CRC) and exclude the header (a fixed ~17.5 kB cost for an
18x512 float16 latent, which zstd barely shrinks); both with and without the header are printed. Figures are
ratios of two profiles on the same records, measured in one process.

--background adds what the whole picture costs (format 1.2/1.3, README "The whole picture"), on the synthetic
1280x720 scene of tools/make_scene_clip.py: the `bgnd` still (WebP at stvenc's default quality) and the `bgvd`
video (AV1 at stvenc's default rate) of a 10 s and a 60 s clip, each amortised over the clip's frames and added
to the entropy profile's bytes per frame (keys `background_still_bytes`, `background_video_bytes_10s`,
`bytes_per_frame_with_background_10s`, `bytes_per_frame_with_background_video_10s`, and the same for 60 s).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json

import numpy as np

from codec.bitstream import DEFAULT_STEPS, QuantTable, StvHeader, StvReader, StvWriter, quantise

FPS = 25
N_DRIVERS = 6
TARGET_ENTROPY_BYTES_PER_FRAME = 24.0


def smoothed_drivers(rng: np.random.Generator, n: int) -> np.ndarray:
    level = np.zeros(N_DRIVERS)
    x = np.zeros(N_DRIVERS)
    out = np.empty((n, N_DRIVERS))
    jump_p = 0.5 / FPS
    for t in range(n):
        jumps = rng.random(N_DRIVERS) < jump_p
        level = np.where(jumps, rng.normal(0, 1, N_DRIVERS), level)
        x = level + 0.97 * (x - level) + rng.normal(0, np.sqrt(1 - 0.97**2), N_DRIVERS)
        out[t] = x
    blink = np.zeros(n)
    for start in np.flatnonzero(rng.random(n) < 0.3 / FPS):
        pulse = 2.5 * np.array([0.4, 0.8, 1.0, 0.8, 0.4])
        blink[start : start + 5] += pulse[: n - start]
    out[:, 3] += blink
    kernel = np.ones(3) / 3
    return np.stack([np.convolve(out[:, j], kernel, mode="same") for j in range(N_DRIVERS)], axis=1)


def ar1(rng: np.random.Generator, n: int, phi: float, std: float, dims: int) -> np.ndarray:
    x = np.zeros(dims)
    out = np.empty((n, dims))
    for t in range(n):
        x = phi * x + rng.normal(0, std * np.sqrt(1 - phi**2), dims)
        out[t] = x
    return out


def head_motion(rng: np.random.Generator, n: int, step: float) -> np.ndarray:
    p = v = 0.0
    out = np.empty(n)
    for t in range(n):
        v = 0.9 * v + rng.normal(0, step)
        p = 0.995 * p + v
        out[t] = p
    return out


def synthetic_trace(seed: int, n: int) -> np.ndarray:
    """(n, 35) parameters following the model of the module docstring."""
    rng = np.random.default_rng(seed)
    drivers = smoothed_drivers(rng, n)
    mixing = np.zeros((32, N_DRIVERS))
    for k in range(32):
        for j in rng.choice(N_DRIVERS, size=rng.integers(1, 3), replace=False):
            mixing[k, j] = rng.normal(0, 0.5)
    alphas = drivers @ mixing.T + ar1(rng, n, 0.9, 0.1, 32) + rng.normal(0, 0.004, (n, 32))
    pose = np.stack([head_motion(rng, n, s) for s in (0.12, 0.08, 0.06)], axis=1) + rng.normal(0, 0.02, (n, 3))
    return np.concatenate([alphas, pose], axis=1)


def encoded_size(records: np.ndarray, header: StvHeader, profile: str, chunk_frames: int) -> tuple[int, int]:
    out = io.BytesIO()
    with StvWriter(out, header, profile=profile, chunk_frames=chunk_frames) as writer:
        writer.append(records)
    data = out.getvalue()
    reader = StvReader(data)
    assert np.array_equal(reader.records(), records), "profile did not decode to identical records"
    return len(data), reader.header_size


def measure(clips: int, seconds: float, chunk_frames: int, alpha_step: float | None = None) -> dict:
    n = int(seconds * FPS)
    totals = {"raw": [0, 0], "entropy": [0, 0]}
    frames = saturated = 0
    per_clip = []
    for seed in range(clips):
        params = synthetic_trace(seed, n)
        steps = DEFAULT_STEPS.copy()
        if alpha_step is not None:
            steps[:32] = alpha_step
        table = QuantTable.from_data(params, steps=steps)
        records, _, sat = quantise(params, table)
        saturated += sat.total
        header = StvHeader(
            width=1024, height=1024, fps_num=FPS, fps_den=1, generator_name="stylegan2-ffhq-config-f",
            generator_sha256=hashlib.sha256(b"bench").digest(), style_indices=[(6, k) for k in range(32)],
            quant=table, id_latent=np.random.default_rng(seed).normal(0, 1, (18, 512)),
        )
        clip = {}
        for profile in totals:
            size, header_size = encoded_size(records, header, profile, chunk_frames)
            totals[profile][0] += size - header_size
            totals[profile][1] += size
            clip[profile] = (size - header_size) / n
        per_clip.append(clip)
        frames += n
    raw, entropy = totals["raw"][0] / frames, totals["entropy"][0] / frames
    return {
        "clips": clips,
        "frames": frames,
        "chunk_frames": chunk_frames,
        "alpha_step": float(steps[0]),
        "raw_bytes_per_frame": raw,
        "entropy_bytes_per_frame": entropy,
        "entropy_over_raw": entropy / raw,
        "raw_bytes_per_frame_with_header": totals["raw"][1] / frames,
        "entropy_bytes_per_frame_with_header": totals["entropy"][1] / frames,
        "entropy_bytes_per_frame_per_clip": [c["entropy"] for c in per_clip],
        "saturated_values": saturated,
        "target_entropy_bytes_per_frame": TARGET_ENTROPY_BYTES_PER_FRAME,
        "target_met": entropy <= TARGET_ENTROPY_BYTES_PER_FRAME and entropy <= raw / 3,
    }


# --- the whole picture (issue 13): the background's bytes, amortised ----------------------------------------

BACKGROUND_SECONDS = (10, 60)
BACKGROUND_SIZE = (1280, 720)


def background_figures(entropy_bytes_per_frame: float) -> dict:
    """The still's and the video's bytes on the synthetic scene and the bytes per frame with each, amortised
    over 10 s and 60 s clips at 25 fps."""
    import sys
    from fractions import Fraction
    from pathlib import Path

    from codec.bitstream.background import encode_background
    from codec.bitstream.background_video import DEFAULT_KBITS, encode_background_video
    from codec.encoder.encode import EncodeSettings

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_scene_clip import scene_frames

    quality = EncodeSettings().background_quality
    still = len(encode_background(next(scene_frames(*BACKGROUND_SIZE, 1)), quality))
    figures = {"background_size": "x".join(map(str, BACKGROUND_SIZE)), "background_still_quality": quality,
               "background_video_kbits": DEFAULT_KBITS, "background_still_bytes": still}
    for seconds in BACKGROUND_SECONDS:
        frames = seconds * FPS
        video = len(encode_background_video(scene_frames(*BACKGROUND_SIZE, frames), Fraction(FPS), DEFAULT_KBITS))
        figures[f"background_video_bytes_{seconds}s"] = video
        figures[f"bytes_per_frame_with_background_{seconds}s"] = entropy_bytes_per_frame + still / frames
        figures[f"bytes_per_frame_with_background_video_{seconds}s"] = entropy_bytes_per_frame + video / frames
    return figures


def background_lines(r: dict) -> list[str]:
    lines = [f"background ({r['background_size']}, synthetic scene): still {r['background_still_bytes']} bytes "
             f"(WebP q{r['background_still_quality']}); video at {r['background_video_kbits']} kbit/s: "
             + ", ".join(f"{r[f'background_video_bytes_{s}s']} bytes for {s} s" for s in BACKGROUND_SECONDS)]
    for seconds in BACKGROUND_SECONDS:
        still, video = (r[f"bytes_per_frame_with_background{kind}_{seconds}s"] for kind in ("", "_video"))
        lines.append(f"with background over {seconds} s: still {still:.1f} bytes/frame ({still * FPS * 8 / 1000:.1f}"
                     f" kbit/s), video {video:.1f} bytes/frame ({video * FPS * 8 / 1000:.1f} kbit/s)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=3, help="number of seeded traces (seeds 0..clips-1)")
    parser.add_argument("--seconds", type=float, default=120.0, help="length of each trace")
    parser.add_argument("--chunk-frames", type=int, default=250, help="frames per chunk (250 = 10 s at 25 fps)")
    parser.add_argument("--alpha-step", type=float, help="quantisation step of the alphas (default 2^-6)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    parser.add_argument("--background", action="store_true",
                        help="add the background's bytes (still, video) amortised over 10 s and 60 s")
    args = parser.parse_args()
    r = measure(args.clips, args.seconds, args.chunk_frames, args.alpha_step)
    if args.background:
        r.update(background_figures(r["entropy_bytes_per_frame"]))
    print(f"{r['frames']} frames in {r['clips']} seeded clips, {r['chunk_frames']} frames per chunk, "
          f"alpha step {r['alpha_step']:g}")
    print(f"raw:     {r['raw_bytes_per_frame']:7.2f} bytes/frame "
          f"({r['raw_bytes_per_frame_with_header']:.2f} with header)")
    print(f"entropy: {r['entropy_bytes_per_frame']:7.2f} bytes/frame ({r['entropy_bytes_per_frame_with_header']:.2f} "
          f"with header); per clip: " + ", ".join(f"{x:.2f}" for x in r["entropy_bytes_per_frame_per_clip"]))
    print(f"ratio entropy/raw: {r['entropy_over_raw']:.3f} (target <= {TARGET_ENTROPY_BYTES_PER_FRAME:g} B/frame "
          f"and <= 1/3 of raw: {'met' if r['target_met'] else 'NOT met'}); saturated values: {r['saturated_values']}")
    if args.background:
        print("\n".join(background_lines(r)))
    if args.json:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
