"""What the encoder's stages spend in generator renders, by kind.

A render without gradients runs the fused kernels; one whose backward also runs (the optimisations: projector,
head pose, Algorithm 1, the refinement's L_ID pass) runs the PyTorch reference path, since the fused kernels have
no backward, and its forward plus backward cost several forwards. The two are counted apart so that a cost figure
can weigh each with what it costs (tools/bench_encode.py measures both in the same process).
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

log = logging.getLogger("codec.encoder")


@dataclass(frozen=True)
class RenderCount:
    forwards: int = 0  # generator forwards without gradients, summed over frames
    gradient_steps: int = 0  # forward + backward through the generator, summed over frames

    def __add__(self, other: "RenderCount") -> "RenderCount":
        return RenderCount(self.forwards + other.forwards, self.gradient_steps + other.gradient_steps)

    @property
    def renders(self) -> int:
        return self.forwards + self.gradient_steps


@dataclass(frozen=True)
class StageCost:
    seconds: float
    peak_rss_mb: float  # the process's peak resident memory while the stage ran (since the process started
    # where the peak cannot be reset: see peak_is_per_stage)
    peak_is_per_stage: bool


_CLEAR_REFS = Path("/proc/self/clear_refs")


def _reset_peak_rss() -> bool:
    """Linux lets a process reset its resident-memory high-water mark (writing 5 to clear_refs); elsewhere the peak
    is the whole process's so far."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


@contextmanager
def measured_stage(stage: str) -> Iterator[None]:
    """Time a stage and its peak memory; logged at INFO on the "codec.encoder" logger as
    "stage NAME: S s, peak RSS M MB" with the StageCost in the record's `stage_cost` (stvenc -v shows it)."""
    per_stage = _reset_peak_rss()
    started = time.perf_counter()
    yield
    cost = StageCost(time.perf_counter() - started, _peak_rss_mb(), per_stage)
    log.info("stage %s: %.1f s, peak RSS %.0f MB%s", stage, cost.seconds, cost.peak_rss_mb,
             "" if per_stage else " (process peak)", extra={"stage": stage, "stage_cost": cost})
