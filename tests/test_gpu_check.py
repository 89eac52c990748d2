"""tools/gpu_check.py: its dry run (the same code on the CPU at a tiny size) runs every section and writes its
figures, the floor is the larger of its two terms, and missing packages without carried wheels are one clear
error. The GPU run itself happens on the device machine (README: "The GPU check")."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import gpu_check  # noqa: E402

SECTIONS = ["wheels", "build", "tests", "ceilings", "synthesis", "stvdec", "encoder"]


def dry_run(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = dict(os.environ, OUT=str(tmp_path), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--dry-run", *extra], env=env,
                          capture_output=True, text=True, timeout=900)
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    return done, figures


def check_decode_figures(figures: dict, plan: gpu_check.Plan) -> None:
    sections = figures["sections"]
    assert figures["dry_run"] is True
    rows = sections["synthesis"]["rows"]
    paths = [path + ("+graph" if graphed else "") for path, graphed in gpu_check.PATHS]
    assert sorted((r["batch"], r["path"]) for r in rows) == sorted((b, p) for b in plan.batches for p in paths)
    for row in rows:
        assert row["fps"] > 0 and 0 < row["fraction_of_floor"] < math.inf and row["floor_s"] > 0
    ceilings = sections["ceilings"]
    assert ceilings["copy_bytes_per_s"] > 0 and ceilings["matmul_flop_per_s"]["float32"] > 0
    assert sections["stvdec"]["fps_h264"] > 0 and sections["stvdec"]["fps_no_output"] > 0
    assert sections["tests"]["counts"]["failed"] == 0


def test_dry_run_runs_the_decoder_sections_and_ends_with_the_table(tmp_path):
    """Everything but the encoder (its stages take a minute on this CPU even at their cheapest; the slow test
    below and tests/test_config_f_end_to_end.py's reduced run cover that path)."""
    done, figures = dry_run(tmp_path, "--skip", "encoder")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert list(figures["sections"]) == [s for s in SECTIONS if s != "encoder"]
    assert all(e["status"] == "ok" for e in figures["sections"].values()), figures["sections"]
    check_decode_figures(figures, gpu_check.DRY_PLAN)
    tail = done.stdout.strip().splitlines()
    assert any("synthesis fps" in line for line in tail[-12:])
    assert tail[-1].startswith("stvdec ")  # the table is the last thing printed
    assert (tmp_path / "gpu_check_tests.log").exists()


@pytest.mark.slow
def test_full_dry_run_with_the_encoder(tmp_path):
    done, figures = dry_run(tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert list(figures["sections"]) == SECTIONS
    check_decode_figures(figures, gpu_check.DRY_PLAN)
    encoder = figures["sections"]["encoder"]
    assert encoder["seconds_per_frame"] > 0 and encoder["peak_rss_gb"] > 0
    assert {"invert", "pose", "attributes"} <= set(encoder["stage_seconds_per_frame"])


def test_floor_is_the_larger_of_arithmetic_and_bytes():
    import torch

    from codec.models.stylegan2 import config_f_channels

    channels = config_f_channels(1024)
    fast_memory = {"copy_bytes_per_s": 1e15, "matmul_flop_per_s": {"float16": 1e12}}
    fast_math = {"copy_bytes_per_s": 1e9, "matmul_flop_per_s": {"float16": 1e18}}
    a = gpu_check.synthesis_floor(channels, 4, torch.float16, fast_memory)
    b = gpu_check.synthesis_floor(channels, 4, torch.float16, fast_math)
    assert a["bound_by"] == "arithmetic" and a["floor_s"] == a["arithmetic_s"] > a["bytes_s"]
    assert b["bound_by"] == "bytes" and b["floor_s"] == b["bytes_s"] > b["arithmetic_s"]
    one = gpu_check.synthesis_floor(channels, 1, torch.float16, fast_memory)
    assert a["flops"] == 4 * one["flops"]  # arithmetic scales with the batch; the weights' bytes do not
    assert one["bytes"] < a["bytes"] < 4 * one["bytes"]


def test_missing_packages_without_wheels_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(gpu_check.CARRIED, "stv_no_such_module", "stv-no-such-module")
    monkeypatch.setattr(gpu_check, "WHEELS", tmp_path / "no-wheels")
    with pytest.raises(RuntimeError, match="stv_no_such_module not installed and no wheels in"):
        gpu_check.install_carried_wheels({})


def test_present_packages_need_no_wheels(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_check, "WHEELS", tmp_path / "no-wheels")
    entry: dict = {}
    gpu_check.install_carried_wheels(entry)  # construct, zstandard, lpips and av are installed here
    assert entry["missing_before"] == []
