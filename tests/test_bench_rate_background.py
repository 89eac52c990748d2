"""tools/bench_rate.py --background: the background's bytes amortised over a clip, on the synthetic scene (run
here at a small size and length; the tool's own run uses 1280x720 and 10 s / 60 s)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_rate", ROOT / "tools" / "bench_rate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_background_figures_amortise_still_and_video(monkeypatch):
    bench = load_bench()
    monkeypatch.setattr(bench, "BACKGROUND_SECONDS", (1, 2))
    monkeypatch.setattr(bench, "BACKGROUND_SIZE", (320, 180))
    r = bench.background_figures(20.0)
    still = r["background_still_bytes"]
    assert 1000 < still < 100_000
    for seconds in (1, 2):
        video, frames = r[f"background_video_bytes_{seconds}s"], seconds * bench.FPS
        assert video > 100
        assert r[f"bytes_per_frame_with_background_{seconds}s"] == pytest.approx(20.0 + still / frames)
        assert r[f"bytes_per_frame_with_background_video_{seconds}s"] == pytest.approx(20.0 + video / frames)
    assert r["background_video_bytes_2s"] > r["background_video_bytes_1s"]
    assert len(bench.background_lines(r)) == 3
