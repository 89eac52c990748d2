"""stvinfo: inspect a .stv file (summary, ffprobe-shaped JSON, validation, parameter plots). No torch needed."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from codec.bitstream import PARAM_NAMES, StvReader
from codec.bitstream.header import EXT_COMPACT_LATENT
from codec.bitstream.probe import duration_seconds, format_info, probe, profile_summary
from codec.cli.common import atomic_output, check_output, clean_errors
from codec.errors import StvError

PROG = "stvinfo"
EXIT_DAMAGED = 1


def parse_frame_range(text: str | None, n: int) -> tuple[int, int]:
    """'A:B' (half-open, either end optional, negatives count from the end like Python) or a single 'N'."""
    if text is None:
        return 0, n
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            start, stop, _ = slice(int(a) if a else None, int(b) if b else None).indices(n)
            return start, max(start, stop)
        index = int(text)
    except ValueError:
        raise StvError(f"--frames: {text!r} is not A:B or N") from None
    index += n if index < 0 else 0
    if not 0 <= index < n:
        raise StvError(f"--frames: frame {text} outside 0..{n - 1}")
    return index, index + 1


def summary_lines(reader: StvReader) -> list[str]:
    h, info = reader.header, format_info(reader)
    n, seconds = len(reader), duration_seconds(reader)
    count = f"{n}" if h.frame_count is not None else f"{n} (header: unknown, streamed)"
    if reader.truncated:
        count = f"{n} (header: {h.frame_count}, truncated)"
    lines = [
        f"file:        {reader.name}",
        f"size:        {reader.file_size} bytes (header {reader.header_size})",
        f"format:      stv {info['version']}, profile {info['profile']}, {len(reader.chunks)} chunks",
        f"video:       {h.width}x{h.height}, {h.fps_num}/{h.fps_den} fps ({float(h.fps):.3f}), {count} frames, "
        f"duration {seconds:.3f} s",
    ]
    if n and seconds > 0:
        lines.append(f"bit rate:    {info['bit_rate'] / 1000:.3f} kb/s, {info['bytes_per_frame']:.2f} bytes/frame "
                     "(chunks, excluding the header)")
    if "background_bytes" in info:
        without = info["bit_rate_without_background"]
        lines.append(f"background:  {info['background_bytes']} bytes"
                     + (f"; bit rate without it {without / 1000:.3f} kb/s" if without is not None else ""))
    lines += [
        f"generator:   {h.generator_name}  sha256 {h.generator_sha256.hex()}",
        f"ID latent:   {h.id_latent.shape[0]}x{h.id_latent.shape[1]} float16"
        + (" (a placeholder: the compact latent is in extension idpc)" if h.extension(EXT_COMPACT_LATENT) else ""),
    ]
    for ext in info["extensions"]:
        text = f": {ext['text']!r}" if "text" in ext else " (unknown, skipped)"
        lines.append(f"extension:   {ext['tag']!r}, {ext['size']} bytes{text}")
    lines += [f"damage:      {d}" for d in info["damage"]] or ["damage:      none"]
    return lines


def frame_lines(reader: StvReader, start: int, stop: int) -> list[str]:
    lines = ["frame  " + " ".join(PARAM_NAMES)]
    for index, values in reader.iter_available():
        if start <= index < stop:
            lines.append(f"{index:5d}  " + " ".join(f"{v:.6g}" for v in values))
    return lines


def plot_tracks(reader: StvReader, start: int, stop: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    selected = [(i, v) for i, v in reader.iter_available() if start <= i < stop]
    index = np.array([i for i, _ in selected], dtype=np.int64)
    values = np.array([v for _, v in selected]).reshape(-1, len(PARAM_NAMES))
    t = index * reader.header.fps_den / reader.header.fps_num
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    for k in range(32):
        axes[0].plot(t, values[:, k], lw=0.8)
    axes[0].set_ylabel("alpha (StyleSpace units)")
    axes[0].set_title(f"{Path(reader.name).name}: parameter tracks ({len(index)} frames)")
    for k, name in ((32, "yaw"), (33, "pitch")):
        axes[1].plot(t, values[:, k], label=name)
    axes[1].set_ylabel("pose (slider units)")
    axes[1].legend(loc="upper right")
    axes[2].plot(t, values[:, 34], color="k")
    axes[2].set_ylabel("roll (degrees)")
    axes[2].set_xlabel("time (s)")
    fig.tight_layout()
    with atomic_output(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print ffprobe-shaped JSON: format, streams, frames.")
@click.option("--frames", "frame_range", metavar="A:B", help="Only frames A..B-1 (Python slice; or one frame N).")
@click.option("--validate", is_flag=True,
              help="Check every CRC, range and count; print each damaged place and exit 1 if there is any.")
@click.option("--plot", type=click.Path(path_type=Path), metavar="OUT.png", help="Draw the parameter tracks to a PNG.")
@click.option("-y", "overwrite", is_flag=True, help="Overwrite the --plot output if it exists.")
@clean_errors(PROG)
def main(
    file: Path, as_json: bool, frame_range: str | None, validate: bool, plot: Path | None, overwrite: bool
) -> None:
    """Describe the .stv FILE: size, duration, frame rate, bit rate, bytes/frame, generator, profile, damage.

    With --frames the 35 dequantised values of each selected frame are listed (alpha_00..alpha_31 in
    StyleSpace units, yaw and pitch in pose-slider units, roll in degrees). Exit status: 0 fine, 1 damage found
    by --validate, 2 the file cannot be read at all (one line on stderr)."""
    if plot is not None:
        check_output(plot, overwrite)
    reader = StvReader(file)
    start, stop = parse_frame_range(frame_range, len(reader))
    problems = reader.validate() if validate else []
    if as_json:
        data = probe(reader, start, stop)
        if validate:
            data["format"]["damage"] = problems
        click.echo(json.dumps(data, indent=2))
    elif validate:
        for p in problems:
            click.echo(f"{reader.name}: damaged: {p}")
        if not problems:
            click.echo(f"{reader.name}: ok: header and {len(reader.chunks)} chunk CRCs match, {len(reader)} frames, "
                       f"profile {profile_summary(reader)}")
    else:
        click.echo("\n".join(summary_lines(reader)))
        if frame_range is not None:
            click.echo("\n".join(frame_lines(reader, start, stop)))
    if plot is not None:
        plot_tracks(reader, start, stop, plot)
    if problems:
        raise SystemExit(EXIT_DAMAGED)


if __name__ == "__main__":
    main()
