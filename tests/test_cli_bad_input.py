"""Every command's bad-input table (issue 11): missing file, empty file, a directory, a non-video / non-.stv, a
truncated mp4, a video with no face, one frame, 0 frames, an unwritable output, an existing output without -y,
and SIGINT in the middle of a write.

A bad case gives exactly one line on stderr ("PROG: error: ..."), a non-zero exit, no traceback, no exception
class or errno, and leaves the output folder as it was (no output, no temporary file). One frame (and a 0-frame
.stv for stvinfo) is valid input: the command succeeds and writes its whole output. Cases that do not apply
to a command are listed in NOT_APPLICABLE with the reason. Commands run in process (click's CliRunner) with the
tiny model and 64x64 inputs; SIGINT needs a real process, sent once the temporary output file exists.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from codec.bitstream import StvReader, StvWriter
from codec.cli import stvdec, stvenc, stveval, stvinfo, weights
from codec.preprocess.video import write_video
from test_decoder_helpers import make_header, write_stream
from test_decoder_helpers import generator  # noqa: F401  (session fixture)

BIN = Path(sys.executable).parent  # the console scripts of this environment
QUICK_ENCODE = ["--pose-steps", "1", "--attribute-steps", "1", "--refine-rounds", "0", "--device", "cpu"]

COMMANDS = {"stvenc": stvenc.main, "stvdec": stvdec.main, "stvinfo": stvinfo.main, "stv-eval": stveval.main,
            "stv-weights": weights.main}

NOT_APPLICABLE = {
    ("stvdec", "no face"): "its input is a .stv stream, which holds no pictures (a face image given to --identity "
                           "without a face is tested in test_decoder_cli.py)",
    ("stvinfo", "no face"): "its input is a .stv stream, which holds no pictures",
    ("stvinfo", "SIGINT"): "its one output, --plot's PNG, is written in one ~0.1 s call through the same "
                           "atomic_output as the other commands: no window to interrupt reliably",
    ("stv-eval", "unwritable output"): "it writes no file (its report goes to stdout)",
    ("stv-eval", "existing output"): "it writes no file",
    ("stv-eval", "SIGINT"): "it writes no file, so no write can be cut short",
    ("stv-weights", "no face"): "convert's input is a checkpoint, not a video",
    ("stv-weights", "one frame"): "a checkpoint has no frames",
    ("stv-weights", "0 frames"): "a checkpoint has no frames",
    ("stv-weights", "SIGINT"): "convert needs an official StyleGAN2 checkpoint (not available offline) to reach its "
                               "write, which goes through the same atomic_output as stvinfo --plot",
}


@dataclass(frozen=True)
class Inputs:
    folder: Path
    stream: Path  # 10 frames of the tiny generator
    one_stv: Path
    zero_stv: Path
    video: Path  # 4 frames, 64x64, lossless
    one_video: Path
    zero_video: Path
    no_face: Path
    truncated_mp4: Path

    def file(self, name: str) -> Path:
        return self.folder / name


def write_zero_frame_video(path: Path) -> None:
    """An mp4 whose header declares an H.264 stream and whose stream holds no frame (VideoWriter writes nothing
    at all without a frame). FFmpeg then reports no video stream: a 0-frame video cannot say more."""
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    container.start_encoding()
    container.mux(stream.encode(None))
    container.close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, generator) -> Inputs:  # noqa: F811
    folder = tmp_path_factory.mktemp("inputs")
    stream, _ = write_stream(folder / "stream.stv", generator)
    one_stv, _ = write_stream(folder / "one.stv", generator, n=1)
    zero_stv = folder / "zero.stv"
    with StvWriter(zero_stv, make_header(generator)):
        pass
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 64, 3), np.uint8) for _ in range(4)]
    write_video(folder / "video.mkv", iter(frames), Fraction(25), lossless=True)
    write_video(folder / "one.mkv", iter(frames[:1]), Fraction(25), lossless=True)
    write_zero_frame_video(folder / "zero.mp4")
    write_video(folder / "gray.mkv", iter([np.full((64, 64, 3), 128, np.uint8)] * 3), Fraction(25), lossless=True)
    write_video(folder / "clip.mp4", iter(frames * 4), Fraction(25))
    whole = (folder / "clip.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    for name in ("empty.mp4", "empty.stv", "empty.pt"):
        (folder / name).write_bytes(b"")
    for name in ("text.mp4", "text.stv", "text.pt", "text.pkl"):
        (folder / name).write_text("hello, this is not what you think it is\n")
    torch.save({"state_dict": {"decoder.x": torch.zeros(1000)}}, folder / "whole.pt")
    whole = (folder / "whole.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    (folder / "a directory").mkdir()
    (folder / "a file").write_text("a regular file where a folder should be\n")
    return Inputs(folder, stream, one_stv, zero_stv, folder / "video.mkv", folder / "one.mkv", folder / "zero.mp4",
                  folder / "gray.mkv", folder / "truncated.mp4")


# Each command's table: case -> (arguments given the inputs and the output path, words of the error line or
# None when the command must succeed). OUT is the output path (in a fresh folder); "existing output" creates it.
def stvenc_args(i: Inputs, video: Path, out: Path, *extra: str) -> list[str]:
    return [str(video), str(out), *QUICK_ENCODE, "-q", *extra]


def stvdec_args(source: Path, out: Path) -> list[str]:
    return [str(source), str(out), "-q", "--device", "cpu"]


def eval_args(ref: Path, test: Path, *extra: str) -> list[str]:
    return [str(ref), str(test), "--no-lpips", "--device", "cpu", "-q", "--json", *extra]


def convert_args(source: Path, out: Path) -> list[str]:
    return ["convert", str(source), "-o", str(out)]


UNWRITABLE = "a file"  # the output's folder is a regular file: unwritable for every user, root included

TABLE = {
    "stvenc": {
        "missing file": (lambda i, o: stvenc_args(i, i.file("missing.mp4"), o), "no such file"),
        "empty file": (lambda i, o: stvenc_args(i, i.file("empty.mp4"), o), "empty file"),
        "directory": (lambda i, o: stvenc_args(i, i.file("a directory"), o), "is a directory"),
        "non-video": (lambda i, o: stvenc_args(i, i.file("text.mp4"), o), "not a readable video"),
        "truncated mp4": (lambda i, o: stvenc_args(i, i.truncated_mp4, o), "truncated.mp4"),
        "no face": (lambda i, o: stvenc_args(i, i.no_face, o), "no face"),
        "one frame": (lambda i, o: stvenc_args(i, i.one_video, o, "--aligned"), None),
        "0 frames": (lambda i, o: stvenc_args(i, i.zero_video, o, "--aligned"), "no video"),
        "unwritable output": (lambda i, o: stvenc_args(i, i.video, i.file(UNWRITABLE) / "x.stv", "--aligned"),
                              "cannot write"),
        "existing output": (lambda i, o: stvenc_args(i, i.video, o, "--aligned"), "-y"),
        "negative max loss": (lambda i, o: stvenc_args(i, i.video, o, "--aligned", "--max-loss-db", "-1"),
                              "positive number of dB"),
    },
    "stvdec": {
        "missing file": (lambda i, o: stvdec_args(i.file("missing.stv"), o), "no such file"),
        "empty file": (lambda i, o: stvdec_args(i.file("empty.stv"), o), "empty file"),
        "directory": (lambda i, o: stvdec_args(i.file("a directory"), o), "is a directory"),
        "non-video": (lambda i, o: stvdec_args(i.file("text.stv"), o), "not a .stv file"),
        "truncated mp4": (lambda i, o: stvdec_args(i.truncated_mp4, o), "not a .stv file"),
        "one frame": (lambda i, o: stvdec_args(i.one_stv, o), None),
        "0 frames": (lambda i, o: stvdec_args(i.zero_stv, o), "no frames"),
        "unwritable output": (lambda i, o: stvdec_args(i.stream, i.file(UNWRITABLE) / "x.mp4"), "cannot write"),
        "existing output": (lambda i, o: stvdec_args(i.stream, o), "-y"),
    },
    "stvinfo": {
        "missing file": (lambda i, o: [str(i.file("missing.stv"))], "no such file"),
        "empty file": (lambda i, o: [str(i.file("empty.stv"))], "empty file"),
        "directory": (lambda i, o: [str(i.file("a directory"))], "is a directory"),
        "non-video": (lambda i, o: [str(i.file("text.stv"))], "not a .stv file"),
        "truncated mp4": (lambda i, o: [str(i.truncated_mp4)], "not a .stv file"),
        "one frame": (lambda i, o: [str(i.one_stv), "--plot", str(o)], None),
        "0 frames": (lambda i, o: [str(i.zero_stv), "--validate"], None),
        "unwritable output": (lambda i, o: [str(i.stream), "--plot", str(i.file(UNWRITABLE) / "x.png")],
                              "cannot write"),
        "existing output": (lambda i, o: [str(i.stream), "--plot", str(o)], "-y"),
    },
    "stv-eval": {
        "missing file": (lambda i, o: eval_args(i.file("missing.mp4"), i.video), "no such file"),
        "empty file": (lambda i, o: eval_args(i.file("empty.mp4"), i.video), "empty file"),
        "directory": (lambda i, o: eval_args(i.video, i.file("a directory")), "is a directory"),
        "non-video": (lambda i, o: eval_args(i.file("text.mp4"), i.video), "not a readable video"),
        "truncated mp4": (lambda i, o: eval_args(i.truncated_mp4, i.truncated_mp4), "truncated.mp4"),
        "no face": (lambda i, o: eval_args(i.no_face, i.no_face), None),  # dlib leaves faceless frames out
        "one frame": (lambda i, o: eval_args(i.one_video, i.video, "--no-identity"), None),
        "0 frames": (lambda i, o: eval_args(i.zero_video, i.video, "--no-identity"), "no video"),
    },
    "stv-weights": {
        "missing file": (lambda i, o: convert_args(i.file("missing.pt"), o), "no such file"),
        "empty file": (lambda i, o: convert_args(i.file("empty.pt"), o), "empty file"),
        "directory": (lambda i, o: convert_args(i.file("a directory"), o), "is a directory"),
        "non-video": (lambda i, o: convert_args(i.file("text.pt"), o), "text.pt"),
        "non-video (pickle)": (lambda i, o: convert_args(i.file("text.pkl"), o), "text.pkl"),
        "truncated mp4": (lambda i, o: convert_args(i.file("truncated.pt"), o), "truncated.pt"),
        "unwritable output": (lambda i, o: convert_args(i.file("whole.pt"), i.file(UNWRITABLE) / "g.safetensors"),
                              "cannot write"),
        "existing output": (lambda i, o: convert_args(i.file("whole.pt"), o), "-y"),
    },
}
OUTPUT_NAMES = {"stvenc": "out.stv", "stvdec": "out.mp4", "stvinfo": "tracks.png", "stv-eval": "unused",
                "stv-weights": "g.safetensors"}
CASES = ["missing file", "empty file", "directory", "non-video", "truncated mp4", "no face", "one frame", "0 frames",
         "unwritable output", "existing output", "SIGINT"]


def test_every_case_is_tested_or_left_out_with_a_reason():
    for prog in COMMANDS:
        for case in CASES:
            tested = case in TABLE[prog] or (case == "SIGINT" and prog in SIGINT_COMMANDS)
            assert tested != ((prog, case) in NOT_APPLICABLE), (prog, case)


def assert_one_clean_line(prog: str, stderr: str, *words: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith(f"{prog}: error: "), line
    assert "Traceback" not in stderr and "Errno" not in line, line
    assert not re.search(r"\b[A-Z]\w*(Error|Exception)\b", line), f"exception class in: {line}"
    for word in words:
        assert word in line, line


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("prog, case", [(p, c) for p in TABLE for c in TABLE[p]], ids=lambda v: v)
def test_bad_input_table(prog, case, inputs, tmp_path, monkeypatch):
    monkeypatch.delenv("STV_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    make_args, words = TABLE[prog][case]
    out = tmp_path / OUTPUT_NAMES[prog]
    if case == "existing output":
        out.write_bytes(b"keep me")
    before = listing(tmp_path)
    result = CliRunner().invoke(COMMANDS[prog], make_args(inputs, out))
    if words is None:
        assert result.exit_code == 0, result.output
        made = listing(tmp_path)
        assert made == before or made == sorted(before + [out.name]), made  # the whole output, no temporary file
        if prog == "stvenc":
            assert len(StvReader(out)) == 1 and not StvReader(out).damage
        return
    assert result.exit_code != 0, result.output
    assert_one_clean_line(prog, result.stderr, words)
    assert listing(tmp_path) == before  # no output, no temporary file
    if case == "existing output":
        assert out.read_bytes() == b"keep me"


# ------------------------------------------------------------------------------------------------ SIGINT

SIGINT_COMMANDS = ("stvenc", "stvdec")


def interrupt_when(argv: list[str], cwd: Path, ready, timeout: float = 180) -> subprocess.CompletedProcess:
    """Start argv, send SIGINT once `ready()` holds, and wait for the process to end."""
    env = dict(os.environ, STV_OPS="reference")  # no first-run compile of the fused kernel in the way
    env.pop("STV_DEBUG", None)
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert process.poll() is None, f"ended before the interrupt: {process.communicate()}"
            assert time.monotonic() < deadline, "never got to the point of interrupting"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".part")]


def test_sigint_while_stvdec_writes_the_video(tmp_path, generator):  # noqa: F811
    """A long stream (the tiny model renders it for minutes): interrupted once the temporary video exists."""
    stream, _ = write_stream(tmp_path / "long.stv", generator, n=20_000)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = [str(BIN / "stvdec"), str(stream), str(out_dir / "long.mkv"), "--lossless", "-q",
            "--device", "cpu"]
    result = interrupt_when(argv, tmp_path, lambda: bool(temporaries(out_dir)))
    assert result.returncode != 0
    assert_one_clean_line("stvdec", result.stderr, "interrupted")
    assert listing(out_dir) == []  # neither the video nor its temporary file


def test_sigint_while_stvenc_works(tmp_path):
    """stvenc writes its .stv in one short step at the very end; interrupted while it encodes (its first stage is
    cached in --work-dir), it prints one line and leaves no output and no temporary file."""
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (64, 64, 3), np.uint8) for _ in range(12)]
    write_video(tmp_path / "clip.mkv", iter(frames), Fraction(25), lossless=True)
    out_dir, work = tmp_path / "out", tmp_path / "work"
    out_dir.mkdir()
    argv = [str(BIN / "stvenc"), "clip.mkv", str(out_dir / "clip.stv"), "--aligned",
            "--work-dir", str(work), "--pose-steps", "200", "--attribute-steps", "100", "--device", "cpu", "-q"]
    result = interrupt_when(argv, tmp_path, lambda: work.is_dir() and any(work.iterdir()))
    assert result.returncode != 0
    assert_one_clean_line("stvenc", result.stderr, "interrupted")
    assert listing(out_dir) == []
