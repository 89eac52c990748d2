"""The decoder's throughput machinery (codec.decoder.pipeline): the writer thread writes what a sequential loop
writes, in order, and reports its errors; the CUDA graph and the pinned copy step aside on the CPU, leaving the CPU
decode bit-identical; on a GPU (tests marked cuda) the graph replays what the eager run computes."""

from __future__ import annotations

import threading
import time
from fractions import Fraction

import numpy as np
import pytest
import torch

from codec import zoo
from codec.bitstream import StvReader
from codec.decoder.decode import DecodeSettings, decode, to_uint8
from codec.decoder.pipeline import BackgroundWriter, GraphedSynthesis, to_host
from codec.preprocess.video import VideoWriter, read_frames
from test_decoder_helpers import CHUNK, generator, seeded_editor, write_stream  # noqa: F401


def random_frames(count: int, size: int = 32, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def test_writer_thread_writes_every_item_in_order_off_the_callers_thread():
    written, threads = [], set()

    def slow_write(item: int) -> None:
        time.sleep(0.001 * (item % 3))  # uneven: order must not depend on timing
        threads.add(threading.get_ident())
        written.append(item)

    with BackgroundWriter(slow_write, depth=2) as writer:
        for k in range(50):
            writer.put(k)
    assert written == list(range(50))
    assert threads and threading.get_ident() not in threads


def test_writer_thread_error_reaches_the_caller_with_its_message():
    def failing_write(item: int) -> None:
        if item == 3:
            raise OSError("disk full")

    writer = BackgroundWriter(failing_write, depth=1)
    with pytest.raises(OSError, match="disk full"):
        for k in range(100):  # the error surfaces at a later put (or at close), never lost
            writer.put(k)
        writer.close()
    writer.close()  # already reported: closing again is quiet


def test_threaded_video_writer_gives_the_sequential_writers_frames_and_bytes(tmp_path):
    frames = random_frames(12)
    sequential, threaded = tmp_path / "sequential.mkv", tmp_path / "threaded.mkv"
    with VideoWriter(sequential, Fraction(25), (32, 32), lossless=True) as video:
        for frame in frames:
            video.write(frame)
    with VideoWriter(threaded, Fraction(25), (32, 32), lossless=True) as video:
        with BackgroundWriter(video.write, depth=3) as writer:
            for frame in frames:
                writer.put(frame)
    for got, want in zip(read_frames(threaded), frames, strict=True):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(read_frames(sequential), read_frames(threaded), strict=True):
        np.testing.assert_array_equal(got, want)
    assert threaded.stat().st_size == sequential.stat().st_size


def test_to_host_is_the_identity_on_the_cpu():
    tensor = torch.arange(12, dtype=torch.uint8).view(3, 4)
    assert to_host(tensor) is tensor


def test_graphed_synthesis_steps_aside_on_the_cpu(generator):
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        styles = generator.styles(generator.mapping(torch.randn(2, generator.style_dim, generator=gen)))
        graphed = GraphedSynthesis(generator)
        assert torch.equal(graphed(styles), generator.synthesize(styles))
    assert graphed.disabled_because is None and not graphed._graphs


def test_cpu_decode_with_the_pipeline_settings_is_bit_identical(tmp_path, generator):
    """cuda_graph on or off, the CPU decode gives the same bytes (the graph is a GPU feature)."""
    path, _ = write_stream(tmp_path / "a.stv", generator)
    editor = seeded_editor(generator)
    on = [f.image for f in decode(StvReader(path), generator, editor, settings=DecodeSettings(batch=CHUNK))]
    off = [f.image for f in decode(StvReader(path), generator, editor,
                                   settings=DecodeSettings(batch=CHUNK, cuda_graph=False))]
    assert len(on) == len(off) > 0
    for a, b in zip(on, off):
        assert np.array_equal(a, b)


def _cuda_or_skip() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device("cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_graph_replay_equals_the_eager_synthesis_on_a_gpu(dtype):
    device = _cuda_or_skip()
    g = zoo.load_generator("tiny", device=device, dtype=dtype)
    graphed = GraphedSynthesis(g)
    with torch.no_grad():
        for seed in range(3):  # fresh inputs each replay: the graph must read its inputs, not replay old ones
            z = torch.randn(4, g.style_dim, generator=torch.Generator().manual_seed(seed)).to(device, dtype)
            styles = g.styles(g.mapping(z))
            eager = g.synthesize(styles)
            replayed = graphed(styles)
            assert graphed.disabled_because is None, graphed.disabled_because
            assert torch.isfinite(replayed).all()
            relative = ((replayed.float() - eager.float()).norm() / eager.float().norm()).item()
            assert relative <= (1e-6 if dtype == torch.float32 else 1e-3), relative


@pytest.mark.cuda
def test_pinned_copy_to_the_host_moves_the_same_bytes():
    device = _cuda_or_skip()
    pixels = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8, device=device)
    host = to_host(pixels)
    assert host.device.type == "cpu" and host.is_pinned()
    assert torch.equal(host, pixels.cpu())
    images = torch.rand(2, 3, 16, 16, device=device) * 2 - 1
    assert np.array_equal(to_uint8(images), to_uint8(images.cpu()))
