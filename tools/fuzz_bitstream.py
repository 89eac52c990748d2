"""Fuzz the .stv reader and the `stvinfo` paths with mutations of the golden files; count the outcomes.

    python tools/fuzz_bitstream.py [--inputs N] [--seed S] [--jobs J] [--engine mutate|atheris]
                                   [--time-limit SECONDS] [--json] [--save-failures DIR]

Inputs are mutations of the golden files in tests/data (format_spec.md names every field they touch):

- byte level: bit flips, bytes set to random or boundary values, insertions, deletions, truncations;
- chunk level: chunks of the goldens spliced into a new order (dropped, repeated, moved, taken from another
  file), chunk head fields (profile, reserved, count, first frame, payload size) set to extremes, chunks
  re-encoded with other records, counts up to 65535 and first frames up to 2^32 - 1, floods of sync words;
- header level: every fixed field set to its extremes (frame count 0, 0xFFFFFFFE, 3,170,893,827, ...), quantisation
  entries to NaN/inf/0, the generator name and the extensions rewritten (invalid UTF-8, duplicate or non-ASCII
  tags, thousands of them), the ID latent's zstd frame replaced (wrong declared size, no declared size, a zstd
  checksum, a dictionary id, a huge window);
- and after most mutations the header CRC and every chunk CRC are recomputed, so that mutations get past the
  checksums to the checks behind them.

Input i is a pure function of (seed, i): a failure is reproduced by its index alone. `--engine atheris`
(pip install atheris) instead lets libFuzzer's coverage feedback choose what to mutate, with these mutations and
its own, in one process; the outcomes are classified the same way.

Each input is driven through what a user can ask of a file, in process: `StvReader` (open, `validate()`,
`iter_available()`, `list(reader)`, random access to the first, middle and last frame) and what `stvinfo` calls
for its summary, `--validate` and `--json` (`parse_frame_range`, `summary_lines`, `profile_summary`, `probe` of
the first two frames). Outcomes:

- ok: the file opens (damage, if any, is reported by `validate()`; counted apart as `ok_damaged`);
- rejected: the reader's own error (BitstreamError) with a one-line message, the CLI's exit 2;
- uncaught: any other exception, or a BitstreamError whose message is empty or spans lines: a bug;
- hang: the input ran past the per-input time limit (SIGALRM via signal.setitimer): DEFAULT_TIME_LIMIT, plus
  SECONDS_PER_FRAME for each intact frame the file holds. Timed without tracemalloc: tracing every allocation
  slows pure-Python work up to tenfold (a 0.9 MB sync flood: 0.46 s plain, 4.3 s traced), so an input that runs
  past the limit under tracing is run again untraced and classified by that run; such inputs are counted apart
  as `slow_only_traced` (their allocation was within bounds up to where tracing stopped them);
- over_allocation: more memory than format_spec.md §9 lets a reader take: tracemalloc's peak during the input
  exceeds ALLOC_PER_BYTE x the input's size + FIXED_ALLOWANCE (or a MemoryError). The fixed allowance is §9's
  fixed bounds with the reader's working copies: the 1 MiB ID latent plus CHUNK_WORK_FACTOR x the largest
  decoded chunk (65535 x 70 bytes), for the decompressed planes, the int16 records and their float64 values.

Figures (inputs per second and the outcome counts) are measured in this one run; `--json` ends the output with
one JSON line of them. With `--save-failures DIR`, one reproducer per distinct failure (kind, exception,
where) is shrunk (greedy deletions that keep the failure, CRCs recomputed; hangs are kept whole, their timing
does not shrink reliably) and written as DIR/<name>.stv with a DIR/<name>.txt saying what it is.
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import json
import multiprocessing
import os
import random
import signal
import sys
import time
import traceback
import tracemalloc
import zlib
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import zstandard

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from codec.bitstream import StvReader  # noqa: E402
from codec.bitstream.chunk import encode_chunk  # noqa: E402
from codec.bitstream.probe import probe, profile_summary  # noqa: E402
from codec.bitstream.schema import (  # noqa: E402
    CHUNK_HEAD_SIZE,
    CRC_SIZE,
    HEADER_PREFIX_SIZE,
    MAX_CHUNK_FRAMES,
    N_ALPHA,
    N_PARAMS,
    RECORD_SIZE,
    SYNC,
)
from codec.cli.stvinfo import parse_frame_range, summary_lines  # noqa: E402
from codec.errors import BitstreamError  # noqa: E402

SEED_DIR = ROOT / "tests" / "data"
OUTCOMES = ("ok", "rejected", "uncaught", "hang", "over_allocation")
FAILURES = ("uncaught", "hang", "over_allocation")

# Memory a reader may take for one input (format_spec.md §9), as checked by `run_one`.
ALLOC_PER_BYTE = 4  # the file's bytes, a copy of the header, a copy of one payload, slack
LATENT_BOUND = 1 << 20  # §9: the decompressed ID latent is at most 1 MiB
CHUNK_BOUND = MAX_CHUNK_FRAMES * RECORD_SIZE  # §9: an entropy payload decompresses to at most 4,587,450 bytes
# Decoding one 65535-frame entropy chunk to float64 values peaks at 36.8 MB (8.0x the bound: planes, uint16 and
# int32 temporaries, int16 records, float64 values), 41.4 MB (9.0x) while the reader still caches another
# chunk's records (measured on this reader, 2026-11-29); 10x leaves a margin.
CHUNK_WORK_FACTOR = 10
FIXED_ALLOWANCE = LATENT_BOUND + CHUNK_WORK_FACTOR * CHUNK_BOUND  # ~46.9 MB
ROW_BYTES = sys.getsizeof(np.zeros(N_PARAMS)) + 16  # one frame's values held in a list (array + list slot)
LIST_SLOT_BYTES = 8  # one pointer of a list's array
DEFAULT_TIME_LIMIT = 5.0  # seconds per input; the goldens take about a millisecond
# ...plus this much per frame the file holds: an entropy chunk codes 65535 constant frames in ~300 bytes, and
# listing them is real work (~3 us a frame, ~15 us under tracemalloc), not a hang.
SECONDS_PER_FRAME = 1e-4


# ---------------------------------------------------------------------------------------------- seed layout


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    size: int  # bytes; integers are little-endian unsigned, `kind` "f32" marks a float


@dataclass(frozen=True)
class Seed:
    name: str
    data: bytes
    header_size: int
    fields: tuple[Field, ...]  # the header's fixed-size fields
    ext_count_offset: int  # where the extension list starts (its u16 count)
    chunks: tuple[tuple[int, int], ...]  # (offset, end) of every chunk


def u(data: bytes | bytearray, offset: int, size: int) -> int:
    return int.from_bytes(data[offset : offset + size], "little")


def header_fields(data: bytes) -> tuple[list[Field], int]:
    """Walk an intact header (format_spec.md §3): its fixed-size fields and the offset of the extension count."""
    fields = [Field("major", 8, 1), Field("minor", 9, 1), Field("flags", 10, 2), Field("header_size", 12, 4),
              Field("width", 16, 2), Field("height", 18, 2), Field("fps_num", 20, 4), Field("fps_den", 24, 4),
              Field("frame_count", 28, 4), Field("name_length", 32, 1)]
    at = 33 + data[32] + 32  # past the name and the generator digest
    for k in range(N_ALPHA):
        fields += [Field(f"layer_{k}", at, 2), Field(f"channel_{k}", at + 2, 2)]
        at += 4
    for k in range(N_PARAMS):
        fields += [Field(f"scale_{k}", at, 4), Field(f"offset_{k}", at + 4, 4)]
        at += 8
    fields += [Field("latent_rows", at, 2), Field("latent_dim", at + 2, 2), Field("latent_size", at + 4, 4)]
    return fields, at + 8 + u(data, at + 4, 4)


def load_seeds(directory: Path = SEED_DIR) -> list[Seed]:
    """Every golden file the reader opens (intact or damaged on purpose); those it rejects add nothing a mutation
    of another golden would not reach."""
    seeds = []
    for path in sorted(directory.glob("*.stv")):
        data = path.read_bytes()
        try:
            reader = StvReader(data)
        except BitstreamError:
            continue
        fields, ext_at = header_fields(data)
        seeds.append(Seed(path.name, data, reader.header_size, tuple(fields), ext_at,
                          tuple((c.offset, c.end) for c in reader.chunks)))
    if not seeds:
        raise SystemExit(f"no readable .stv seed files in {directory}")
    return seeds


# ---------------------------------------------------------------------------------------------- fix-ups


def fix_header_crc(data: bytearray) -> None:
    size = u(data, 12, 4)
    if HEADER_PREFIX_SIZE + CRC_SIZE <= size <= len(data):
        data[size - CRC_SIZE : size] = zlib.crc32(bytes(data[: size - CRC_SIZE])).to_bytes(4, "little")


def fix_chunk_crcs(data: bytearray) -> None:
    """Recompute the CRC of every chunk head found after the header whose claimed payload fits in the file."""
    pos = max(HEADER_PREFIX_SIZE, min(u(data, 12, 4), len(data)))
    while (pos := data.find(SYNC, pos)) != -1:
        if pos + CHUNK_HEAD_SIZE <= len(data):
            end = pos + CHUNK_HEAD_SIZE + u(data, pos + 12, 4) + CRC_SIZE
            if end <= len(data):
                data[end - CRC_SIZE : end] = zlib.crc32(bytes(data[pos + 4 : end - CRC_SIZE])).to_bytes(4, "little")
        pos += 1


def fix_all(data: bytearray) -> None:
    fix_header_crc(data)
    fix_chunk_crcs(data)


def chunk_bytes(body: bytes) -> bytes:
    """A chunk from its head fields after the sync word and its payload (`body`), with a correct CRC."""
    return SYNC + body + zlib.crc32(body).to_bytes(4, "little")


# ---------------------------------------------------------------------------------------------- mutators

BOUNDARY = (0, 1, 0x7F, 0x80, 0xFE, 0xFF)


def extremes(rng: random.Random, size: int, original: int) -> int:
    top = (1 << (8 * size)) - 1
    return rng.choice([0, 1, 2, top, top - 1, top >> 1, (top >> 1) + 1, max(0, original - 1),
                       min(top, original + 1), rng.randint(0, top), min(top, original * rng.randint(2, 1000))])


FLOAT_EXTREMES = [float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1e-45, 3.4e38, -3.4e38, 1.0, -1.0]
FRAME_COUNTS = [0, 1, 23, 24, 25, 100_000, 3_170_893_827, 0xFFFF_FFFE, 0xFFFF_FFFF, 1 << 31]


def m_flip_bits(rng, data, seeds):
    for _ in range(rng.randint(1, 8)):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)


def m_set_bytes(rng, data, seeds):
    for _ in range(rng.randint(1, 4)):
        if data:
            data[rng.randrange(len(data))] = rng.choice(BOUNDARY) if rng.random() < 0.5 else rng.randrange(256)


def m_insert(rng, data, seeds):
    at = rng.randint(0, len(data))
    if data and rng.random() < 0.5:  # a copy of bytes from elsewhere in the file
        lo = rng.randrange(len(data))
        data[at:at] = data[lo : lo + rng.randint(1, 64)]
    else:
        data[at:at] = rng.randbytes(rng.randint(1, 64))


def m_delete(rng, data, seeds):
    if data:
        lo = rng.randrange(len(data))
        del data[lo : lo + rng.randint(1, 64)]


def m_truncate(rng, data, seeds):
    del data[rng.randint(0, len(data)) :]


def m_splice_chunks(rng, data, seeds):
    """One seed's header, then chunks drawn from all seeds: dropped, repeated, reordered, foreign."""
    base = rng.choice(seeds)
    pool = [s.data[o:e] for s in seeds for o, e in s.chunks]
    own = [base.data[o:e] for o, e in base.chunks]
    picks = own[:] if rng.random() < 0.5 else [rng.choice(pool) for _ in range(rng.randint(0, 6))]
    if picks and rng.random() < 0.5:
        rng.shuffle(picks)
    if picks and rng.random() < 0.3:
        picks.insert(rng.randint(0, len(picks)), rng.choice(picks))
    if picks and rng.random() < 0.3:
        del picks[rng.randrange(len(picks))]
    data[:] = base.data[: base.header_size] + b"".join(picks)


