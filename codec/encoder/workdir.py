"""Resumable encoder stages: each stage's output is a safetensors file in the work directory, stamped with a key
(a digest of everything the output depends on: the upstream stage's key and this stage's settings). A re-run with
the same key reads the file instead of recomputing, so a user tuning attribute encoding does not redo inversion;
a changed setting changes the key and recomputes that stage and everything after it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from codec.encoder.cost import measured_stage

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
    if file.is_file():
        with safe_open(str(file), framework="pt") as f:
            if (f.metadata() or {}).get("key") == key:
                return {name: f.get_tensor(name) for name in f.keys()}
    with measured_stage(stage):
        result = compute()
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(file.name + ".part")
    save_file({k: v.detach().cpu().contiguous() for k, v in result.items()}, str(tmp), metadata={"key": key})
    os.replace(tmp, file)  # a stage interrupted half-way leaves no file that looks complete
    return result
