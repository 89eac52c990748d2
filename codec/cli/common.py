"""What every stv command shares: one clear error line and a non-zero exit instead of a traceback,
and outputs written to a temporary file that is renamed only when complete."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator, NoReturn, TypeVar

import click

from codec import interrupts
from codec.errors import StvError

EXIT_ERROR = 2
F = TypeVar("F", bound=Callable[..., object])


def fail(prog: str, message: str) -> NoReturn:
    click.echo(f"{prog}: error: {message}", err=True)
    sys.exit(EXIT_ERROR)


# Plain words for the errors a user can cause or fix (the rest: the system's own words, lower-cased).
_OS_REASONS = {
    errno.ENOENT: "no such file or directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EEXIST: "already exists",
    errno.EMFILE: "too many open files",
}


def describe_os_error(exc: OSError) -> str:
    """An OSError as a plain sentence: 'PATH: no such file or directory', never '[Errno 2] ...'."""
    reason = _OS_REASONS.get(exc.errno) if exc.errno is not None else None
    if reason is None:
        reason = exc.strerror or str(exc) or "input/output error"
        reason = reason[:1].lower() + reason[1:]
    return f"{exc.filename}: {reason}" if exc.filename else reason


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"


def clean_errors(prog: str) -> Callable[[F], F]:
    """Decorate a click callback so that failures print one plain line on stderr and exit 2.

    Bad input (StvError) and system errors (OSError) say what went wrong in words; anything else is a bug and
    says so, without the exception's class; STV_DEBUG=1 re-raises it for the traceback. click's own usage
    errors pass through to click."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                with interrupts.remembered():
                    result = fn(*args, **kwargs)
                    interrupts.check()  # a Ctrl-C that some __del__ swallowed still ends the command
                return result
            except click.exceptions.ClickException:
                raise
            except KeyboardInterrupt:
                fail(prog, "interrupted")
            except Exception as exc:
                if os.environ.get("STV_DEBUG"):
                    raise
                if isinstance(exc, StvError):
                    fail(prog, _first_line(exc))
                if isinstance(exc, OSError):
                    fail(prog, describe_os_error(exc))
                if isinstance(exc, MemoryError):
                    fail(prog, "out of memory")
                fail(prog, f"internal error: {_first_line(exc)} (a bug; set STV_DEBUG=1 for the traceback)")

        return inner  # type: ignore[return-value]

    return wrap


def refuse_overwrite(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise StvError(f"{path} exists; pass -y to overwrite")


def check_output(path: Path, overwrite: bool) -> None:
    """Before any work: the output may be replaced (-y) and its folder can take the temporary file."""
    refuse_overwrite(path, overwrite)
    if path.is_dir():
        raise StvError(f"cannot write {path}: it is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        why = "is not a directory" if parent.exists() else "does not exist"
        raise StvError(f"cannot write {path}: its folder {parent} {why}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StvError(f"cannot write {path}: no permission to create files in {parent}")


def prepare_kernel(prog: str, device, quiet: bool) -> None:
    """Build (or load from the cache) the fused kernel for `device` now, before any progress bar; a first build
    (~40 s on the CPU) is announced with one line on stderr, unless `quiet`."""
    from codec import ops  # torch: only the commands that render import this

    ops.extension.announce_builds(None if quiet else lambda message: click.echo(f"{prog}: {message}", err=True))
    ops.active_kernel(device)


def check_input_file(path: Path) -> None:
    """An input that must be a non-empty regular file."""
    if not path.exists():
        raise StvError(f"{path}: no such file")
    if path.is_dir():
        raise StvError(f"{path}: is a directory, not a file")
    if path.stat().st_size == 0:
        raise StvError(f"{path}: empty file (0 bytes)")


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
        interrupts.check()
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
