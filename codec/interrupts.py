"""Ctrl-C that cannot be lost.

Python turns SIGINT into a KeyboardInterrupt at whatever the main thread runs next. When that is a `__del__`
method run by the garbage collector (tqdm's progress bars have one), Python prints the exception and drops it:
the command went on and published its output with exit status 0. So the commands remember the signal here, and
every place that publishes an output (a rename of a temporary file) calls `check()` first."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator

_received = threading.Event()


def _on_sigint(signum, frame) -> None:
    _received.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def remembered() -> Iterator[None]:
    """Within the block, a SIGINT is remembered as well as raised (only the main thread can set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = signal.signal(signal.SIGINT, _on_sigint)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _quiet_about_interrupts(previous_hook)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook


def _quiet_about_interrupts(hook):
    """The swallowed KeyboardInterrupt is remembered, so its 'Exception ignored in ...' traceback is noise."""
    def unraisable(info) -> None:
        if not isinstance(info.exc_value, KeyboardInterrupt):
            hook(info)
    return unraisable


def check() -> None:
    """Raise KeyboardInterrupt if a SIGINT arrived in the current `remembered()` block, even one swallowed."""
    if _received.is_set():
        raise KeyboardInterrupt