def m_header_field(rng, data, seeds):
    seed = _seed_of(data, seeds)
    for _ in range(rng.randint(1, 3)):
        field = rng.choice(seed.fields)
        if field.offset + field.size > len(data):
            continue
        if field.name.startswith(("scale_", "offset_")):
            data[field.offset : field.offset + 4] = np.float32(rng.choice(FLOAT_EXTREMES)).tobytes()
            continue
        if field.name == "frame_count" and rng.random() < 0.7:
            value = rng.choice(FRAME_COUNTS)
        else:
            value = extremes(rng, field.size, u(data, field.offset, field.size))
        data[field.offset : field.offset + field.size] = value.to_bytes(field.size, "little")
    fix_header_crc(data)


def m_chunk_field(rng, data, seeds):
    """A chunk head field (profile, reserved, count, first frame, payload size) set to an extreme, CRC fixed."""
    heads = _sync_positions(data)
    if not heads:
        return
    at = rng.choice(heads)
    offset, size = rng.choice([(4, 1), (5, 1), (6, 2), (8, 4), (12, 4)])
    if at + offset + size <= len(data):
        value = extremes(rng, size, u(data, at + offset, size))
        data[at + offset : at + offset + size] = value.to_bytes(size, "little")
    fix_chunk_crcs(data)


