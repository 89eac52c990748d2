"""Resumable encoder stages: each stage's output is a safetensors file in the work directory, stamped with a key
(a digest of everything the output depends on: the upstream stage's key and this stage's settings). A re-run with
the same key reads the file instead of recomputing, so a user tuning attribute encoding does not redo inversion;
a changed setting changes the key and recomputes that stage and everything after it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from codec.encoder.cost import measured_stage
from codec.encoder.frames import windows

Tensors = dict[str, torch.Tensor]


def stage_key(upstream: str, stage: str, settings: dict) -> str:
    text = json.dumps({"upstream": upstream, "stage": stage, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cached_stage(work_dir: Path | None, stage: str, key: str, compute: Callable[[], Tensors]) -> Tensors:
    """compute(), or the stored result of the same stage with the same key. A computed stage's time and peak
    memory are logged (cost.measured_stage)."""
    if work_dir is None:
        with measured_stage(stage):
            return compute()
    file = Path(work_dir) / f"{stage}.safetensors"
    stored = read_keyed(file, key)
    if stored is not None:
        return stored
    with measured_stage(stage):
        result = compute()
    write_keyed(file, key, result)
    return result


def read_keyed(file: Path, key: str) -> Tensors | None:
    """The tensors stored in `file` under `key`; None when there is no such file or it has another key."""
    if not file.is_file():
        return None
    with safe_open(str(file), framework="pt") as f:
        if (f.metadata() or {}).get("key") != key:
            return None
        # copied into fresh (aligned) memory: a tensor read from the file starts wherever its bytes lie in it, and
        # the CPU's matrix kernels may round differently on unaligned data, so a resumed run would drift from an
        # uninterrupted one in the last bits
        return {name: f.get_tensor(name).clone() for name in f.keys()}


def write_keyed(file: Path, key: str, tensors: Tensors) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(file.name + ".part")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata={"key": key})
    os.replace(tmp, file)  # a stage interrupted half-way leaves no file that looks complete


# Names of a window file's tensors that are the state carried into the next window, not per-frame output.
CARRY_PREFIX = "carry."


def resumable_stage(work_dir: Path | None, stage: str, key: str, count: int, window: int,
                    run_window: Callable[[int, int, Tensors | None], Tensors],
                    resumed: Callable[[int], object] | None = None) -> Tensors:
    """A stage over `count` frames computed `window` frames at a time, each window's output kept in the work dir as
    it completes, so that an interrupted run resumes at the first window it had not finished (a long clip's stage
    is hours of work on one machine). run_window(start, stop, carried) -> tensors: per-frame outputs [stop - start,
    ...], and under names starting with CARRY_PREFIX the state the next window starts from (`carried`: the last
    window's, None for the first). The result, each per-frame output concatenated over the windows, is the stage's
    file as `cached_stage` keeps it; the window files go once it is written. `resumed(n)` is told of the n frames
    of each window read back from the work dir (a stage's progress bar starts where the interrupted run was)."""
    folder = None if work_dir is None else Path(work_dir) / f"{stage}.windows"

    def compute() -> Tensors:
        parts, carried = [], None
        for start, stop in windows(count, window):
            file = None if folder is None else folder / f"{start:08d}-{stop:08d}.safetensors"
            part = read_keyed(file, key) if file is not None else None
            if part is None:
                part = run_window(start, stop, carried)
                if file is not None:
                    write_keyed(file, key, part)
            elif resumed is not None:
                resumed(stop - start)
            carried = {name: value for name, value in part.items() if name.startswith(CARRY_PREFIX)}
            parts.append({name: value for name, value in part.items() if not name.startswith(CARRY_PREFIX)})
        return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}

    result = cached_stage(work_dir, stage, key, compute)
    if folder is not None and folder.is_dir():
        shutil.rmtree(folder)
    return result
