"""Encoding a corpus: one stvenc job per clip, several at once, resumable, nothing lost (`stv-batch`).

Each clip runs in a process of its own (so a crash, a kill or running out of memory costs that clip's attempt and
nothing else) and calls stvenc's own `encode` with stvenc's options, so its output is what `stvenc IN OUT OPTIONS`
writes, byte for byte. Outputs appear only complete (the writer's temporary file, then a rename); a dead attempt's
temporary file is removed before the retry. After each success a small record beside the outputs
(OUT_DIR/.stv-batch/NAME.json) keeps the input's sha256, the options and the output's sha256: `--resume` skips a
clip only when its output exists, reads without damage, and matches that record.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from codec.digests import sha256_of
from codec.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".y4m")
RECORDS = ".stv-batch"
FAULT_ENV = "STV_BATCH_FAULT"  # tests only: "NAME:STAGE:TIMES" kills the worker of clip NAME after STAGE, TIMES times


@dataclass(frozen=True)
class Clip:
    input: Path
    output: Path
    frames: str | None = None  # A:B for this clip (its line of a list), else stvenc's options decide


@dataclass
class ClipResult:
    input: str
    output: str
    status: str  # "ok", "failed" or "skipped"
    seconds: float = 0.0
    frames: int | None = None
    bytes: int | None = None
    id_frame: int | None = None
    error: str | None = None
    attempts: int = 0


@dataclass
class BatchReport:
    clips: list[ClipResult] = field(default_factory=list)

    @property
    def totals(self) -> dict:
        done = [c for c in self.clips if c.status == "ok"]
        return {
            "clips": len(self.clips),
            **{status: sum(c.status == status for c in self.clips) for status in ("ok", "failed", "skipped")},
            "frames": sum(c.frames or 0 for c in done),
            "bytes": sum(c.bytes or 0 for c in done),
            "seconds": round(sum(c.seconds for c in self.clips), 3),
        }

    def to_json(self) -> dict:
        return {"clips": [asdict(c) for c in self.clips], "totals": self.totals}


# --- what to encode -----------------------------------------------------------------------------------------------

def _listed(path: Path) -> list[tuple[Path, str | None]]:
    """A .txt list (one PATH [A:B] per line, # comments) or a .csv (columns input[,frames], a header row)."""
    base = path.parent
    entries = []
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if "input" not in row:
                    raise InputError(f"{path}: a CSV list needs an 'input' column (and optionally 'frames')")
                entries.append((base / row["input"].strip(), (row.get("frames") or "").strip() or None))
        return entries
    for line in path.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if words:
            entries.append((base / words[0], words[1] if len(words) > 1 else None))
    return entries


def expand_inputs(items: list[str | Path], out_dir: Path) -> list[Clip]:
    """Files, folders (their video files) and .txt/.csv lists -> the clips, each with OUT_DIR/STEM.stv."""
    found: list[tuple[Path, str | None]] = []
    for item in map(Path, items):
        if item.is_dir():
            found += [(p, None) for p in sorted(item.iterdir()) if p.suffix.lower() in VIDEO_SUFFIXES]
        elif item.suffix.lower() in (".txt", ".csv") and item.is_file():
            found += _listed(item)
        else:
            found.append((item, None))
    clips, names = [], {}
    for path, frames in found:
        output = out_dir / f"{path.stem}.stv"
        if output.name in names:
            raise InputError(f"{path} and {names[output.name]} would both write {output}: rename one")
        names[output.name] = path
        clips.append(Clip(path, output, frames))
    if not clips:
        raise InputError("no clips to encode: give video files, folders holding them, or a .txt/.csv list")
    return clips


def stvenc_args(clip: Clip, options: list[str]) -> list[str]:
    """The stvenc command line (after `stvenc`) that this clip's job is equivalent to."""
    frames = ["--frames", clip.frames] if clip.frames else []
    return [str(clip.input), str(clip.output), *options, *frames]


# --- resume records -----------------------------------------------------------------------------------------------

def _record_path(clip: Clip) -> Path:
    return clip.output.parent / RECORDS / f"{clip.output.name}.json"


def _remember(clip: Clip, options: list[str]) -> None:
    record = {"input_sha256": sha256_of(clip.input), "stvenc": stvenc_args(clip, options),
              "output_sha256": sha256_of(clip.output)}
    path = _record_path(clip)
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def already_done(clip: Clip, options: list[str]) -> bool:
    """The clip's output exists, reads without damage, and was made from these input bytes with these options."""
    from codec.bitstream import StvReader

    try:
        record = json.loads(_record_path(clip).read_text())
        if record.get("stvenc") != stvenc_args(clip, options) or record.get("input_sha256") != sha256_of(clip.input):
            return False
        if record.get("output_sha256") != sha256_of(clip.output):
            return False
        return StvReader(clip.output).validate() == []
    except Exception:  # noqa: BLE001 - anything missing or unreadable means "not done"
        return False


def _remove_leftovers(clip: Clip) -> None:
    """A killed attempt's temporary file (the writer's `.NAME.*.part`)."""
    for leftover in clip.output.parent.glob(f".{clip.output.name}.*.part"):
        leftover.unlink(missing_ok=True)


# --- one clip, in its own process ---------------------------------------------------------------------------------

def _install_fault(clip: Clip, attempt: int) -> None:
    """Tests only (FAULT_ENV): die without a word after a given encoder stage, as a killed worker would."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    name, stage, times = spec.split(":")
    if clip.input.name != name or attempt > int(times):
        return
    import logging

    class Killer(logging.Handler):
        def emit(self, record):
            if getattr(record, "stage", None) == stage:
                os._exit(70)

    encoder_log = logging.getLogger("codec.encoder")
    encoder_log.addHandler(Killer())
    encoder_log.setLevel(logging.INFO)


# What stvenc's arithmetic depends on that an engine may change in its workers (Ray sets OMP_NUM_THREADS=1 in
# its tasks, and another thread count sums floats in another order): the driver's values travel with each job.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _driver_threads() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in THREAD_VARIABLES}


def _encode_one(clip: Clip, options: list[str], attempt: int, answer, threads: dict[str, str | None]) -> None:
    """Worker body: stvenc's encode for this clip; sends (result fields) or (error line) back."""
    for name, value in threads.items():  # before torch is imported
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    from codec.cli import stvenc

    _install_fault(clip, attempt)
    args = stvenc_args(clip, options)
    try:
        context = stvenc.main.make_context("stvenc", list(args))
        params = dict(context.params, quiet=True, overwrite=True)
        report = stvenc.encode(params, note="stvenc " + " ".join(shlex.quote(a) for a in args))
        answer.send({"frames": report.frames, "bytes": report.bytes_written, "id_frame": report.id_frame})
    except BaseException as exc:  # noqa: BLE001 - one clip's failure is reported, never raised into the batch
        message = getattr(exc, "format_message", lambda: str(exc))()
        answer.send({"error": " ".join(str(message or type(exc).__name__).split())})
    finally:
        answer.close()


def _attempt(clip: Clip, options: list[str], attempt: int, threads: dict[str, str | None]) -> dict:
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_encode_one, args=(clip, options, attempt, send, threads), daemon=True)
    process.start()
    send.close()
    try:
        answer = receive.recv()
    except EOFError:
        answer = None
    process.join()
    if answer is None:
        return {"error": f"the worker died (exit status {process.exitcode}) before finishing", "died": True}
    return answer