def m_reencode_chunk(rng, data, seeds):
    """Replace a chunk (or append one) by an intact chunk holding other records, counts and first frames."""
    count = rng.choice([1, 2, rng.randint(1, 300), MAX_CHUNK_FRAMES - 1, MAX_CHUNK_FRAMES])
    profile = rng.choice([0, 1])
    if profile == 0:
        count = min(count, 2000)  # raw chunks cost their size in bytes: keep inputs small
    first = rng.choice([0, rng.randint(0, 50), 0xFFFF_FFFF - count + 1, 0xFFFF_FFFF - count + 2,
                        0xFFFF_FFFF, rng.randrange(1 << 32)])
    if count > 300 or rng.random() < 0.3:  # constant records: an entropy chunk of 65535 frames in ~300 bytes
        body = bytearray(_constant_chunk(count, profile)[len(SYNC) : -CRC_SIZE])
        body[4:8] = min(first, 0xFFFF_FFFF).to_bytes(4, "little")
        chunk = chunk_bytes(bytes(body))
    else:
        records = np.random.default_rng(rng.randrange(1 << 32)).integers(-32768, 32768, (count, N_PARAMS), np.int16)
        chunk = encode_chunk(records, min(first, 0xFFFF_FFFF), profile)
    heads = _sync_positions(data)
    if heads and rng.random() < 0.7:
        lo = rng.choice(heads)
        end = lo + CHUNK_HEAD_SIZE + u(data, lo + 12, 4) + CRC_SIZE if lo + CHUNK_HEAD_SIZE <= len(data) else len(data)
        data[lo : min(end, len(data))] = chunk
    else:
        data += chunk


@functools.lru_cache(maxsize=16)
def _constant_chunk(count: int, profile: int) -> bytes:
    return encode_chunk(np.zeros((count, N_PARAMS), np.int16), 0, profile)


