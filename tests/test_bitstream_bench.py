"""tools/bench_rate.py: runs, ends with one JSON line, and its raw figure is the closed-form size of raw chunks."""

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
         "--chunk-frames", str(chunk), "--json"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    n = seconds * 25
    # raw chunks: 70 bytes per record + 20 bytes (sync, head, CRC) per chunk, nothing else
    assert math.isclose(figures["raw_bytes_per_frame"], 70 + 20 * math.ceil(n / chunk) / n)
    # the entropy profile must at least halve smooth tracks (the full run reports ~22 B/frame; target <= 24)
    assert 0 < figures["entropy_bytes_per_frame"] < figures["raw_bytes_per_frame"] / 2
    assert figures["saturated_values"] == 0
