"""Bytes per frame of the .stv profiles: on seeded parameter traces, and on what stvenc writes.

    python tools/bench_rate.py [--clips 3] [--seconds 120] [--chunk-frames 250] [--json]
        [--closed-loop-frames 64] [--qualities 30,40,50,60,70] [--plot rd.png]
        [--media ../shared/media] [--real-frames 0:32] [--real-clips d0,s20] [--work-dir DIR]

Part 1, synthetic traces (below): raw, entropy and arith profiles on the same records, quantised with the old
fixed table (step 2^-6 for every parameter), so the three coders are compared on equal input.

Part 2, stvenc's own streams (tiny model, `--profile arith`, the default `--latent compact`):
- the closed-loop bench clip: tools/bench_encode.py's matched truth (a clip the tiny generator renders with known
  parameters, written losslessly), --closed-loop-frames long (64: per-chunk costs, the 20-byte chunk frame and
  the first record, then weigh as they do in a stream's 250-frame chunks; bench_encode's 16 frames pay them 4x),
  encoded at each --qualities value (the stages are cached, only quantisation is redone) and once with
  --max-loss-db 0.05: bytes per frame of the chunks, decoded PSNR loss against the unquantised parameters;
- the real clips of --media (never committed), frames --real-frames, at the default quality.
For each stream: bytes per frame without the header, with it (the header spread over the stream's frames), and
amortised over 10 s and 60 s at the stream's frame rate (header + that many frames of its chunk rate); the ID
latent's bytes. The bitstream layer's arith encode and decode time per frame is measured on the closed-loop
records. --plot draws bytes/frame against decoded PSNR loss over the qualities (matplotlib).

--json ends with one JSON line: the part-1 figures, and arith_bytes_per_frame and psnr_loss_db (closed loop,
default quality), arith_bytes_per_frame_at_max_loss (closed loop, --max-loss-db 0.05) with its loss,
id_latent_bytes (closed loop, compact) and id_latent_loss_db, real_clip_bytes_per_frame (mean over the real
clips), arith_encode_us_per_frame, arith_decode_us_per_frame, and the per-stream figures.

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
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec.bitstream import DEFAULT_STEPS, QuantTable, StvHeader, StvReader, StvWriter, quantise  # noqa: E402
from codec.bitstream.chunk import decode_payload, encode_payload  # noqa: E402
from codec.bitstream.header import EXT_COMPACT_LATENT  # noqa: E402
from codec.bitstream.schema import PROFILE_ARITH  # noqa: E402

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
    totals = {"raw": [0, 0], "entropy": [0, 0], "arith": [0, 0]}
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
        "trace_arith_bytes_per_frame": totals["arith"][0] / frames,
        "trace_arith_bytes_per_frame_with_header": totals["arith"][1] / frames,
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


# --- part 2: the streams stvenc writes ---------------------------------------------------------------------------

AMORTISED_SECONDS = (10, 60)
MAX_LOSS_DB = 0.05  # the goal: a decoded-PSNR loss of at most 0.05 dB


def stream_figures(path: Path) -> dict:
    """Sizes of one .stv: chunk bytes per frame, with the header, amortised over 10 s and 60 s, the ID latent."""
    reader = StvReader(path)
    header = reader.header
    frames = len(reader)
    chunk_rate = (reader.file_size - reader.header_size) / frames
    fps = header.fps_num / header.fps_den
    compact = header.extension(EXT_COMPACT_LATENT)
    figures = {
        "frames": frames,
        "header_bytes": reader.header_size,
        "id_latent_bytes": len(compact) if compact is not None else None,
        "bytes_per_frame": chunk_rate,
        "bytes_per_frame_with_header": reader.file_size / frames,
    }
    for seconds in AMORTISED_SECONDS:
        n = round(fps * seconds)
        figures[f"bytes_per_frame_amortised_{seconds}s"] = (reader.header_size + chunk_rate * n) / n
    return figures


def closed_loop_clip(folder: Path, frames: int, seed: int = 0) -> Path:
    """tools/bench_encode.py's matched truth: the tiny generator's rendering of known parameters, lossless."""
    from codec import zoo
    from codec.encoder.sensitivity import load_channel_table
    from codec.encoder.synthetic import make_truth, render_truth
    from codec.preprocess.video import write_video

    video = folder / f"closed-loop-{frames}.mkv"
    if video.is_file():  # kept in --work-dir: the muxer writes a new file id each time, which would change the
        return video  # clip's digest and so miss every cached stage
    generator, editor = zoo.load_generator("tiny"), zoo.load_pose_editor(None, "tiny")
    table = load_channel_table(zoo.WEIGHTS_DIR / "tiny-64-channels.json")
    truth = make_truth(generator, editor, table.indices, table.channel_spread(), frames, seed)
    pixels = ((render_truth(generator, editor, truth).clamp(-1, 1) + 1) * 127.5).round().byte()
    write_video(video, iter(pixels.permute(0, 2, 3, 1).numpy()), Fraction(25), lossless=True)
    return video


def encode_stream(video: Path, out: Path, work: Path, aligned: bool, frames: tuple[int, int | None] = (0, None),
                  **rate) -> dict:
    """stvenc's function with its defaults and --profile arith (plus `rate`: quality, max_loss_db, latent); the
    stream's sizes and the encoder's measured losses."""
    from codec.encoder.encode import EncodeSettings, encode_video

    settings = EncodeSettings(generator="tiny", aligned_input=aligned, profile="arith", frames=frames, **rate)
    report = encode_video(video, out, settings, work_dir=work, progress=False)
    return {**stream_figures(out), "quality": report.quality, "psnr_loss_db": report.psnr_loss_db,
            "psnr_exact_db": report.psnr_exact_db, "latent": report.latent,
            "id_latent_bytes": report.id_latent_bytes, "id_latent_loss_db": report.latent_loss_db}


def rd_curve(video: Path, folder: Path, qualities: list[float]) -> list[dict]:
    return [encode_stream(video, folder / f"q{q:g}.stv", folder / "work", True, quality=q) for q in qualities]


def bitstream_speed(records: np.ndarray, repeats: int = 3) -> dict:
    """The arith profile's encode and decode time per frame (µs), best of `repeats`, one chunk of the records."""
    timings = {"encode": [], "decode": []}
    for _ in range(repeats):
        started = time.perf_counter()
        payload = encode_payload(records, PROFILE_ARITH)
        timings["encode"].append(time.perf_counter() - started)
        started = time.perf_counter()
        decode_payload(payload, PROFILE_ARITH, len(records))
        timings["decode"].append(time.perf_counter() - started)
    return {f"arith_{k}_us_per_frame": min(v) / len(records) * 1e6 for k, v in timings.items()}


