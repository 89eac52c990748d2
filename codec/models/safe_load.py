"""Reading official PyTorch checkpoints without executing pickled code.

`torch.load(weights_only=True)` only rebuilds tensors and plain containers (dict, list, str, numbers, None):
a file that needs anything else is refused with a clear error, never unpickled.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Mapping

import torch

from codec.errors import ModelError

Checkpoint = Mapping[str, Any]


def load_checkpoint(path_or_state: str | Path | Checkpoint, what: str) -> Checkpoint:
    """Return the checkpoint's top-level mapping; `what` names the model in error messages."""
    if isinstance(path_or_state, Mapping):
        return path_or_state
    path = Path(path_or_state)
    if not path.is_file():
        raise ModelError(f"{what}: no such file {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any class it does not know; say which, and do not fall back to full unpickling.
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{what}: {path} holds objects that are not plain tensors/containers ({first_line})") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ModelError(f"{what}: {path} is not a readable PyTorch checkpoint ({exc})") from exc
    if not isinstance(loaded, Mapping):
        raise ModelError(f"{what}: {path} holds a {type(loaded).__name__}, expected a dict of tensors")
    return loaded


def load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str, assign: bool = False) -> None:
    """load_state_dict(strict=True), turning a layout mismatch into one readable ModelError.

    `assign=True` adopts the checkpoint's tensors instead of copying them (for modules built on the meta
    device: no random initialisation, no second copy of a large model).
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape)
    )
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if keys:
            problems.append(f"{len(keys)} {label} (first: {keys[0]})")
    if problems:
        raise ModelError(f"{what}: checkpoint does not match the expected layout: " + "; ".join(problems))
    module.load_state_dict(dict(state), strict=True, assign=assign)
