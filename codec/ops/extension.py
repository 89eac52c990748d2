"""JIT build and cache of the csrc/ extensions (torch.utils.cpp_extension + ninja).

Builds go to `$STV_HOME/torch_extensions/<name>-<torch version>-<source digest>` (STV_HOME defaults to
~/.cache/stv), so a changed source or torch rebuilds and an unchanged one loads in well under a second. The
digest covers the sources' folder too: ninja rebuilds when a build's command names other source paths, so two
installs sharing one STV_HOME (a checkout and a wheel, two worktrees) would otherwise rebuild each other's.
A failed build is remembered for the process (with its reason) and never retried in a loop.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch

from codec.resources import data_dir

log = logging.getLogger(__name__)

CSRC = data_dir("csrc")
SOURCES = {
    "cpu": ["modulated_conv_cpu.cpp"],
    "cuda": ["modulated_conv_cuda.cu"],
}
_loaded: dict[str, tuple[ModuleType | None, str]] = {}
# How long a first build takes (the CPU one measured at 38 s on a 2-core machine), for the notice before it.
BUILD_TIME = {"cpu": "about 40 s", "cuda": "a few minutes"}
_announce: Callable[[str], None] | None = None


def stv_home() -> Path:
    """The user cache root: $STV_HOME, else $XDG_CACHE_HOME/stv, else ~/.cache/stv."""
    if os.environ.get("STV_HOME"):
        return Path(os.environ["STV_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stv"


def _digest(paths: list[Path], extra: bytes = b"") -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    h.update(extra)
    return h.hexdigest()[:12]


# -fno-trapping-math lets the compiler turn the epilogues' per-value selects (leaky ReLU, borders) into
# branch-free vector code: with the default, GCC keeps a data-dependent branch per value, which made the
# epilogue cost as much as the conv on small layers. No code here reads floating-point exception flags.
CFLAGS = {"cpu": ["-O3", "-fno-trapping-math"], "cuda": ["-O3"]}


def build_dir(kind: str) -> Path:
    sources = [CSRC / s for s in SOURCES[kind]]
    flags = " ".join(CFLAGS[kind]).encode() + str(CSRC.resolve()).encode()
    tag = f"stv_modconv_{kind}-{torch.__version__.replace('+', '_')}-{_digest(sources, flags)}"
    return stv_home() / "torch_extensions" / tag


def _ninja_on_path() -> bool:
    """torch's builder runs `ninja` from PATH. The `ninja` package (a dependency) installs its binary into the
    environment's bin folder, which is not on PATH when a venv's program is run without activating it:
    put the package's own binary folder on PATH for this process then."""
    if shutil.which("ninja") is not None:
        return True
    try:
        import ninja
    except ImportError:
        return False
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    return shutil.which("ninja") is not None


def why_unbuildable(kind: str) -> str | None:
    """A reason the `kind` extension cannot be built here, or None if it can be tried."""
    if not _ninja_on_path():
        return "ninja not found (neither on PATH nor from the ninja package)"
    if kind == "cuda":
        if torch.version.cuda is None:
            return "this torch has no CUDA support"
        _prepare_cuda_env()
        cpp_extension = _cpp_extension()
        if cpp_extension.CUDA_HOME is None:
            return "no CUDA toolkit (nvcc) found"
    return None


# GPU architectures compiled when no device is visible to ask (build-only machines, the compile test)
DEFAULT_CUDA_ARCHS = "8.0"


def _prepare_cuda_env() -> None:
    """torch guesses CUDA_HOME from `which nvcc`; a wrapper script in /usr/local/bin makes that /usr/local,
    where no CUDA headers live. Point it at the toolkit when the standard one exists (before the import)."""
    toolkit = Path("/usr/local/cuda")
    if "CUDA_HOME" not in os.environ and (toolkit / "bin" / "nvcc").exists():
        os.environ["CUDA_HOME"] = str(toolkit)
    if "TORCH_CUDA_ARCH_LIST" not in os.environ and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
    # cpp_extension reads CUDA_HOME once, at its import: if something imported it before this ran (the CPU
    # extension's build does), its guess stands, and the link then looks for libcudart under /usr/local/lib.
    cpp_extension = _cpp_extension()
    guessed = cpp_extension.CUDA_HOME
    if (guessed is None or not (Path(guessed) / "include" / "cuda_runtime.h").exists()) and (
            toolkit / "include" / "cuda_runtime.h").exists():
        cpp_extension.CUDA_HOME = str(toolkit)


def _cpp_extension() -> ModuleType:
    """torch.utils.cpp_extension, imported without its import-time warning "No CUDA runtime is found, using
    CUDA_HOME=..." (a CPU build needs no CUDA, and `_prepare_cuda_env` settles CUDA_HOME for a CUDA one): every
    stvdec on a machine without a GPU printed it."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)
    return cpp_extension


def _pip_cuda_includes() -> list[str]:
    """Header dirs of the pip `nvidia` packages (cusparse.h, cublas_v2.h, ...): torch's CUDA headers include
    them, and a bare toolkit (nvcc + cudart only) does not ship them."""
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    roots = list(spec.submodule_search_locations or []) if spec else []
    return sorted(str(p) for root in roots for p in Path(root).glob("*/include") if p.is_dir())


def announce_builds(callback: Callable[[str], None] | None) -> None:
    """Have `callback(message)` told before a compile starts (the commands print it; a library stays silent).

    A cached build loads without a word; each kind is built at most once per process (`load` remembers)."""
    global _announce
    _announce = callback


def is_built(kind: str) -> bool:
    return (build_dir(kind) / f"stv_modconv_{kind}.so").exists()


def build(kind: str, verbose: bool = False) -> ModuleType:
    """Compile (or load from the cache) the `kind` extension; raises on failure."""
    if kind == "cuda":
        _prepare_cuda_env()
    load = _cpp_extension().load
    reason = why_unbuildable(kind)
    if reason:
        raise RuntimeError(reason)
    directory = build_dir(kind)
    if _announce is not None and not is_built(kind):
        _announce(f"compiling the fused {kind.upper()} kernel, once ({BUILD_TIME[kind]}; cached in {directory})")
    directory.mkdir(parents=True, exist_ok=True)
    return load(
        name=f"stv_modconv_{kind}",
        sources=[str(CSRC / s) for s in SOURCES[kind]],
        build_directory=str(directory),
        extra_cflags=CFLAGS["cpu"] if kind == "cpu" else ["-O3"],
        extra_cuda_cflags=["-O3"] if kind == "cuda" else None,
        extra_include_paths=_pip_cuda_includes() if kind == "cuda" else None,
        with_cuda=kind == "cuda",
        verbose=verbose,
    )


def load(kind: str) -> tuple[ModuleType | None, str]:
    """(module, '') once built, or (None, reason); the result is cached for the process."""
    if kind not in _loaded:
        if kind == "cuda" and not torch.cuda.is_available():
            _loaded[kind] = (None, "no CUDA device")
        else:
            try:
                _loaded[kind] = (build(kind), "")
            except Exception as exc:  # a compiler error must not stop decoding: the reference path serves
                log.debug("stv ops: %s extension build failed", kind, exc_info=True)
                _loaded[kind] = (None, f"build failed: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}")
    return _loaded[kind]
