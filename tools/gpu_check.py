"""One command for the GPU machine (issue 16): build the CUDA kernel, check it, time the decoder and the encoder.

    python3 tools/gpu_check.py              # on the GPU machine, from the repository root (README: "The GPU check")
    python3 tools/gpu_check.py --dry-run    # the same code on the CPU at a tiny size (tests/test_gpu_check.py)

Sections, in order, each timed; a failing section is reported and the next one still runs:
1. wheels    the packages the GPU machine's python3 lacks (construct, zstandard, lpips, av, constriction)
             installed from the wheels in .whl/ (tools/gpu_wheels.sh downloads them here; they travel with the code) into a folder
             of their own, with pip --no-index: that machine has no network.
2. build     the CUDA extension (csrc/modulated_conv_cuda.cu; the CPU one in a dry run).
3. tests     pytest -m cuda: the fused kernel against the float64 reference on every config-f layer, fp32 and
             fp16, under a NaN-poisoned allocator; the decoder's CUDA graph and pinned copies.
4. ceilings  measured, not taken from a datasheet: device-to-device copy bandwidth (bytes read + written) and the
             matrix rate per dtype (float32 as the convolutions run it: TF32 when cuDNN allows it).
5. synthesis frames/s of a config-f-shaped generator with random weights at 1024², batch 1/4/16/32, fp16 and
             fp32, for the fused kernel, the reference path, and each under a CUDA graph; each as a fraction of
             its floor: max(multiply-adds x 2 / matrix rate, fewest bytes / copy bandwidth) (codec.ops.layers).
6. stvdec    stvdec's end-to-end frames/s at 1024², batch 16, fp16 (tools/bench_decode.stvdec_fps), with the
             H.264 encode and without it; and the paste-back's ms per frame into 1920x1080, OpenCV on the host
             against torch on the GPU (tools/bench_decode.paste_cost).
7. encoder   stvenc at its defaults on 2 synthetic aligned 1024² frames with random-weight stand-ins of the
             official models (tests/config_f_home.py): seconds per frame per stage and the peak GPU memory.
The last thing printed is a short table; with $OUT set (the device tool's output folder) the figures go to
$OUT/gpu_check.json and the pytest log to $OUT/gpu_check_tests.log.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".whl"
SITE = Path(tempfile.gettempdir()) / "stv-gpu-site"
# module -> requirement, as pyproject.toml pins them (tools/gpu_wheels.sh downloads the same)
CARRIED = {"construct": "construct", "zstandard": "zstandard", "lpips": "lpips", "av": "av",
           "constriction": "constriction"}


@dataclass(frozen=True)
class Plan:
    """What the run covers: the GPU machine's full check, or the dry run's tiny version of the same code."""
    device: torch.device
    generator_size: int
    generator_channels: dict[int, int] | None  # None: config-f's
    batches: tuple[int, ...]
    dtypes: tuple[torch.dtype, ...]
    repeats: int
    stvdec_batch: int
    stvdec_frames: int
    encoder_frames: int
    copy_megabytes: int
    matmul_side: int
    test_files: tuple[str, ...]
    encoder_options: tuple[str, ...]  # stvenc options beyond the model and --aligned (): its defaults)

    @property
    def dry(self) -> bool:
        return self.device.type == "cpu"


GPU_PLAN = Plan(torch.device("cuda"), 1024, None, (1, 4, 16, 32), (torch.float16, torch.float32), 5, 16, 64, 2,
                2048, 8192, ("tests/test_cuda_kernel.py", "tests/test_decoder_pipeline.py",
                                           "tests/test_paste_torch.py"), ())
# the dry run's encoder runs the cheapest stages (its defaults take minutes a frame on a CPU even at 64²)
DRY_PLAN = Plan(torch.device("cpu"), 32, {4: 16, 8: 16, 16: 8, 32: 8}, (1, 2), (torch.float32,), 1, 2, 4, 1,
                16, 128, ("tests/test_cuda_kernel.py",),
                ("--inverter", "e4e", "--pose-steps", "1", "--attribute-steps", "1", "--refine-rounds", "0"))


# --- reporting -------------------------------------------------------------------------------------------------

class Report:
    """Figures by section, each section's seconds and status; printed as a table at the end and saved as JSON."""

    def __init__(self, figures: dict) -> None:
        self.figures = figures  # run-wide facts saved beside the sections
        self.sections: dict[str, dict] = {}

    @contextmanager
    def section(self, name: str) -> Iterator[dict]:
        entry: dict = {"status": "ok"}
        self.sections[name] = entry
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            yield entry
        except Exception as exc:  # one section's failure must not cost the lease the others' figures
            entry["status"] = "failed"
            entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            print(f"   {name} failed: {entry['error']}", flush=True)
            traceback.print_exc(limit=4)
        finally:
            entry["seconds"] = round(time.perf_counter() - started, 2)
            self.save()  # after every section: a run killed at its time limit keeps what it measured

    def ok(self) -> bool:
        return all(entry["status"] == "ok" for entry in self.sections.values())

    def save(self) -> None:
        if out_dir() is not None:
            out_dir().mkdir(parents=True, exist_ok=True)
            figures = {**self.figures, "ok": self.ok(), "sections": self.sections}
            (out_dir() / "gpu_check.json").write_text(json.dumps(figures, indent=1, default=str))


