"""stv-batch's throughput and overhead, measured in one run (issue 15).

    python tools/bench_batch.py [--clips 4] [--frames 3] [--json]

Makes --clips tiny-model demo clips, then encodes them three ways with the same cheap stvenc options:
`encode_video` called directly in this process, one clip after another (the floor: no engine at all), and the
local engine of stv-batch with 1 and with 2 jobs. Prints clips per minute for each, the 2-job/1-job ratio, and the
overhead per clip the engine adds over the direct calls (a process per clip that imports torch and loads the
models, and the resume record). The machine is shared and noisy: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codec.batch import expand_inputs, run_batch, stvenc_args  # noqa: E402

OPTIONS = ["--aligned", "--pose-steps", "2", "--attribute-steps", "1", "--refine-rounds", "0"]


def make_clips(folder: Path, count: int, frames: int) -> list[Path]:
    clips = []
    for i in range(count):
        clip = folder / f"clip{i}.mkv"
        subprocess.run([sys.executable, str(ROOT / "tools" / "make_demo_clip.py"), str(clip), "--frames",
                        str(frames), "--seed", str(i + 1), "--truth", str(folder / f"truth{i}.json")],
                       check=True, capture_output=True)
        clips.append(clip)
    return clips


def direct(clips: list[Path], out: Path) -> float:
    """Seconds for encode_video called in this process, clip after clip (models loaded once per call, as stvenc
    does; the kernel built once)."""
    from codec.cli import stvenc

    out.mkdir()
    started = time.perf_counter()
    for clip in expand_inputs([str(c) for c in clips], out):
        args = stvenc_args(clip, OPTIONS)
        params = dict(stvenc.main.make_context("stvenc", list(args)).params, quiet=True)
        stvenc.encode(params, note="bench")
    return time.perf_counter() - started


def batched(clips: list[Path], out: Path, jobs: int) -> float:
    out.mkdir()
    started = time.perf_counter()
    report = run_batch(expand_inputs([str(c) for c in clips], out), OPTIONS, jobs=jobs)
    seconds = time.perf_counter() - started
    if report.totals["ok"] != len(clips):
        raise SystemExit(f"bench_batch: {report.totals['failed']} clips failed: "
                         f"{[c.error for c in report.clips if c.error]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clips = make_clips(folder, args.clips, args.frames)
        seconds = {"direct": direct(clips, folder / "direct"),
                   "jobs_1": batched(clips, folder / "jobs1", 1),
                   "jobs_2": batched(clips, folder / "jobs2", 2)}
    per_minute = {k: round(60 * args.clips / v, 2) for k, v in seconds.items()}
    figures = {
        "clips": args.clips, "frames_per_clip": args.frames,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "clips_per_minute": per_minute,
        "jobs_2_over_jobs_1": round(per_minute["jobs_2"] / per_minute["jobs_1"], 3),
        "engine_overhead_s_per_clip": round((seconds["jobs_1"] - seconds["direct"]) / args.clips, 2),
    }
    for name in seconds:
        print(f"{name:>7}: {seconds[name]:7.1f} s, {per_minute[name]:6.2f} clips/min")
    print(f"2 jobs / 1 job: {figures['jobs_2_over_jobs_1']:.2f}x; engine overhead "
          f"{figures['engine_overhead_s_per_clip']:.1f} s per clip over calling encode_video directly")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
