"""Write the golden .stv files of tests/data, their expected `stvinfo --json`, and the worked hex dump of
format_spec.md (between its `hexdump:begin` / `hexdump:end` markers).

    python tools/make_golden_files.py [--out tests/data] [--spec format_spec.md]

The parameter tracks are closed-form (sines and ramps, no random generator) so the files depend only on this
script and the zstd library. The golden files are committed: tests read them, they never regenerate them.

    golden_raw.stv       raw profile, 3 frames in chunks of 2 + 1, ID latent 2x8: the spec's worked example
    golden_entropy.stv   entropy-coded profile, 60 frames in chunks of 25, ID latent 4x16
    golden_ext.stv       two extension fields (a known 'note', an unknown 'zzz1' a reader must skip),
                         profiles mixed (raw then entropy), frame count left "unknown" (written as a stream)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np

from codec.bitstream import N_PARAMS, QuantTable, StvHeader, StvReader, StvWriter
from codec.bitstream.layout import hexdump
from codec.bitstream.probe import probe

# StyleSpace indices of an unofficial re-implementation (DESIGN §7), in (layer, channel) form: a plausible table.
EXAMPLE_INDICES = (
    [(6, c) for c in (113, 202, 214, 259, 378, 501)] + [(11, c) for c in (6, 41, 78, 86, 313, 361, 365)]
    + [(8, 17), (8, 387), (14, 12), (15, 45), (5, 50), (5, 505), (6, 131), (8, 390), (9, 63), (11, 257),
       (12, 82), (12, 414), (14, 239), (17, 28), (8, 6), (8, 28), (9, 30), (11, 320), (9, 409)]
)
assert len(EXAMPLE_INDICES) == 32


def tracks(n: int, phase: float = 0.0) -> np.ndarray:
    """Smooth closed-form parameter tracks (n, 35): alphas as slow sines, yaw/pitch/roll as slower sweeps."""
    t = np.arange(n, dtype=np.float64)[:, None]
    k = np.arange(N_PARAMS, dtype=np.float64)[None, :]
    values = 0.8 * np.sin(2 * np.pi * t / (40 + 3 * k) + phase + k)
    values[:, 32:34] *= 10  # yaw, pitch in slider units
    values[:, 34] *= 5  # roll in degrees
    return values


def id_latent(rows: int, dim: int) -> np.ndarray:
    grid = np.arange(rows * dim, dtype=np.float64).reshape(rows, dim)
    return (np.sin(grid * 0.37) * 1.5).astype(np.float16)


def header(rows: int, dim: int, params: np.ndarray, extensions=()) -> StvHeader:
    return StvHeader(
        width=256,
        height=256,
        fps_num=25,
        fps_den=1,
        generator_name="tiny-64",
        generator_sha256=hashlib.sha256(b"golden example weights").digest(),
        style_indices=EXAMPLE_INDICES,
        quant=QuantTable.from_data(params),
        id_latent=id_latent(rows, dim),
        extensions=extensions,
    )


class _Pipe(io.BytesIO):
    """An in-memory stream that, like a pipe, cannot seek: the writer leaves the frame count "unknown"."""

    def seekable(self) -> bool:
        return False


def write_golden(out: Path) -> dict[str, bytes]:
    files = {}
    params = tracks(3)
    with StvWriter(out / "golden_raw.stv", header(2, 8, params), profile="raw", chunk_frames=2) as w:
        w.append(params)
    params = tracks(60, phase=0.5)
    with StvWriter(out / "golden_entropy.stv", header(4, 16, params), profile="entropy", chunk_frames=25) as w:
        w.append(params)
    params = tracks(10, phase=1.0)
    extensions = [(b"note", "made by tools/make_golden_files.py".encode()), (b"zzz1", bytes(range(7)))]
    stream = _Pipe()
    writer = StvWriter(stream, header(2, 8, params, extensions), profile="raw", chunk_frames=4)
    writer.append(params[:4])
    writer.profile = "entropy"
    writer.append(params[4:])
    writer.close()
    (out / "golden_ext.stv").write_bytes(stream.getvalue())
    for name in ("golden_raw.stv", "golden_entropy.stv", "golden_ext.stv"):
        files[name] = (out / name).read_bytes()
    return files


def expected_json(path: Path) -> str:
    """What `stvinfo --json` prints for the file, with the filename reduced to its base name."""
    data = probe(StvReader(path))
    data["format"]["filename"] = path.name
    return json.dumps(data, indent=2) + "\n"


def update_spec(spec: Path, dump: str) -> None:
    text = spec.read_text()
    block = f"<!-- hexdump:begin -->\n```\n{dump}\n```\n<!-- hexdump:end -->"
    new, n = re.subn(r"<!-- hexdump:begin -->.*?<!-- hexdump:end -->", lambda _: block, text, flags=re.S)
    if n != 1:
        raise SystemExit(f"{spec}: expected one hexdump:begin/end marker pair, found {n}")
    spec.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("tests/data"))
    parser.add_argument("--spec", type=Path, default=Path("format_spec.md"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    files = write_golden(args.out)
    for name in files:
        (args.out / name).with_suffix(".json").write_text(expected_json(args.out / name))
        print(f"{args.out / name}: {len(files[name])} bytes")
    dump = hexdump(files["golden_raw.stv"])
    (args.out / "golden_raw.hexdump.txt").write_text(dump + "\n")
    if args.spec.exists():
        update_spec(args.spec, dump)
        print(f"{args.spec}: worked example updated")


if __name__ == "__main__":
    main()
