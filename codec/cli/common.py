"""What every stv command shares: one clear error line and a non-zero exit instead of a traceback,
and outputs written to a temporary file that is renamed only when complete."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator, NoReturn, TypeVar

import click

from codec.errors import StvError

EXIT_ERROR = 2
F = TypeVar("F", bound=Callable[..., object])


def fail(prog: str, message: str) -> NoReturn:
    click.echo(f"{prog}: error: {message}", err=True)
    sys.exit(EXIT_ERROR)


def clean_errors(prog: str) -> Callable[[F], F]:
    """Decorate a click callback so that expected failures print one line and exit 2."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except StvError as exc:
                fail(prog, str(exc))
            except (OSError, ValueError) as exc:
                fail(prog, f"{type(exc).__name__}: {exc}")
            except KeyboardInterrupt:
                fail(prog, "interrupted")
            except Exception as exc:  # a bug, not bad input: still one line, the traceback on request
                if os.environ.get("STV_DEBUG"):
                    raise
                fail(prog, f"internal error: {type(exc).__name__}: {exc} (set STV_DEBUG=1 for the traceback)")

        return inner  # type: ignore[return-value]

    return wrap


def refuse_overwrite(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise StvError(f"{path} exists; pass -y to overwrite")


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or ".")
    os.close(fd)
    umask = os.umask(0)  # mkstemp makes 0600 files; give the output the permissions a plain open() would
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
