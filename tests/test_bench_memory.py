"""tools/bench_memory.py at the tiny size: its figures, their arithmetic, and the window it reports is the one the
encoder read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_memory_reports_peaks_and_the_window_read(tmp_path):
    window = 3
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_memory.py"), "--size", "64", "--frames", "1",
                           "--window", str(window), "--json"], capture_output=True, text=True, timeout=1200,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert "stand-in generator" in lines[0] and "stand-in generator" in figures["stand_in"]
    assert figures["size"] == 64 and figures["frames_n"] == 1
    assert figures["peak_rss_mb_n"] > 0 and figures["peak_rss_mb_10n"] > 0
    assert abs(figures["ratio"] - figures["peak_rss_mb_10n"] / figures["peak_rss_mb_n"]) < 1e-9
    assert figures["frame_float_bytes"] == 3 * 64 * 64 * 4
    # the 10-frame clip is read 3 frames at a time: --window bounds what the stages hold, and the bench sees it
    assert figures["window_frames"] == window
    assert figures["resident_frame_bytes"] == window * figures["frame_float_bytes"]
    assert figures["resident_frame_bytes"] < figures["whole_clip_float_bytes_10n"]


def test_bench_memory_refuses_a_zero_window():
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_memory.py"), "--window", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "at least 1" in done.stderr and "Traceback" not in done.stderr
