"""The console scripts' entry points: import the command's module, then run it.

The commands import torch, OpenCV and PyAV at module level, which takes seconds; a Ctrl-C in that time
arrives before any command's own error handling exists, and used to end in a traceback. Here it ends like a
Ctrl-C later on: one line, exit status 2."""

from __future__ import annotations

import importlib
import sys


def _run(prog: str, module: str):
    try:
        main = importlib.import_module(module).main
    except KeyboardInterrupt:
        print(f"{prog}: error: interrupted", file=sys.stderr)
        sys.exit(2)
    return main()


def stvenc():
    return _run("stvenc", "codec.cli.stvenc")


def stvdec():
    return _run("stvdec", "codec.cli.stvdec")


def stvinfo():
    return _run("stvinfo", "codec.cli.stvinfo")


def stveval():
    return _run("stv-eval", "codec.cli.stveval")


def weights():
    return _run("stv-weights", "codec.cli.weights")


def batch():
    return _run("stv-batch", "codec.cli.batch")