def out_dir() -> Path | None:
    out = os.environ.get("OUT")
    return Path(out) if out else None


# --- 1. wheels -------------------------------------------------------------------------------------------------

def missing_modules() -> list[str]:
    return [module for module in CARRIED if importlib.util.find_spec(module) is None]


def install_carried_wheels(entry: dict) -> None:
    """Install the carried wheels of whatever is missing into SITE and put SITE on the path (this process and
    its children)."""
    missing = missing_modules()
    entry["missing_before"] = missing
    if missing:
        if not any(WHEELS.glob("*.whl")):
            raise RuntimeError(f"{', '.join(missing)} not installed and no wheels in {WHEELS} "
                               "(run tools/gpu_wheels.sh where pip has a network, then carry .whl)")
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                   "--no-cache-dir", "--upgrade", "--target", str(SITE), "--find-links", str(WHEELS),
                   *[CARRIED[m] for m in missing]]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pip install from {WHEELS} failed: {done.stderr.strip().splitlines()[-1:]}")
        sys.path.insert(0, str(SITE))
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE), os.environ.get("PYTHONPATH")]))
        importlib.invalidate_caches()
    still = missing_modules()
    if still:
        raise RuntimeError(f"still missing after the install: {', '.join(still)}")


# --- 2. build --------------------------------------------------------------------------------------------------

def build_extension(plan: Plan, entry: dict) -> None:
    from codec.ops import extension

    kind = plan.device.type
    entry["kind"] = kind
    started = time.perf_counter()
    module = extension.build(kind)
    entry["build_seconds"] = round(time.perf_counter() - started, 1)
    if not hasattr(module, "modulated_conv"):
        raise RuntimeError(f"the {kind} extension has no modulated_conv")
    if kind == "cuda":
        entry["device_name"] = torch.cuda.get_device_name()


# --- 3. tests --------------------------------------------------------------------------------------------------

