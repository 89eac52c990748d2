"""The fused CPU kernel, required where it must build: under CI=true (CI has a compiler) a failed build fails the
test that needs the kernel; elsewhere that test is skipped with the build's reason. A skip there would otherwise
let a parity test compare the reference path with itself."""

from __future__ import annotations

import os

import pytest

from codec.ops import extension


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def cpu_extension():
    """The built CPU extension module (fails under CI=true, skips elsewhere, when it does not build)."""
    module, why = extension.load("cpu")
    if module is None:
        message = f"CPU extension unavailable: {why}"
        if in_ci():
            pytest.fail(f"{message} (CI=true: the extension must build where a compiler exists)", pytrace=False)
        pytest.skip(message)
    return module
