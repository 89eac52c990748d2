"""Progress bars for stages that run in windows of frames: one bar over the whole clip for each stage, which the
windows advance, instead of a new bar for every window (a 1000-frame clip in windows of 8 printed 125 per stage)."""

from __future__ import annotations

from typing import Protocol, Union

from tqdm.auto import tqdm


class Advancing(Protocol):
    def update(self, n: int = 1) -> object: ...


# What a stage's `progress` argument may be: True/False for a bar of its own (or none), or the stage's bar.
Progress = Union[bool, Advancing]


class _Borrowed:
    """The stage's bar as a window sees it: the window advances it, the stage closes it."""

    def __init__(self, bar: Advancing):
        self._bar = bar

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Borrowed":
        return self

    def __exit__(self, *exc) -> None:
        pass


def frame_bar(progress: Progress, total: int, desc: str, unit: str = "frame"):
    """A bar for `total` items: a new one (or a silent one) for a bool, else the stage's bar passed in."""
    if isinstance(progress, bool):
        return tqdm(total=total, desc=desc, unit=unit, disable=not progress)
    return _Borrowed(progress)