def run_clip(clip: Clip, options: list[str], retries: int, threads: dict[str, str | None] | None = None) -> ClipResult:
    """Encode one clip, retrying an attempt whose worker died (up to `retries` more times); a clean failure
    (bad input, no face) is not retried: it would fail the same way. `threads`: the thread settings the encode
    runs with (default: this process's)."""
    threads = _driver_threads() if threads is None else threads
    started = time.perf_counter()
    result = ClipResult(str(clip.input), str(clip.output), "failed")
    for attempt in range(1, retries + 2):
        result.attempts = attempt
        _remove_leftovers(clip)
        answer = _attempt(clip, options, attempt, threads)
        if "error" not in answer:
            _remember(clip, options)
            result.status, result.error = "ok", None
            result.frames, result.bytes, result.id_frame = answer["frames"], answer["bytes"], answer["id_frame"]
            break
        result.error = answer["error"]
        if not answer.get("died"):
            break
    _remove_leftovers(clip)
    result.seconds = round(time.perf_counter() - started, 3)
    return result


# --- the batch ----------------------------------------------------------------------------------------------------

def run_batch(clips: list[Clip], options: list[str], jobs: int = 1, resume: bool = False, retries: int = 2,
              on_done: Callable[[ClipResult], None] | None = None, engine: str = "local",
              address: str | None = None, gpus_per_job: float = 0.0) -> BatchReport:
    """Every clip, `jobs` at a time; results in input order. engine "local": threads on this machine, each
    waiting on one clip's process; "ray": one Ray task per clip (run_clip, the same code), on a local Ray started
    here with `jobs` CPUs or on the cluster at `address`, each task asking for `gpus_per_job` GPUs (fractions
    share a GPU). On a cluster the inputs and OUT_DIR must be on storage every node sees."""
    results: dict[int, ClipResult] = {}
    pending = []
    for i, clip in enumerate(clips):
        if resume and already_done(clip, options):
            results[i] = ClipResult(str(clip.input), str(clip.output), "skipped")
            if on_done:
                on_done(results[i])
        else:
            pending.append(i)

    def finished(i: int, result: ClipResult) -> None:
        results[i] = result
        if on_done:
            on_done(result)

    if engine == "ray":
        _run_on_ray(clips, pending, options, retries, jobs, address, gpus_per_job, finished)
    elif engine == "local":
        from concurrent.futures import ThreadPoolExecutor, as_completed

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = {pool.submit(run_clip, clips[i], options, retries): i for i in pending}
            for future in as_completed(futures):
                finished(futures[future], future.result())
    else:
        raise InputError(f"unknown engine {engine!r}: use local or ray")
    return BatchReport([results[i] for i in range(len(clips))])


def _run_on_ray(clips: list[Clip], pending: list[int], options: list[str], retries: int, jobs: int,
                address: str | None, gpus_per_job: float, finished: Callable[[int, ClipResult], None]) -> None:
    try:
        import ray
    except ImportError:
        raise InputError("the ray engine needs Ray: pip install 'stv[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        # a local Ray sized by --jobs, or the cluster at --address (its size is the cluster's)
        ray.init(address=address, num_cpus=None if address else jobs, include_dashboard=False,
                 logging_level="ERROR", log_to_driver=False)
    try:
        # Ray's own retries stay off: run_clip retries a dead attempt itself, the same way on both engines
        task = ray.remote(num_cpus=1, num_gpus=gpus_per_job, max_retries=0)(run_clip)
        waiting = {task.remote(clips[i], options, retries, _driver_threads()): i for i in pending}
        while waiting:
            (ready,), _ = ray.wait(list(waiting), num_returns=1)
            i = waiting.pop(ready)
            try:
                finished(i, ray.get(ready))
            except ray.exceptions.RayError as exc:  # the task's own process died: the clip fails alone
                reason = " ".join(str(exc).split())[:300]
                finished(i, ClipResult(str(clips[i].input), str(clips[i].output), "failed", error=reason))
    finally:
        if started_here:
            ray.shutdown()