def m_zstd_frame(rng, data, seeds):
    """Swap the ID latent's zstd frame or an entropy payload for an odd but CRC-correct zstd frame."""
    seed = _seed_of(data, seeds)
    latent = {f.name: f for f in seed.fields}
    rows_at = latent["latent_rows"].offset
    in_header = rng.random() < 0.5 and rows_at + 8 <= len(data)
    expected = u(data, rows_at, 2) * u(data, rows_at + 2, 2) * 2 if in_header else None
    heads = [h for h in _sync_positions(data) if h + CHUNK_HEAD_SIZE <= len(data)]
    if not in_header:
        if not heads:
            return
        at = rng.choice(heads)
        expected = u(data, at + 6, 2) * RECORD_SIZE
    size = rng.choice([expected, expected, max(0, expected - 1), expected + 1, 0, 1 << 30, rng.randint(0, 1 << 20)])
    content = bytes(min(size, 1 << 22)) if rng.random() < 0.5 else rng.randbytes(min(size, 4096))
    kind = rng.choice(["plain", "no_size", "checksum", "dict_id", "window", "garbage", "two_frames"])
    if kind == "garbage":
        frame = rng.randbytes(rng.randint(0, 64))
    else:
        params = dict(level=rng.choice([1, 3]), write_content_size=kind != "no_size",
                      write_checksum=kind == "checksum", write_dict_id=kind == "dict_id")
        if kind == "dict_id":
            params["dict_data"] = zstandard.ZstdCompressionDict(rng.randbytes(64) * 8, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        if kind == "window":
            params = dict(compression_params=zstandard.ZstdCompressionParameters(window_log=rng.choice([10, 27, 31])))
        try:
            frame = zstandard.ZstdCompressor(**params).compress(content)
        except zstandard.ZstdError:
            frame = zstandard.ZstdCompressor().compress(content)
        if kind == "two_frames":
            frame += frame
        if kind == "window":
            frame = _claim_window(frame, rng)
    if in_header:
        _replace_latent(data, seed, frame)
    else:
        count = u(data, at + 6, 2)
        data[at : at + CHUNK_HEAD_SIZE + u(data, at + 12, 4) + CRC_SIZE] = chunk_bytes(
            bytes([1, 0]) + count.to_bytes(2, "little") + data[at + 8 : at + 12] + len(frame).to_bytes(4, "little")
            + frame)


def m_header_text(rng, data, seeds):
    """Rewrite the generator name or the extensions: invalid UTF-8, empty, duplicate and non-ASCII tags, many."""
    seed = _seed_of(data, seeds)
    if seed.ext_count_offset + 2 > len(data) or u(data, 12, 4) != seed.header_size:
        return
    head = bytes(data[: seed.header_size - CRC_SIZE])
    rest = bytes(data[seed.header_size :])
    if rng.random() < 0.4:
        name = rng.choice([b"", b"\xff\xfe", "tiny-64".encode(), "ü".encode() * 127 + b"\xc3", rng.randbytes(255),
                           b"tiny-64\x00"])[:255]
        name_len = data[32]
        head = head[:32] + bytes([len(name)]) + name + head[33 + name_len :]
        ext_at = seed.ext_count_offset - name_len + len(name)
    else:
        ext_at = seed.ext_count_offset
    if rng.random() < 0.8:
        tags = [b"note", b"pose", b"zzz1", b"\xff\x00ab", "é!".encode("utf-8")[:4].ljust(4, b"x"), rng.randbytes(4)]
        payloads = [b"", b"\xff\xfe\xfd", b"{", b"[1, 2]", b'{"editor": 7}', b"null", rng.randbytes(40),
                    b'{"editor": "linear", "model": "tiny-pose"}' * rng.randint(1, 3)]
        n = rng.choice([0, 1, 2, rng.randint(3, 20), rng.randint(100, 3000)])
        exts = b"".join(rng.choice(tags) + len(p).to_bytes(4, "little") + p
                        for p in (rng.choice(payloads) for _ in range(n)))
        claimed = n if rng.random() < 0.8 else extremes(rng, 2, n)
        head = head[:ext_at] + claimed.to_bytes(2, "little") + exts
    size = len(head) + CRC_SIZE
    head = head[:12] + size.to_bytes(4, "little") + head[16:]
    data[:] = head + zlib.crc32(head).to_bytes(4, "little") + rest


def m_sync_flood(rng, data, seeds):
    """Insert runs of chunk heads (sync word, random fields) claiming payloads that end inside the run, so that
    each one is a candidate a resync must check. Rarely (0.5%) a run of 40,000-70,000 heads (~1 MB): a reader
    that checks each candidate over its whole claimed payload takes quadratic time on it."""
    at = rng.randint(min(len(data), 16), len(data)) if data else 0
    n = rng.randint(40_000, 70_000) if rng.random() < 0.005 else rng.choice([4, 64, rng.randint(100, 2000)])
    to_end = rng.random() < 0.5

    def payload(k: int) -> int:
        return max(0, 16 * (n - k) - 20) if to_end else rng.choice([70, 140, 16 * n, rng.randint(0, 1 << 16)])

    data[at:at] = b"".join(SYNC + bytes([rng.choice([0, 1, 7]), 0]) + rng.randint(1, 3).to_bytes(2, "little")
                           + rng.randint(0, 30).to_bytes(4, "little") + payload(k).to_bytes(4, "little")
                           for k in range(n))


MUTATORS = {
    "flip_bits": (m_flip_bits, 3), "set_bytes": (m_set_bytes, 3), "insert": (m_insert, 2), "delete": (m_delete, 2),
    "truncate": (m_truncate, 2), "splice_chunks": (m_splice_chunks, 2), "header_field": (m_header_field, 4),
    "chunk_field": (m_chunk_field, 3), "reencode_chunk": (m_reencode_chunk, 2), "zstd_frame": (m_zstd_frame, 2),
    "header_text": (m_header_text, 2), "sync_flood": (m_sync_flood, 1),
}
BYTE_LEVEL = {"flip_bits", "set_bytes", "insert", "delete", "truncate"}


def _sync_positions(data: bytearray) -> list[int]:
    found, pos = [], max(HEADER_PREFIX_SIZE, min(u(data, 12, 4), len(data)))
    while (pos := data.find(SYNC, pos)) != -1 and len(found) < 4096:
        found.append(pos)
        pos += 1
    return found


def _seed_of(data: bytearray, seeds: list[Seed]) -> Seed:
    """The seed whose header this input still starts with (field offsets are valid for it), else the first."""
    for seed in seeds:
        if data[: seed.header_size] == seed.data[: seed.header_size]:
            return seed
    for seed in seeds:
        if len(data) >= 33 and data[32] == seed.data[32] and u(data, 12, 4) == seed.header_size:
            return seed
    return seeds[0]


def _replace_latent(data: bytearray, seed: Seed, frame: bytes) -> None:
    at = {f.name: f for f in seed.fields}["latent_size"].offset
    if u(data, 12, 4) != seed.header_size or at + 4 > len(data):
        return
    old = u(data, at, 4)
    head = bytes(data[: at]) + len(frame).to_bytes(4, "little") + frame + bytes(data[at + 4 + old : seed.header_size - CRC_SIZE])
    head = head[:12] + (len(head) + CRC_SIZE).to_bytes(4, "little") + head[16:]
    data[:] = head + zlib.crc32(head).to_bytes(4, "little") + bytes(data[seed.header_size :])


def _claim_window(frame: bytes, rng: random.Random) -> bytes:
    """Set the window descriptor of a frame without a single-segment flag to a random (often huge) value."""
    if len(frame) > 5 and not frame[4] & 0x20:
        return frame[:5] + bytes([rng.choice([0xF8, 0xFF, 0x00, rng.randrange(256)])]) + frame[6:]
    return frame


def make_input(seeds: list[Seed], seed: int, index: int) -> tuple[bytes, list[str]]:
    """Input `index` of the campaign `seed`: a golden file with 1-3 mutations (and usually CRCs fixed up)."""
    rng = random.Random(f"stv-fuzz:{seed}:{index}")
    data = bytearray(rng.choice(seeds).data)
    names, weights = zip(*((n, w) for n, (_, w) in MUTATORS.items()))
    applied = rng.choices(names, weights, k=rng.choice([1, 1, 2, 3]))
    for name in applied:
        MUTATORS[name][0](rng, data, seeds)
    if any(n in BYTE_LEVEL for n in applied) and rng.random() < 0.6:
        fix_all(data)
        applied.append("fix_crcs")
    return bytes(data), applied


# ---------------------------------------------------------------------------------------------- one input


class _Timeout(BaseException):
    """Raised by SIGALRM; a BaseException so that no `except Exception` in the code under test swallows it."""


class _OverAllocation(BaseException):
    def __init__(self, stage: str, peak: int, limit: int):
        super().__init__(f"peak {peak} bytes during {stage} (limit {limit})")
        self.stage = stage


def _alarm(signum, frame):
    raise _Timeout()


class _Stages:
    """Names what `exercise` is doing, and checks tracemalloc's peak against the limit at the end of each step."""

    def __init__(self, limit: int, time_limit: float):
        self.limit, self.name, self.extra = limit, "StvReader()", 0
        self.time_limit = time_limit

    def allow_frames(self, frames: int) -> None:
        """The file holds `frames` intact frames: give the time limit SECONDS_PER_FRAME for each."""
        signal.setitimer(signal.ITIMER_REAL, signal.getitimer(signal.ITIMER_REAL)[0] + SECONDS_PER_FRAME * frames)
        self.time_limit += SECONDS_PER_FRAME * frames

    def __call__(self, name: str, extra: int = 0) -> None:
        """End the current step (checking its peak); the next, `name`, may also hold `extra` bytes of results."""
        limit = self.limit + self.extra
        peak = tracemalloc.get_traced_memory()[1] - self.base
        if tracemalloc.is_tracing() and peak > limit:
            raise _OverAllocation(self.name, peak, limit)
        self.name, self.extra = name, extra
        self.start()

    def start(self) -> None:
        tracemalloc.reset_peak()
        self.base = tracemalloc.get_traced_memory()[0]


class _NoStages:
    def __call__(self, name: str, extra: int = 0) -> None:
        pass

    def allow_frames(self, frames: int) -> None:
        pass


def exercise(data: bytes, stage=_NoStages()) -> bool:
    """Everything a user can ask of the file through the reader and stvinfo. True if it opened with damage.

    `stage(name, extra)` is called as each step ends, with the name of the next and the bytes its results may
    hold: `list(reader)` holds the frames the file has (as many as the header claims would be too many).
    `stage.allow_frames(n)` extends the time limit by the work n frames justify."""
    reader = StvReader(data)
    n = len(reader)
    stage.allow_frames(sum(c.count for c in reader.chunks))
    stage("stvinfo --validate")
    start, stop = parse_frame_range(None, n)
    problems = reader.validate()
    profile_summary(reader)
    stage("stvinfo summary")
    summary_lines(reader)
    stage("stvinfo --json")
    probe(reader, 0, min(n, 2))  # two frames: the size of the output is the user's choice
    stage("iter_available()")
    for _ in reader.iter_available():
        pass
    stage("reader[i]")
    for index in sorted({0, n // 2, n - 1}) if n else ():
        try:
            reader[index]
        except BitstreamError:
            pass
    # list() sizes its array of pointers from len(reader) (the N frames the file presents, §9a: bounded by its
    # bytes, c frames per 20 bytes) before it asks for the first frame; iterating then stops at the first lost one
    stage("list(reader)", ROW_BYTES * _frames_from_zero(reader) + LIST_SLOT_BYTES * len(reader))
    try:
        list(reader)  # every frame in order; stops at the first unavailable one with BitstreamError
    except BitstreamError as exc:
        if "not available" not in str(exc):
            raise
    stage("done")
    assert (start, stop) == (0, n)
    return bool(problems)


def _frames_from_zero(reader: StvReader) -> int:
    """How many frames iterating the reader yields before the first one that is not available."""
    frames = 0
    for chunk in reader.chunks:
        if chunk.first_frame != frames:
            break
        frames = chunk.frames.stop
    return min(frames, len(reader))


@dataclass
class Result:
    outcome: str
    damaged: bool = False
    detail: str = ""  # exception and where, for failures
    signature: str = ""  # what makes two failures the same bug
    slow_only_traced: bool = False  # past the time limit under tracemalloc only (see the module's docstring)


def _where(tb) -> str:
    frames = traceback.extract_tb(tb)
    ours = [f for f in frames if "/codec/" in f.filename] or frames
    f = ours[-1]
    name = Path(f.filename)
    return f"{name.relative_to(ROOT) if name.is_relative_to(ROOT) else name}:{f.lineno} ({f.name})"


def run_one(data: bytes, time_limit: float = DEFAULT_TIME_LIMIT, trace: bool = True) -> Result:
    """Drive one input; classify it. `trace`: measure its allocations (tracemalloc runs for this input only)."""
    stages = _Stages(ALLOC_PER_BYTE * len(data) + FIXED_ALLOWANCE, time_limit)
    started_tracing = trace and not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    stages.start()
    try:
        result = Result("ok", exercise(data, stages))
    except _Timeout:
        result = Result("hang", detail=f"over {stages.time_limit:g} s during {stages.name}",
                        signature=f"hang:{stages.name}")
    except _OverAllocation as exc:
        result = Result("over_allocation", detail=f"{exc} for a {len(data)}-byte input",
                        signature=f"over_allocation:{exc.stage}")
    except BitstreamError as exc:
        message = str(exc)
        if message and "\n" not in message:
            result = Result("rejected")
        else:
            where = _where(exc.__traceback__)
            result = Result("uncaught", detail=f"BitstreamError with an empty or multi-line message at {where} "
                                               f"during {stages.name}: {message!r}",
                            signature=f"uncaught:message:{where}")
    except MemoryError as exc:
        where = _where(exc.__traceback__)
        result = Result("over_allocation", detail=f"MemoryError at {where} during {stages.name}",
                        signature=f"over_allocation:MemoryError:{stages.name}:{where}")
    except Exception as exc:  # noqa: BLE001 - anything else is the bug this tool looks for
        where = _where(exc.__traceback__)
        result = Result("uncaught", detail=f"{type(exc).__name__}: {str(exc)[:300]} at {where} during {stages.name}",
                        signature=f"uncaught:{type(exc).__name__}:{where}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if started_tracing:
            tracemalloc.stop()
    if result.outcome == "hang" and started_tracing:
        untraced = run_one(data, time_limit, trace=False)
        if untraced.outcome != "hang":
            return replace(untraced, slow_only_traced=True)
    return result


# ---------------------------------------------------------------------------------------------- campaign

_seeds: list[Seed] = []


def _init_worker() -> None:
    global _seeds
    _seeds = load_seeds()


def _run_batch(args: tuple[int, int, int, float]) -> tuple[Counter, int, dict]:
    """Inputs [lo, hi) of campaign `seed`: outcome counts, damaged count, one example index per failure."""
    seed, lo, hi, time_limit = args
    counts, damaged, failures = Counter(), 0, {}
    for index in range(lo, hi):
        data, applied = make_input(_seeds, seed, index)
        result = run_one(data, time_limit)
        counts[result.outcome] += 1
        counts["slow_only_traced"] += result.slow_only_traced
        damaged += result.damaged
        if result.outcome in FAILURES:
            entry = failures.setdefault(result.signature, {"count": 0, "index": index, "detail": result.detail,
                                                            "mutations": applied, "size": len(data)})
            entry["count"] += 1
    return counts, damaged, failures


@dataclass
class Campaign:
    inputs: int
    seconds: float
    counts: Counter
    damaged: int
    failures: dict  # signature -> {count, index, detail, mutations, size, [saved]}

    def figures(self, seed: int, jobs: int, time_limit: float) -> dict:
        return {
            "inputs": self.inputs, "seed": seed, "jobs": jobs, "seconds": round(self.seconds, 3),
            "inputs_per_second": round(self.inputs / self.seconds, 1) if self.seconds else None,
            "outcomes": {k: self.counts.get(k, 0) for k in OUTCOMES}, "ok_damaged": self.damaged,
            "slow_only_traced": self.counts.get("slow_only_traced", 0),
            "time_limit_s": time_limit,
            "allocation_limit": f"{ALLOC_PER_BYTE} x input bytes + {FIXED_ALLOWANCE} bytes",
            "failures": [{"signature": s, **f} for s, f in sorted(self.failures.items())],
        }


def _merge_failures(failures: dict, part: dict) -> None:
    """Add one batch's failures: counts add up, the lowest index stays the example."""
    for signature, f in part.items():
        if signature in failures:
            failures[signature]["count"] += f["count"]
            if f["index"] < failures[signature]["index"]:
                failures[signature].update(index=f["index"], detail=f["detail"], mutations=f["mutations"],
                                           size=f["size"])
        else:
            failures[signature] = dict(f)


def corpus_digest(seeds: list[Seed]) -> str:
    """What the campaign is: its inputs are mutations of these files (input i depends on (seed, i) and on them),
    run through this tool and this reader (their sources), so a changed one makes another campaign."""
    h = hashlib.sha256()
    for s in seeds:
        h.update(s.name.encode() + b"\0" + s.data)
    bitstream = Path(__file__).resolve().parents[1] / "codec" / "bitstream"
    for source in [Path(__file__).resolve(), *sorted(bitstream.glob("*.py"))]:
        h.update(source.name.encode() + b"\0" + source.read_bytes())
    return h.hexdigest()[:16]


def _finished_batches(checkpoint: Path | None, seed: int, time_limit: float, corpus: str) -> dict[int, dict]:
    """lo -> the batch's stored result, from a checkpoint of the same campaign (seed, time limit, seed files)."""
    done: dict[int, dict] = {}
    if checkpoint is None or not checkpoint.is_file():
        return done
    for line in checkpoint.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill: that batch runs again
        if (entry.get("seed"), entry.get("time_limit"), entry.get("corpus")) != (seed, time_limit, corpus):
            raise SystemExit(f"{checkpoint}: a checkpoint of another campaign (seed {entry.get('seed')}, time limit "
                             f"{entry.get('time_limit')}, seed files and sources {entry.get('corpus')}); use "
                             "another file")
        done[entry["lo"]] = entry
    return done


def run_campaign(inputs: int, seed: int = 0, jobs: int = 1, time_limit: float = DEFAULT_TIME_LIMIT,
                 batch: int = 250, checkpoint: Path | None = None) -> Campaign:
    """Inputs 0..inputs-1 of campaign `seed`, over `jobs` processes (1: in this process).

    With `checkpoint`, each finished batch is appended to that file (one JSON line), and the batches already there
    are not run again: a campaign longer than one sitting is stopped and resumed, and its figures are those of the
    whole (its seconds: the sum of each sitting's)."""
    corpus = corpus_digest(load_seeds())
    done = _finished_batches(checkpoint, seed, time_limit, corpus)
    tasks = [(seed, lo, min(lo + batch, inputs), time_limit) for lo in range(0, inputs, batch)
             if not (lo in done and done[lo]["hi"] == min(lo + batch, inputs))]
    counts, damaged, failures = Counter(), 0, {}
    earlier_seconds = 0.0
    for lo, entry in done.items():
        if lo < inputs and entry["hi"] == min(lo + batch, inputs):
            counts.update(entry["counts"])
            damaged += entry["damaged"]
            _merge_failures(failures, entry["failures"])
            earlier_seconds += entry["seconds"]
    started = last = time.perf_counter()

    def finished(task, part) -> None:
        nonlocal damaged, last
        part_counts, part_damaged, part_failures = part
        counts.update(part_counts)
        damaged += part_damaged
        _merge_failures(failures, part_failures)
        now = time.perf_counter()
        if checkpoint is not None:  # seconds: since the previous batch came in, so a sitting's add up to its time
            record = {"seed": seed, "time_limit": time_limit, "corpus": corpus, "lo": task[1], "hi": task[2],
                      "counts": dict(part_counts), "damaged": part_damaged, "failures": part_failures,
                      "seconds": now - last}
            with open(checkpoint, "a") as f:
                f.write(json.dumps(record) + "\n")
        last = now

    if jobs <= 1:
        _init_worker()
        for task in tasks:
            finished(task, _run_batch(task))
    else:
        # The forked workers must not finalise the parent's garbage: an object that owns threads (a video codec
        # context a test left in a reference cycle) would wait for threads that do not exist in the child
        gc.collect()
        gc.freeze()
        with multiprocessing.get_context("fork").Pool(jobs, initializer=_init_worker) as pool:
            for task, part in zip(tasks, pool.imap(_run_batch, tasks)):
                finished(task, part)
        gc.unfreeze()
    seconds = earlier_seconds + time.perf_counter() - started
    return Campaign(inputs, seconds, counts, damaged, failures)


# ---------------------------------------------------------------------------------------------- reproducers


def shrink(data: bytes, signature: str, time_limit: float, budget: int = 400, seconds: float = 60.0) -> bytes:
    """Greedy deletions (halving block sizes) that keep the same failure signature; CRCs recomputed after each.
    At most `budget` tries and about `seconds` (a hang costs the time limit per try)."""
    def same(candidate: bytes) -> bool:
        return run_one(candidate, time_limit).signature == signature

    deadline = time.monotonic() + seconds
    tries, block = 0, max(1, len(data) // 2)
    while block >= 1 and tries < budget and time.monotonic() < deadline:
        at, changed = 0, False
        while at < len(data) and tries < budget and time.monotonic() < deadline:
            cut = bytearray(data[:at] + data[at + block :])
            for candidate in (bytes(cut), _fixed(cut)):
                tries += 1
                if len(candidate) < len(data) and same(candidate):
                    data, changed = candidate, True
                    break
            else:
                at += block
        if not changed:
            block //= 2
    return data


def _fixed(data: bytearray) -> bytes:
    out = bytearray(data)
    fix_all(out)
    return bytes(out)


def save_failures(campaign: Campaign, directory: Path, seed: int, time_limit: float) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    seeds = load_seeds()
    for number, (signature, f) in enumerate(sorted(campaign.failures.items())):
        data = f.pop("data") if "data" in f else make_input(seeds, seed, f["index"])[0]
        small = data if signature.startswith("hang") else shrink(data, signature, time_limit)  # timing: kept whole
        if small is not data and run_one(small, time_limit).signature != signature:
            small = data  # shrinking kept a failure that does not reproduce: keep the input as it was
        name = f"{signature.split(':')[0]}-{number:02d}"
        (directory / f"{name}.stv").write_bytes(small)
        result = run_one(small, time_limit)
        (directory / f"{name}.txt").write_text(
            f"failure:    {signature}\nfirst seen: input {f['index']} of seed {seed} "
            f"(mutations {', '.join(f['mutations'])}), {f['count']} inputs in the run\n"
            f"original:   {f['size']} bytes: {f['detail']}\nreproducer: {name}.stv, {len(small)} bytes: "
            f"{result.outcome}: {result.detail}\n")
        f["saved"] = str(directory / f"{name}.stv")


def run_atheris(inputs: int, seed: int, time_limit: float, finish) -> None:
    """Coverage-guided: libFuzzer (atheris) picks which inputs to mutate by the reader's coverage; the mutations
    are libFuzzer's byte mutations or this tool's (half each), the outcomes the same as `run_campaign`'s. Runs
    in this process; after `inputs` inputs calls finish(campaign) and exits with what it returns. Input numbers
    in the report count executions (a failure's bytes are kept for --save-failures)."""
    import tempfile

    import atheris

    seeds = load_seeds()
    corpus = Path(tempfile.mkdtemp(prefix="stv-fuzz-corpus-"))
    for s in seeds:
        (corpus / s.name).write_bytes(s.data)
    campaign = Campaign(inputs, 0.0, Counter(), 0, {})
    names, weights = zip(*((n, w) for n, (_, w) in MUTATORS.items()))
    started = []  # the clock starts at the first input (instrumenting every loaded function takes a while)

    def mutate(data: bytes, max_size: int, mutation_seed: int) -> bytes:
        rng = random.Random(mutation_seed)
        if rng.random() < 0.5:
            return atheris.Mutate(data, max_size)
        out = bytearray(data)
        name = rng.choices(names, weights)[0]
        MUTATORS[name][0](rng, out, seeds)
        if name in BYTE_LEVEL and rng.random() < 0.6:
            fix_all(out)
        return bytes(out[:max_size])

    def one_input(data: bytes) -> None:
        index = sum(campaign.counts.values())
        started.append(time.perf_counter()) if not started else None
        result = run_one(data, time_limit)
        campaign.counts[result.outcome] += 1
        campaign.damaged += result.damaged
        if result.outcome in FAILURES:
            entry = campaign.failures.setdefault(result.signature, {
                "count": 0, "index": index, "detail": result.detail, "mutations": ["atheris"], "size": len(data),
                "data": bytes(data)})
            entry["count"] += 1
        if index + 1 >= inputs:
            campaign.seconds = time.perf_counter() - started[0]
            sys.stdout.flush()
            os._exit(finish(campaign))

    atheris.instrument_all()
    atheris.Setup([sys.argv[0], "-max_len=65536", f"-seed={seed + 1}", "-print_final_stats=0", str(corpus)],
                  one_input, custom_mutator=mutate)
    atheris.Fuzz()


def report(campaign: Campaign, args: argparse.Namespace) -> int:
    """Save reproducers if asked, print the figures (and the JSON line); the exit status: 1 if anything failed."""
    if args.save_failures and campaign.failures:
        save_failures(campaign, args.save_failures, args.seed, args.time_limit)
    for f in campaign.failures.values():
        f.pop("data", None)
    jobs = 1 if args.engine == "atheris" else args.jobs
    figures = campaign.figures(args.seed, jobs, args.time_limit)
    figures["engine"] = args.engine
    print(f"{campaign.inputs} inputs in {campaign.seconds:.1f} s: {figures['inputs_per_second']} inputs/s "
          f"({args.engine}, {jobs} processes, seed {args.seed})")
    for name in OUTCOMES:
        extra = f" ({campaign.damaged} of them with damage reported)" if name == "ok" else ""
        print(f"  {name:16s} {figures['outcomes'][name]}{extra}")
    if figures["slow_only_traced"]:
        print(f"  ({figures['slow_only_traced']} ran past the time limit only under tracemalloc; classified untraced)")
    for f in figures["failures"]:
        saved = f" -> {f['saved']}" if "saved" in f else ""
        print(f"  failure x{f['count']}: {f['detail']} (first: input {f['index']}){saved}")
    if args.json:
        print(json.dumps(figures))
    return 1 if any(figures["outcomes"][k] for k in FAILURES) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=20_000, help="inputs to run (default 20000)")
    parser.add_argument("--seed", type=int, default=0, help="campaign seed: input i is a function of (seed, i)")
    parser.add_argument("--jobs", type=int, default=min(2, multiprocessing.cpu_count()), help="processes")
    parser.add_argument("--engine", choices=["mutate", "atheris"], default="mutate",
                        help="mutate: seeded mutations of the goldens, reproducible by index, over --jobs "
                             "processes; atheris: coverage-guided (libFuzzer), one process")
    parser.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT, help="seconds per input")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    parser.add_argument("--save-failures", type=Path, metavar="DIR", help="write a shrunk reproducer per failure")
    parser.add_argument("--checkpoint", type=Path, metavar="FILE",
                        help="append each finished batch here and skip those already there: a long campaign "
                             "stopped (killed, machine gone) resumes where it was, with the whole run's figures")
    args = parser.parse_args(argv)
    if args.engine == "atheris":
        run_atheris(args.inputs, args.seed, args.time_limit, lambda campaign: report(campaign, args))
    return report(run_campaign(args.inputs, args.seed, args.jobs, args.time_limit, checkpoint=args.checkpoint), args)


if __name__ == "__main__":
    sys.exit(main())
