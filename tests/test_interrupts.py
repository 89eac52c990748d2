"""A Ctrl-C that arrives while the garbage collector runs a __del__ is dropped by Python; the commands must still
stop and publish nothing (found by CI: stvenc, interrupted while a tqdm bar was collected, wrote its .stv and
exited 0)."""

from __future__ import annotations

import gc
import os
import signal
import time

import pytest

from codec import interrupts
from codec.cli.common import atomic_output


class _SignalledOnCollection:
    """Its __del__ is where the SIGINT lands, as in tqdm.__del__."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs here, inside __del__, and its exception is swallowed


def _swallowed_interrupt() -> None:
    _SignalledOnCollection()
    gc.collect()


def test_an_interrupt_swallowed_by_del_is_remembered(capsys):
    with interrupts.remembered():
        _swallowed_interrupt()  # no exception gets here: Python dropped it
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
    assert "KeyboardInterrupt" not in capsys.readouterr().err  # the dropped exception's traceback is not shown


def test_a_new_block_forgets_an_old_interrupt():
    with interrupts.remembered():
        _swallowed_interrupt()
    with interrupts.remembered():
        interrupts.check()  # nothing arrived in this block


def test_atomic_output_publishes_nothing_after_a_swallowed_interrupt(tmp_path):
    out = tmp_path / "out.bin"
    with interrupts.remembered(), pytest.raises(KeyboardInterrupt):
        with atomic_output(out) as tmp:
            tmp.write_bytes(b"complete")
            _swallowed_interrupt()
    assert list(tmp_path.iterdir()) == []


def test_the_handler_is_put_back():
    before = signal.getsignal(signal.SIGINT)
    with interrupts.remembered():
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before
