"""stv-batch (issue 15): many clips, one process per clip, stvenc's bytes, nothing lost, resumable."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from codec.batch import FAULT_ENV, expand_inputs
from codec.bitstream import StvReader
from codec.cli.batch import main

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# cheap stvenc settings: this checks the batch's wiring, the encoder's own tests check the encoding
OPTIONS = ["--aligned", "--frames", "0:3", "--pose-steps", "2", "--attribute-steps", "1", "--refine-rounds", "0"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Three tiny-model clips and one file that is not a video."""
    folder = tmp_path_factory.mktemp("clips")
    for i, seed in enumerate((1, 2, 3)):
        made = subprocess.run([sys.executable, str(ROOT / "tools" / "make_demo_clip.py"), f"clip{i}.mkv",
                               "--frames", "3", "--seed", str(seed), "--truth", f"truth{i}.json"], cwd=folder, capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
    (folder / "broken.mp4").write_bytes(b"not a video at all" * 10)
    return folder


def batch(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, ["encode", *args], env=env)


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_inputs_from_folders_files_and_lists(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "b.mkv").write_bytes(b"")
    (tmp_path / "notes.md").write_bytes(b"")
    (tmp_path / "list.txt").write_text("# clips\na.mp4 0:8\n\nb.mkv\n")
    (tmp_path / "list.csv").write_text("input,frames\na.mp4,2:4\n")
    out = tmp_path / "out"
    assert [(c.input.name, c.frames) for c in expand_inputs([tmp_path], out)] == [("a.mp4", None), ("b.mkv", None)]
    assert [(c.input.name, c.frames) for c in expand_inputs([tmp_path / "list.txt"], out)] == [("a.mp4", "0:8"),
                                                                                            ("b.mkv", None)]
    (clip,) = expand_inputs([tmp_path / "list.csv"], out)
    assert (clip.input, clip.output, clip.frames) == (tmp_path / "a.mp4", out / "a.stv", "2:4")
    from codec.errors import InputError

    with pytest.raises(InputError, match="would both write"):
        expand_inputs([tmp_path / "a.mp4", tmp_path / "list.csv"], out)


def test_a_batch_encodes_each_clip_as_stvenc_does_and_one_bad_clip_fails_alone(clips, tmp_path):
    out = tmp_path / "out"
    result = batch(str(clips), str(out), "--jobs", "2", "-q", "--plot", str(tmp_path / "report.png"), "--", *OPTIONS)
    assert result.exit_code == 1, result.output  # one clip failed
    rows = {Path(c["input"]).name: c for c in report(out)["clips"]}
    assert {n: r["status"] for n, r in rows.items()} == {"broken.mp4": "failed", "clip0.mkv": "ok",
                                                        "clip1.mkv": "ok", "clip2.mkv": "ok"}
    assert "broken.mp4" in rows["broken.mp4"]["error"] and "\n" not in rows["broken.mp4"]["error"]
    assert rows["broken.mp4"]["attempts"] == 1  # a clean failure is not retried
    assert report(out)["totals"]["ok"] == 3 and (tmp_path / "report.png").stat().st_size > 1000
    for name in ("clip0", "clip1", "clip2"):
        assert StvReader(out / f"{name}.stv").validate() == [] and rows[f"{name}.mkv"]["frames"] == 3
    assert not list(out.glob("*.part")) and not list(out.glob(".*.part"))
    # byte for byte what stvenc writes for the same clip, output path and options
    alone = out / "clip1.stv"
    batch_bytes = alone.read_bytes()
    alone.unlink()
    # (the same command line: the stream's note holds it; stvenc's progress bars go to stderr)
    made = subprocess.run([str(BIN / "stvenc"), str(clips / "clip1.mkv"), str(alone), *OPTIONS],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert alone.read_bytes() == batch_bytes


@pytest.mark.slow  # five worker processes, each loading torch and the models
def test_a_killed_worker_is_retried_and_leaves_nothing_partial(clips, tmp_path):
    out = tmp_path / "out"
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(clips / "clip0.mkv", one / "clip0.mkv")
    # the worker dies (os._exit) right after inversion, on its first two attempts: the third one succeeds
    result = batch(str(one), str(out), "-q", "--retries", "2", "--", *OPTIONS, env={FAULT_ENV: "clip0.mkv:invert:2"})
    assert result.exit_code == 0, result.output
    (row,) = report(out)["clips"]
    assert row["status"] == "ok" and row["attempts"] == 3 and StvReader(out / "clip0.stv").validate() == []
    shutil.rmtree(out)
    result = batch(str(one), str(out), "-q", "--retries", "1", "--", *OPTIONS, env={FAULT_ENV: "clip0.mkv:invert:5"})
    assert result.exit_code == 1
    (row,) = report(out)["clips"]
    assert row["status"] == "failed" and row["attempts"] == 2 and "worker died" in row["error"]
    assert not (out / "clip0.stv").exists() and not list(out.glob(".*.part"))


@pytest.mark.slow  # five worker processes
def test_resume_encodes_only_what_is_missing_or_changed(clips, tmp_path):
    out = tmp_path / "out"
    some = tmp_path / "some"
    some.mkdir()
    for name in ("clip0.mkv", "clip1.mkv"):
        shutil.copy(clips / name, some / name)
    assert batch(str(some), str(out), "-q", "--", *OPTIONS).exit_code == 0
    first = (out / "clip0.stv").stat().st_mtime_ns
    (out / "clip1.stv").unlink()  # as if the batch had been interrupted before this clip
    result = batch(str(some), str(out), "-q", "--resume", "--", *OPTIONS)
    assert result.exit_code == 0, result.output
    statuses = {Path(c["input"]).name: c["status"] for c in report(out)["clips"]}
    assert statuses == {"clip0.mkv": "skipped", "clip1.mkv": "ok"}
    assert (out / "clip0.stv").stat().st_mtime_ns == first
    # other options: nothing is skipped
    result = batch(str(some), str(out), "-q", "--resume", "--", *OPTIONS[:-1], "1")
    assert {c["status"] for c in report(out)["clips"]} == {"ok"}


@pytest.mark.slow  # a local Ray takes a while to start and each task loads torch
def test_the_ray_engine_gives_the_local_engines_bytes(clips, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "out"
    assert batch(str(clips), str(out), "-q", "--", *OPTIONS).exit_code == 1  # broken.mp4 fails
    local = {made.name: made.read_bytes() for made in out.glob("*.stv")}
    shutil.rmtree(out)  # the same output paths again: a stream's note holds its stvenc command line
    result = batch(str(clips), str(out), "-q", "--engine", "ray", "--jobs", "2", "--", *OPTIONS)
    assert result.exit_code == 1, result.output
    rows = {Path(c["input"]).name: c for c in report(out)["clips"]}
    assert {n: r["status"] for n, r in rows.items()} == {"broken.mp4": "failed", "clip0.mkv": "ok",
                                                        "clip1.mkv": "ok", "clip2.mkv": "ok"}
    assert "broken.mp4" in rows["broken.mp4"]["error"]
    assert len(local) == 3 and {made.name: made.read_bytes() for made in out.glob("*.stv")} == local
