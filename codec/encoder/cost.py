"""What the encoder's stages spend in generator renders, by kind.

A render without gradients runs the fused kernels; one whose backward also runs (the optimisations: projector,
head pose, Algorithm 1, the refinement's L_ID pass) runs the PyTorch reference path, since the fused kernels have
no backward, and its forward plus backward cost several forwards. The two are counted apart so that a cost figure
can weigh each with what it costs (tools/bench_encode.py measures both in the same process).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RenderCount:
    forwards: int = 0  # generator forwards without gradients, summed over frames
    gradient_steps: int = 0  # forward + backward through the generator, summed over frames

    def __add__(self, other: "RenderCount") -> "RenderCount":
        return RenderCount(self.forwards + other.forwards, self.gradient_steps + other.gradient_steps)

    @property
    def renders(self) -> int:
        return self.forwards + self.gradient_steps
