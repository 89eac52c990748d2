"""The commands' shared error handling: one line and exit 2, even for an internal error."""

from __future__ import annotations

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


@pytest.mark.parametrize("error, words", [
    (InputError("clip.mp4: no face in the first frame"), "no face"),
    (RuntimeError("shape mismatch"), "internal error: RuntimeError: shape mismatch"),
])
def test_errors_are_one_line_without_traceback(error, words, monkeypatch):
    monkeypatch.delenv("STV_DEBUG", raising=False)
    result = CliRunner().invoke(_command(error))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("stvtest: error: ") and words in lines[0]


def test_stv_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("STV_DEBUG", "1")
    result = CliRunner().invoke(_command(RuntimeError("boom")))
    assert isinstance(result.exception, RuntimeError)