def real_clips(media: Path, names: list[str], frames: tuple[int, int | None], folder: Path) -> list[dict]:
    """Each clip at the default quality and with --max-loss-db 0.05 (the second reuses the first's stages)."""
    out = []
    for name in names:
        video = media / f"{name}.mp4"
        if not video.is_file():
            print(f"{video}: not found, skipped")
            continue
        work = folder / f"work-{name}"
        default = encode_stream(video, folder / f"{name}.stv", work, False, frames)
        bounded = encode_stream(video, folder / f"{name}-max-loss.stv", work, False, frames, max_loss_db=MAX_LOSS_DB)
        out.append({"clip": name, **default, "at_max_loss": bounded})
    return out


def plot_rd(curve: list[dict], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot"
    figure, axes = plt.subplots(figsize=(5, 3.5))
    axes.plot([c["psnr_loss_db"] for c in curve], [c["bytes_per_frame"] for c in curve], "o-")
    for c in curve:
        axes.annotate(f"Q{c['quality']:g}", (c["psnr_loss_db"], c["bytes_per_frame"]), fontsize=8)
    axes.set_xscale("log")
    axes.set_xlabel("decoded PSNR loss against unquantised parameters (dB)")
    axes.set_ylabel("bytes per frame (arith chunks)")
    axes.set_title("stv rate-distortion, closed-loop tiny clip")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return f"{path}: rate-distortion plot"


def frame_range(text: str) -> tuple[int, int | None]:
    first, _, last = text.partition(":")
    return int(first or 0), int(last) if last else None


def measure_streams(args: argparse.Namespace, folder: Path) -> dict:
    from codec.encoder.rate import DEFAULT_QUALITY

    video = closed_loop_clip(folder, args.closed_loop_frames)
    qualities = sorted({*args.qualities, DEFAULT_QUALITY})
    curve = rd_curve(video, folder, qualities)
    default = next(c for c in curve if c["quality"] == DEFAULT_QUALITY)
    bounded = encode_stream(video, folder / "max-loss.stv", folder / "work", True, max_loss_db=MAX_LOSS_DB)
    records = StvReader(folder / f"q{DEFAULT_QUALITY:g}.stv").records()
    real = real_clips(args.media, args.real_clips, args.real_frames, folder) if args.real_clips else []
    figures = {
        "closed_loop_frames": args.closed_loop_frames,
        "arith_bytes_per_frame": default["bytes_per_frame"],
        "psnr_loss_db": default["psnr_loss_db"],
        "arith_bytes_per_frame_at_max_loss": bounded["bytes_per_frame"],
        "psnr_loss_db_at_max_loss": bounded["psnr_loss_db"],
        "quality_at_max_loss": bounded["quality"],
        "id_latent_bytes": default["id_latent_bytes"],
        "id_latent_loss_db": default["id_latent_loss_db"],
        # the goal's condition (a loss of at most 0.05 dB), as for the closed-loop clip; and at the default quality
        "real_clip_bytes_per_frame": float(np.mean([c["at_max_loss"]["bytes_per_frame"] for c in real]))
        if real else None,
        "real_clip_bytes_per_frame_default_quality": float(np.mean([c["bytes_per_frame"] for c in real]))
        if real else None,
        **bitstream_speed(records),
        "rd_curve": curve,
        "max_loss_stream": bounded,
        "real_clips": real,
    }
    if args.plot:
        figures["plot"] = plot_rd(curve, args.plot)
    return figures


def print_streams(f: dict) -> None:
    print(f"closed-loop clip, {f['closed_loop_frames']} frames, arith, compact ID latent "
          f"({f['id_latent_bytes']} bytes, {f['id_latent_loss_db']:.4f} dB):")
    for c in f["rd_curve"] + [f["max_loss_stream"]]:
        print(f"  quality {c['quality']:5.1f}: {c['bytes_per_frame']:6.2f} bytes/frame "
              f"({c['bytes_per_frame_with_header']:.2f} with header; amortised 10 s "
              f"{c['bytes_per_frame_amortised_10s']:.2f}, 60 s {c['bytes_per_frame_amortised_60s']:.2f}), "
              f"decoded PSNR loss {c['psnr_loss_db']:.4f} dB")
    for clip in f["real_clips"]:
        for c in (clip, clip["at_max_loss"]):
            print(f"  real clip {clip['clip']}, {c['frames']} frames, quality {c['quality']:.1f}: "
                  f"{c['bytes_per_frame']:.2f} bytes/frame ({c['bytes_per_frame_with_header']:.2f} with header; "
                  f"amortised 10 s {c['bytes_per_frame_amortised_10s']:.2f}, 60 s "
                  f"{c['bytes_per_frame_amortised_60s']:.2f}), loss {c['psnr_loss_db']:.4f} dB at "
                  f"{c['psnr_exact_db']:.2f} dB, ID latent {c['id_latent_bytes']} bytes ({c['id_latent_loss_db']:.4f} dB)")
    print(f"  arith bitstream layer: encode {f['arith_encode_us_per_frame']:.0f} us/frame, decode "
          f"{f['arith_decode_us_per_frame']:.0f} us/frame")
    if "plot" in f:
        print(f"  {f['plot']}")


# --- the whole picture (issue 13): the background's bytes, amortised ----------------------------------------

BACKGROUND_SECONDS = AMORTISED_SECONDS
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
    parser.add_argument("--closed-loop-frames", type=int, default=64, help="frames of the closed-loop clip")
    parser.add_argument("--qualities", type=lambda t: [float(v) for v in t.split(",")], default=[30, 40, 60, 70],
                        help="qualities of the rate-distortion curve (the default quality is always added)")
    parser.add_argument("--plot", type=Path, help="draw bytes/frame against decoded PSNR loss into this PNG")
    parser.add_argument("--media", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "media")
    parser.add_argument("--real-clips", type=lambda t: [v for v in t.split(",") if v], default=["d0", "s20"],
                        help="clips of --media to encode (names without .mp4; empty: none)")
    parser.add_argument("--real-frames", type=frame_range, default=(0, 32), metavar="A:B")
    parser.add_argument("--work-dir", type=Path, help="keep encodes and stage caches here (else a temporary dir)")
    parser.add_argument("--synthetic-only", action="store_true", help="part 1 only (no encodes)")
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
    print(f"arith:   {r['trace_arith_bytes_per_frame']:7.2f} bytes/frame "
          f"({r['trace_arith_bytes_per_frame_with_header']:.2f} with header)")
    if not args.synthetic_only:
        if args.work_dir:
            args.work_dir.mkdir(parents=True, exist_ok=True)
            streams = measure_streams(args, args.work_dir)
        else:
            with tempfile.TemporaryDirectory(prefix="stv-bench-rate-") as folder:
                streams = measure_streams(args, Path(folder))
        print_streams(streams)
        r.update(streams)
    if args.background:
        print("\n".join(background_lines(r)))
    if args.json:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
