"""The decoder's throughput machinery: the steady state under a CUDA graph, pinned-memory copies back to the host,
and the output written on a thread of its own.

Each piece leaves the pictures as they are: a graph replays the kernels the eager run launches (one capture per
batch shape), a pinned copy moves the same bytes, and the writer thread writes the frames in the order given.
On the CPU the graph and the pinned copy step aside (they are CUDA features), so the CPU path stays bit-identical
to the renderer the encoder optimises through; the writer thread runs on every device.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable, Generic, Sequence, TypeVar

import torch

log = logging.getLogger(__name__)
Item = TypeVar("Item")


# --- output on its own thread ----------------------------------------------------------------------------------

class BackgroundWriter(Generic[Item]):
    """Calls `write(item)` for each `put(item)` on one worker thread, in order, at most `depth` items waiting.

    The renderer hands a frame over and goes on rendering while the video encoder (PyAV runs on the CPU) and the
    disk take their time: the GPU does not wait for them. A bounded queue keeps memory flat when the writer is the
    slower side. An error in `write` is raised in the caller at the next `put` or at `close`, with its own message.

        with BackgroundWriter(video.write) as writer:
            for frame in frames:
                writer.put(frame.image)
    """

    _STOP = object()

    def __init__(self, write: Callable[[Item], None], depth: int = 8, name: str = "stv-writer"):
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            if self._error is None:  # after a failure, drain without writing so that `put` never blocks forever
                try:
                    self._write(item)
                except BaseException as exc:  # handed to the caller's thread, raised there
                    self._error = exc

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def put(self, item: Item) -> None:
        self._raise_pending()
        if not self._thread.is_alive():
            raise RuntimeError("the writer thread is closed")
        self._queue.put(item)

    def close(self) -> None:
        """Wait until every item given is written; raise the writer's error if it had one."""
        if self._thread.is_alive():
            self._queue.put(self._STOP)
            self._thread.join()
        self._raise_pending()

    def __enter__(self) -> "BackgroundWriter[Item]":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # the caller's error is the one to report; the writer's, if any, is secondary
            self.close()
        except BaseException:
            log.debug("stv writer: error while closing after another error", exc_info=True)


# --- pinned-memory copies to the host --------------------------------------------------------------------------

def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU copy of `tensor`. From a GPU, through page-locked memory: the copy runs at the link's full rate
    (a pageable copy is staged through a bounce buffer), and a fresh buffer per call means a frame still being
    written by the writer thread is never overwritten by the next batch (torch's pinned allocator reuses a block
    only after its tensor is freed). From the CPU: the tensor itself, no copy."""
    if tensor.device.type != "cuda":
        return tensor
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    torch.cuda.current_stream(tensor.device).synchronize()  # the bytes must be there before numpy reads them
    return host


# --- the steady state under a CUDA graph -----------------------------------------------------------------------

GraphKey = tuple


class GraphedSynthesis:
    """`generator.synthesize(styles)` replayed from a CUDA graph, one capture per batch shape and dtype.

    A 1024² synthesis launches a few hundred small kernels; at small batches their launch gaps, not the
    arithmetic, set the frame rate, and a graph replay launches them all at once. The decoder's batches always
    have the same shape (`_BatchedPictures` renders exactly B rows), so one capture serves the whole clip.

    Steps aside (eager synthesis) on the CPU, when gradients are wanted, and for good after a capture fails (the
    reason logged once): a graph is an optimisation, never a requirement."""

    def __init__(self, generator: torch.nn.Module, warmups: int = 2):
        self.generator = generator
        self.warmups = warmups
        self._graphs: dict[GraphKey, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}
        self.disabled_because: str | None = None

    def __call__(self, styles: Sequence[torch.Tensor]) -> torch.Tensor:
        if not self._graphable(styles):
            return self.generator.synthesize(styles)
        key = tuple((tuple(s.shape), s.dtype, s.device) for s in styles)
        if key not in self._graphs:
            try:
                self._graphs[key] = self._capture(styles)
            except RuntimeError as exc:
                self.disabled_because = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                log.info("stv decoder: CUDA graph capture failed (%s); rendering eagerly", self.disabled_because)
                return self.generator.synthesize(styles)
        graph, inputs, output = self._graphs[key]
        for static, given in zip(inputs, styles):
            static.copy_(given)
        graph.replay()
        return output.clone()  # the next replay overwrites `output`

    def _graphable(self, styles: Sequence[torch.Tensor]) -> bool:
        return (self.disabled_because is None and len(styles) > 0 and styles[0].device.type == "cuda"
                and not (torch.is_grad_enabled() and any(s.requires_grad for s in styles)))

    def _capture(self, styles: Sequence[torch.Tensor]) -> tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]:
        inputs = [s.detach().clone() for s in styles]
        side = torch.cuda.Stream(inputs[0].device)
        side.wait_stream(torch.cuda.current_stream(inputs[0].device))
        with torch.cuda.stream(side), torch.no_grad():  # warm-up off the capture: extension load, cuDNN's choices
            for _ in range(self.warmups):
                self.generator.synthesize(inputs)
        torch.cuda.current_stream(inputs[0].device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad():
            output = self.generator.synthesize(inputs)
        return graph, inputs, output

    def release(self) -> None:
        """Free the captured graphs and their memory pools."""
        self._graphs.clear()