def run_cuda_tests(plan: Plan, entry: dict) -> None:
    """pytest -m cuda over the files that hold such tests; the counts from pytest's summary line."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-rfE",
               *plan.test_files]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    log = done.stdout + done.stderr
    if out_dir() is not None:
        (out_dir() / "gpu_check_tests.log").write_text(log)
    summary = log.strip().splitlines()[-1] if log.strip() else ""
    entry["summary"] = summary
    found = {word.rstrip("s"): int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary)}
    entry["counts"] = {word: found.get(word, 0) for word in ("passed", "failed", "skipped", "error")}
    entry["failures"] = [line for line in log.splitlines() if line.startswith(("FAILED", "ERROR"))][:20]
    if done.returncode not in (0, 5):  # 5: nothing collected
        raise RuntimeError(f"pytest exit {done.returncode}: {summary}")
    if not plan.dry and entry["counts"]["passed"] == 0:
        raise RuntimeError(f"no cuda test passed on the GPU: {summary}")


# --- timing ----------------------------------------------------------------------------------------------------

def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmups: int = 1) -> float:
    """Median wall time of fn() over `repeats` runs after `warmups`; on a GPU timed with CUDA events around each
    run (the work, not the launches)."""
    for _ in range(warmups):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) / 1000.0)
        else:
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
    return statistics.median(times)


# --- 4. ceilings -----------------------------------------------------------------------------------------------

def copy_bandwidth(plan: Plan) -> float:
    """Bytes per second of a large device-to-device copy, counting bytes read plus bytes written."""
    n = plan.copy_megabytes * 2**20
    source = torch.rand(n // 4, device=plan.device)  # random, never zeros
    target = torch.empty_like(source)
    seconds = median_seconds(lambda: target.copy_(source), plan.device, max(plan.repeats, 5))
    return 2 * n / seconds


def matmul_rate(plan: Plan, dtype: torch.dtype) -> float:
    """FLOP/s of a large square matrix product in `dtype` on random data. float32 runs as the convolutions run
    it: in TF32 when cuDNN is allowed to (torch's default), so the floor compares like with like."""
    side = plan.matmul_side
    gen = torch.Generator(device=plan.device).manual_seed(0)
    a = torch.randn(side, side, device=plan.device, generator=gen).to(dtype)
    b = torch.randn(side, side, device=plan.device, generator=gen).to(dtype)
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        seconds = median_seconds(lambda: a @ b, plan.device, max(plan.repeats, 5))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    return 2 * side**3 / seconds


def measure_ceilings(plan: Plan, entry: dict) -> dict:
    entry["copy_bytes_per_s"] = copy_bandwidth(plan)
    entry["matmul_flop_per_s"] = {dtype_name(d): matmul_rate(plan, d) for d in plan.dtypes}
    entry["tf32_in_float32_convs"] = bool(torch.backends.cudnn.allow_tf32) and plan.device.type == "cuda"
    return entry


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# --- 5. synthesis throughput -----------------------------------------------------------------------------------

def make_generator(plan: Plan, dtype: torch.dtype) -> torch.nn.Module:
    from codec.models.stylegan2 import Generator, GeneratorConfig

    torch.manual_seed(0)
    config = GeneratorConfig(size=plan.generator_size, channels=plan.generator_channels)
    return Generator(config).eval().to(plan.device, dtype)


def synthesis_floor(channels: dict[int, int], batch: int, dtype: torch.dtype, ceilings: dict) -> dict:
    """The floor of one synthesis call of a generator with feature `channels`: arithmetic over the measured
    matrix rate and the fewest bytes over the measured copy bandwidth; the larger one bounds it (METHOD.md's two
    numbers)."""
    from codec.ops.layers import synthesis_layers

    layers = synthesis_layers(channels)
    flops = 2 * batch * sum(layer.macs() for layer in layers)
    element = torch.tensor([], dtype=dtype).element_size()
    moved = sum(layer.min_bytes(batch, element) for layer in layers)
    arithmetic_s = flops / ceilings["matmul_flop_per_s"][dtype_name(dtype)]
    bytes_s = moved / ceilings["copy_bytes_per_s"]
    return {"flops": flops, "bytes": moved, "arithmetic_s": arithmetic_s, "bytes_s": bytes_s,
            "floor_s": max(arithmetic_s, bytes_s), "bound_by": "arithmetic" if arithmetic_s >= bytes_s else "bytes"}


@contextmanager
def ops_path(path: str) -> Iterator[None]:
    """Run the generator's modulated convs on `path`: 'fused' (csrc/) or 'reference' (PyTorch)."""
    before = os.environ.get("STV_OPS")
    os.environ["STV_OPS"] = path
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("STV_OPS", None)
        else:
            os.environ["STV_OPS"] = before


PATHS = (("fused", False), ("fused", True), ("reference", False), ("reference", True))


def time_synthesis(plan: Plan, entry: dict, ceilings: dict) -> None:
    from codec.decoder.pipeline import GraphedSynthesis
    from codec.models.stylegan2 import GeneratorConfig

    rows = []
    for dtype in plan.dtypes:
        generator = make_generator(plan, dtype)
        for batch in plan.batches:
            z = torch.randn(batch, generator.style_dim, generator=torch.Generator().manual_seed(batch))
            with torch.no_grad():
                styles = generator.styles(generator.mapping(z.to(plan.device, dtype)))
            floor = synthesis_floor(generator.config.channel_table, batch, dtype, ceilings)
            for path, graphed in PATHS:
                row = {"dtype": dtype_name(dtype), "batch": batch, "path": path + ("+graph" if graphed else ""),
                       "floor_s": floor["floor_s"], "bound_by": floor["bound_by"]}
                try:
                    with ops_path(path), torch.no_grad():
                        run = GraphedSynthesis(generator) if graphed else generator.synthesize
                        seconds = median_seconds(lambda: run(styles), plan.device, plan.repeats)
                        if graphed and run.disabled_because:
                            row["graph_failed"] = run.disabled_because
                        if graphed:
                            run.release()
                    row.update(seconds=seconds, fps=batch / seconds, fraction_of_floor=floor["floor_s"] / seconds)
                except torch.cuda.OutOfMemoryError as exc:
                    row["error"] = f"out of memory: {str(exc).splitlines()[0][:120]}"
                rows.append(row)
                print(f"   {row['dtype']:>7} b{batch:<3} {row['path']:<16} "
                      + (f"{row['fps']:9.1f} fps  {row['fraction_of_floor']:.3f} of floor" if "fps" in row
                         else row["error"]), flush=True)
                if plan.device.type == "cuda":
                    torch.cuda.empty_cache()
        del generator
    entry["rows"] = rows
    channels = GeneratorConfig(size=plan.generator_size, channels=plan.generator_channels).channel_table
    entry["floor_per_frame"] = {dtype_name(d): synthesis_floor(channels, 1, d, ceilings) for d in plan.dtypes}


# --- 6. stvdec end to end --------------------------------------------------------------------------------------

def time_stvdec(plan: Plan, entry: dict) -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    from bench_decode import stvdec_fps

    dtype = plan.dtypes[0]
    generator = make_generator(plan, torch.float32).cpu()
    entry.update(size=plan.generator_size, batch=plan.stvdec_batch, dtype=dtype_name(dtype), frames=plan.stvdec_frames)
    entry["fps_h264"] = stvdec_fps(generator, plan.device, dtype, plan.stvdec_batch, plan.stvdec_frames, True)
    entry["fps_no_output"] = stvdec_fps(generator, plan.device, dtype, plan.stvdec_batch, plan.stvdec_frames, False)
    time_paste_back(plan, entry)


def time_paste_back(plan: Plan, entry: dict) -> None:
    """The paste-back's cost per frame (issue 13) beside the rendering's: a generator-sized face into a 1080p
    picture, OpenCV on the host against torch on the device (stvdec's GPU path)."""
    from bench_decode import paste_cost

    picture = (320, 180) if plan.dry else (1920, 1080)
    entry["paste_back"] = {"picture": f"{picture[0]}x{picture[1]}",
                           **paste_cost(plan.generator_size, picture, plan.device, plan.repeats)}


# --- 7. encoder ------------------------------------------------------------------------------------------------

class StageCosts(logging.Handler):
    """Collects the encoder's per-stage records (codec.encoder.cost.measured_stage logs each with its cost)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.costs: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        cost = getattr(record, "stage_cost", None)
        if cost is not None:
            self.costs[record.stage] = self.costs.get(record.stage, 0.0) + cost.seconds


def synthetic_aligned_clip(generator: torch.nn.Module, frames: int, path: Path, device: torch.device) -> None:
    """Frames rendered by the generator (a copy, on `device`) from random latents, written losslessly: aligned
    crops by construction (stvenc --aligned), so no face detector is needed."""
    import copy
    from fractions import Fraction

    from codec.decoder.decode import to_uint8
    from codec.preprocess.video import write_video

    generator = copy.deepcopy(generator).to(device)
    with torch.no_grad():
        z = torch.randn(frames, generator.style_dim, generator=torch.Generator().manual_seed(3)).to(device)
        images = to_uint8(generator(generator.mapping(z)[:, None].expand(-1, generator.n_latent, -1)))
    del generator
    write_video(path, list(images), Fraction(25), lossless=True)


def time_encoder(plan: Plan, entry: dict) -> None:
    """stvenc at its defaults (the model and --aligned aside) on synthetic frames, in this process."""
    sys.path.insert(0, str(ROOT / "tests"))
    from click.testing import CliRunner

    from codec.cli.stvenc import main as stvenc
    from codec.encoder import encode
    from codec.models.stylegan2 import GeneratorConfig
    from config_f_home import REDUCED, reduced_channel_table, stand_in_home

    config = REDUCED if plan.dry else GeneratorConfig()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        started = time.perf_counter()
        home = stand_in_home(tmp_path / "stand-ins", config)
        entry["stand_in_seconds"] = round(time.perf_counter() - started, 1)
        saved = {k: os.environ.get(k) for k in ("STV_HOME", "STV_MANIFEST")}
        tables = dict(encode.CHANNEL_TABLES)
        os.environ.update({k: home.environ()[k] for k in saved})
        handler, logger = StageCosts(), logging.getLogger("codec.encoder")
        logger.addHandler(handler)
        try:
            if plan.dry:  # the reduced layout cannot hold the shipped table's indices (config_f_home's docs)
                encode.CHANNEL_TABLES["stylegan2-ffhq-config-f"] = str(
                    reduced_channel_table(home.generator, tmp_path / "channels.json"))
            clip, stream = tmp_path / "clip.mkv", tmp_path / "out.stv"
            synthetic_aligned_clip(home.generator, plan.encoder_frames, clip, plan.device)
            if plan.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            result = CliRunner().invoke(stvenc, ["--model", "stylegan2-ffhq-config-f", "--aligned", "--device",
                                                 plan.device.type, *plan.encoder_options, "-q", "-v", str(clip),
                                                 str(stream)])
            total = time.perf_counter() - started
            if result.exit_code != 0:
                raise RuntimeError(f"stvenc exit {result.exit_code}: {result.output.strip()[-300:]}")
        finally:
            logger.removeHandler(handler)
            encode.CHANNEL_TABLES.clear()
            encode.CHANNEL_TABLES.update(tables)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    frames = plan.encoder_frames
    entry.update(size=config.size, frames=frames, options=" ".join(plan.encoder_options) or "stvenc's defaults",
                 seconds_per_frame=total / frames,
                 stage_seconds_per_frame={k: v / frames for k, v in handler.costs.items()})
    if plan.device.type == "cuda":
        entry["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        from codec.encoder.cost import _peak_rss_mb

        entry["peak_rss_gb"] = _peak_rss_mb() / 1024


# --- the table ---------------------------------------------------------------------------------------------------

def table(report: Report) -> str:
    s = report.sections
    lines = [f"gpu_check on {s.get('build', {}).get('device_name', 'cpu (dry run)')}"]
    lines.append("section    status  seconds")
    lines += [f"{name:<10} {e['status']:<7} {e['seconds']:7.1f}" + (f"  {e['error'][:80]}" if "error" in e else "")
              for name, e in s.items()]
    tests = s.get("tests", {})
    if "summary" in tests:
        lines.append(f"cuda tests: {tests['summary']}")
    ceil = s.get("ceilings", {})
    if "copy_bytes_per_s" in ceil:
        rates = ", ".join(f"{k} {v / 1e12:.1f}" for k, v in ceil["matmul_flop_per_s"].items())
        lines.append(f"ceilings: copy {ceil['copy_bytes_per_s'] / 1e9:.0f} GB/s; matmul TFLOP/s {rates}")
    rows = s.get("synthesis", {}).get("rows", [])
    if rows:
        lines.append("synthesis fps (fraction of floor)   " + "  ".join(f"{p + ('+graph' if g else ''):>16}"
                                                                     for p, g in PATHS))
        keys = sorted({(r["dtype"], r["batch"]) for r in rows}, key=lambda k: (k[0], k[1]))
        for dtype, batch in keys:
            cells = []
            for path, graphed in PATHS:
                name = path + ("+graph" if graphed else "")
                row = next((r for r in rows if (r["dtype"], r["batch"], r["path"]) == (dtype, batch, name)), {})
                cells.append(f"{row['fps']:8.1f} ({row['fraction_of_floor']:.2f})" if "fps" in row else f"{'-':>16}")
            bound = next((r["bound_by"] for r in rows if (r["dtype"], r["batch"]) == (dtype, batch)), "")
            lines.append(f"  {dtype:>7} batch {batch:<3} {bound:>10}       " + "  ".join(f"{c:>16}" for c in cells))
    dec = s.get("stvdec", {})
    if "paste_back" in dec:
        paste = dec["paste_back"]
        lines.append(f"paste-back into {paste['picture']}: {paste['opencv_ms']:.1f} ms/frame OpenCV on the host, "
                     f"{paste['torch_ms']:.1f} ms/frame torch on the device")
    if "fps_h264" in dec:
        lines.append(f"stvdec {dec['size']}² batch {dec['batch']} {dec['dtype']}: {dec['fps_h264']:.1f} fps with "
                     f"H.264, {dec['fps_no_output']:.1f} fps rendering only")
    enc = s.get("encoder", {})
    if "seconds_per_frame" in enc:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in enc["stage_seconds_per_frame"].items())
        memory = (f"peak GPU memory {enc['peak_gpu_memory_gb']:.1f} GB" if "peak_gpu_memory_gb" in enc
                  else f"peak RSS {enc['peak_rss_gb']:.1f} GB")
        lines.append(f"encoder {enc['size']}²: {enc['seconds_per_frame']:.2f} s/frame ({stages}); {memory}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="the same code on the CPU at a tiny size")
    parser.add_argument("--skip", nargs="*", default=[], metavar="SECTION",
                        help="sections to leave out (wheels build tests ceilings synthesis stvdec encoder)")
    args = parser.parse_args(argv)
    plan = DRY_PLAN if args.dry_run else GPU_PLAN
    if not plan.dry and not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device here (use --dry-run for the CPU version)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    report = Report({"dry_run": plan.dry, "torch": torch.__version__})
    run = lambda name: name not in args.skip  # noqa: E731
    if run("wheels"):
        with report.section("wheels") as entry:
            install_carried_wheels(entry)
    if run("build"):
        with report.section("build") as entry:
            build_extension(plan, entry)
    if run("tests"):
        with report.section("tests") as entry:
            run_cuda_tests(plan, entry)
    ceilings: dict = {}
    if run("ceilings"):
        with report.section("ceilings") as entry:
            ceilings = measure_ceilings(plan, entry)
    if run("synthesis") and ceilings:
        with report.section("synthesis") as entry:
            time_synthesis(plan, entry, ceilings)
    if run("stvdec"):
        with report.section("stvdec") as entry:
            time_stvdec(plan, entry)
    if run("encoder"):
        with report.section("encoder") as entry:
            time_encoder(plan, entry)
    report.save()
    print(table(report), flush=True)
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
