"""tools/bench_rate.py: runs, ends with one JSON line, and its raw figure is the closed-form size of raw chunks;
its second part (stvenc's own streams, on an 8-frame clip: about 25 s) reports the rate goals' keys."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_rate_json_line():
    seconds, chunk = 20, 100
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench_rate.py"), "--clips", "1", "--seconds", str(seconds),
         "--chunk-frames", str(chunk), "--synthetic-only", "--json"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    n = seconds * 25
    # raw chunks: 70 bytes per record + 20 bytes (sync, head, CRC) per chunk, nothing else
    assert math.isclose(figures["raw_bytes_per_frame"], 70 + 20 * math.ceil(n / chunk) / n)
    # the entropy profile must at least halve smooth tracks (the full run reports ~22 B/frame; target <= 24)
    assert 0 < figures["entropy_bytes_per_frame"] < figures["raw_bytes_per_frame"] / 2
    assert figures["saturated_values"] == 0


def test_bench_rate_streams_report_the_issues_keys(tmp_path):
    """Part 2 on an 8-frame closed-loop clip, no real clips: stvenc's arith streams at the default quality and at
    --max-loss-db 0.05, with the keys the rate goals are read from."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench_rate.py"), "--clips", "1", "--seconds", "4",
         "--closed-loop-frames", "8", "--qualities", "40", "--real-clips", "", "--json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0 < figures["arith_bytes_per_frame"] < 70  # fewer than raw records
    assert 0 <= figures["psnr_loss_db"] < 0.2  # the default quality's loss is about 0.043 dB
    assert figures["psnr_loss_db_at_max_loss"] <= 0.05
    assert 0 < figures["id_latent_bytes"] < 4096
    assert figures["real_clip_bytes_per_frame"] is None  # no real clips asked for
    assert [c["quality"] for c in figures["rd_curve"]] == [40, 50]
    assert figures["rd_curve"][0]["bytes_per_frame"] < figures["rd_curve"][1]["bytes_per_frame"]
    assert figures["arith_encode_us_per_frame"] > 0 and figures["arith_decode_us_per_frame"] > 0
