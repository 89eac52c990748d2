"""The commands' shared error handling: one line and exit 2, even for an internal error."""

from __future__ import annotations

import errno

import click
import pytest
from click.testing import CliRunner

from codec.cli.common import clean_errors
from codec.errors import InputError


def _command(error: Exception):
    @click.command()
    @clean_errors("stvtest")
    def main() -> None:
        raise error

    return main


@pytest.mark.parametrize("error, line", [
    (InputError("clip.mp4: no face in the first frame"), "clip.mp4: no face in the first frame"),
    (InputError("first line\nsecond line"), "first line"),
    (RuntimeError("shape mismatch"), "internal error: shape mismatch (a bug; set STV_DEBUG=1 for the traceback)"),
    (KeyError("alpha"), "internal error: 'alpha' (a bug; set STV_DEBUG=1 for the traceback)"),
    # system errors in words: never "FileNotFoundError: [Errno 2] ..."
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/weights/manifest.json"),
     "/x/weights/manifest.json: no such file or directory"),
    (PermissionError(errno.EACCES, "Permission denied", "/out/a.mp4"), "/out/a.mp4: permission denied"),
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on the device"),
    (OSError(errno.ECONNRESET, "Connection reset by peer"), "connection reset by peer"),
    (MemoryError(), "out of memory"),
    (KeyboardInterrupt(), "interrupted"),
])
def test_errors_are_one_plain_line_without_traceback(error, line, monkeypatch):
    monkeypatch.delenv("STV_DEBUG", raising=False)
    result = CliRunner().invoke(_command(error))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"stvtest: error: {line}"]
    assert result.stdout == ""


def test_click_usage_errors_stay_click_s(monkeypatch):
    monkeypatch.delenv("STV_DEBUG", raising=False)
    result = CliRunner().invoke(_command(click.BadParameter("expected A:B")))
    assert result.exit_code == 2 and "Invalid value: expected A:B" in result.stderr
    assert "internal error" not in result.stderr


def test_stv_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("STV_DEBUG", "1")
    result = CliRunner().invoke(_command(RuntimeError("boom")))
    assert isinstance(result.exception, RuntimeError)


@pytest.mark.parametrize("quiet", [False, True])
def test_first_compile_of_the_fused_kernel_is_announced_once(quiet, tmp_path, monkeypatch):
    """The first stvdec compiles the CPU kernel (~40 s): one line says so before, unless --quiet. The compile is
    stubbed to fail here, so the decode goes on on the reference path."""
    import torch.utils.cpp_extension

    from codec.cli import stvdec
    from codec.ops import extension
    from test_decoder_helpers import write_stream

    def no_compiler(**kwargs):
        raise RuntimeError("no compiler in this test")

    monkeypatch.setattr(extension, "_loaded", {})
    monkeypatch.setattr(extension, "_announce", None)
    monkeypatch.setattr(extension, "is_built", lambda kind: False)
    monkeypatch.setattr(torch.utils.cpp_extension, "load", no_compiler)
    monkeypatch.delenv("STV_OPS", raising=False)
    from codec import zoo

    stream, _ = write_stream(tmp_path / "one.stv", zoo.load_generator("tiny"), n=1)
    for k in range(2):  # the second run in the same process builds nothing, says nothing
        args = [str(stream), "--png", str(tmp_path / f"frames{k}"), "--device", "cpu"] + (["-q"] if quiet else [])
        result = CliRunner().invoke(stvdec.main, args)
        assert result.exit_code == 0, result.output
        notices = [line for line in result.stderr.splitlines() if "compiling" in line]
        if quiet or k == 1:
            assert notices == []
        else:
            assert len(notices) == 1 and notices[0].startswith("stvdec: compiling the fused CPU kernel, once (about 40 s")


def test_every_console_script_launches_its_command_and_a_ctrl_c_while_importing_is_one_line(monkeypatch, capsys):
    import importlib
    import importlib.util
    import tomllib
    from pathlib import Path

    from codec.cli import launch

    scripts = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    for prog, target in scripts.items():
        module, function = target.split(":")
        assert module == "codec.cli.launch", prog
        calls = []
        monkeypatch.setattr(importlib, "import_module", lambda name: calls.append(name) or type("M", (), {
            "main": staticmethod(lambda: "ran")}))
        assert getattr(launch, function)() == "ran" and calls and calls[0].startswith("codec.cli."), prog
        assert hasattr(importlib.util.find_spec(calls[0]), "loader"), calls[0]

        def interrupted(name):
            raise KeyboardInterrupt

        monkeypatch.setattr(importlib, "import_module", interrupted)
        with pytest.raises(SystemExit) as exit_:
            getattr(launch, function)()
        assert exit_.value.code == 2
        assert capsys.readouterr().err == f"{prog}: error: interrupted\n"
        monkeypatch.undo()
