"""stvdec: render a .stv stream back to video (and/or PNG frames), optionally on another identity."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

import click
import cv2
import numpy as np
from tqdm.auto import tqdm

from codec import interrupts
from codec.bitstream import StvReader
from codec.cli.common import check_output, clean_errors, prepare_kernel
from codec.cli.stvinfo import parse_frame_range
from codec.decoder.decode import (
    DecodedFrame,
    DecodeSettings,
    damage_warnings,
    decode,
    decode_dtype,
    load_stream_generator,
    pose_editor_for,
    resolve_device,
)
from codec.decoder.pipeline import BackgroundWriter
from codec.decoder.paste import paste_back_for
from codec.decoder.puppet import load_identity
from codec.errors import StvError
from codec.preprocess.video import VideoWriter

PROG = "stvdec"
PNG_NAME = "frame_{:06d}.png"


def parse_size(text: str | None, header_size: tuple[int, int]) -> tuple[int, int] | None:
    """'WxH', or 'W' (height follows the header's aspect ratio, rounded to even for H.264)."""
    if text is None:
        return None
    try:
        if "x" in text.lower():
            w, h = (int(v) for v in text.lower().split("x", 1))
        else:
            w = int(text)
            h = 2 * max(1, round(w * header_size[1] / header_size[0] / 2))
    except ValueError:
        raise StvError(f"--size: {text!r} is not W or WxH") from None
    if not (1 <= w <= 16384 and 1 <= h <= 16384):
        raise StvError(f"--size: {w}x{h} outside 1..16384")
    return w, h


@contextlib.contextmanager
def png_directory(target: Path, count: int, first: int, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary directory beside `target` to fill with PNGs; on success move them into `target`
    (created if needed), on failure remove the temporary directory: no half-written frame set."""
    clashes = [target / PNG_NAME.format(first + k) for k in range(count)] if target.is_dir() else []
    if target.exists() and not target.is_dir():
        raise StvError(f"--png {target}: exists and is not a directory")
    if not overwrite and any(p.exists() for p in clashes):
        raise StvError(f"--png {target}: holds frames of the same names; pass -y to overwrite")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise StvError(f"--png {target}: parent directory {parent} does not exist")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=parent))
    try:
        yield tmp
        interrupts.check()
        target.mkdir(exist_ok=True)
        for name in sorted(os.listdir(tmp)):
            os.replace(tmp / name, target / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_png(directory: Path, index: int, image: np.ndarray) -> None:
    if not cv2.imwrite(str(directory / PNG_NAME.format(index)), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise StvError(f"cannot write PNG frame {index} to {directory}")


def write_frames(frames: Iterable[DecodedFrame], video: VideoWriter | None, pngs: Path | None,
                 on_frame: Callable[[], None] = lambda: None) -> None:
    """Write each decoded frame to the video and/or the PNG folder. The video encoder and the disk work on a
    thread of their own while the next batch renders, so the GPU does not wait for them; every frame is written
    when this returns (a writer's error is raised here)."""
    def write(frame: DecodedFrame) -> None:
        if video is not None:
            video.write(frame.image)
        if pngs is not None:
            write_png(pngs, frame.index, frame.image)

    with BackgroundWriter(write) as writer:
        for frame in frames:
            writer.put(frame)
            on_frame()


def warn(message: str) -> None:
    click.echo(f"{PROG}: warning: {message}", err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", metavar="IN.stv", type=click.Path(path_type=Path))
@click.argument("out", metavar="[OUT]", required=False, type=click.Path(path_type=Path))
@click.option("--png", "png_dir", type=click.Path(path_type=Path), metavar="DIR",
              help=f"Also (or only) write every frame as DIR/{PNG_NAME.format(0)} (lossless).")
@click.option("--frames", "frame_range", metavar="A:B", help="Only frames A..B-1 (Python slice; or one frame N).")
@click.option("--size", "size_text", metavar="W|WxH",
              help="Output size (default: the header's); W alone keeps the aspect ratio.")
@click.option("--identity", type=click.Path(path_type=Path), metavar="FILE",
              help="Puppeteer: play this stream's motion on FILE's face: another .stv (its ID latent) or a "
                   "face photo (aligned and inverted like an encoder frame; takes a while).")
@click.option("--device", default="auto", show_default=True,
              help="auto (cuda when available), cpu, cuda or cuda:N. float16 on GPU, float32 on CPU.")
@click.option("--batch", default=4, show_default=True, type=click.IntRange(1, 256),
              help="Frames rendered together (more: faster, more memory).")
@click.option("--lossless", is_flag=True, help="FFV1 video storing the RGB pixels exactly (OUT must be .mkv).")
@click.option("-y", "overwrite", is_flag=True, help="Overwrite OUT (and same-named PNG frames) if present.")
@click.option("--crop", is_flag=True,
              help="Output the face crop at the generator's size even when the stream places the face in the "
                   "source picture (format 1.2 'plac'; by default such a stream decodes to the source's size).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no warnings.")
@clean_errors(PROG)
def main(source: Path, out: Path | None, png_dir: Path | None, frame_range: str | None, size_text: str | None,
         identity: Path | None, device: str, batch: int, lossless: bool, crop: bool, overwrite: bool,
         quiet: bool) -> None:
    """Decode IN.stv to the video OUT (.mp4/.mov/.mkv, H.264; --lossless: FFV1 .mkv) and/or PNG frames.

    The generator named in the stream must be installed with the same weights (its sha256 is in the header);
    otherwise stvdec says which model to fetch. A damaged or truncated stream is decoded up to the damage and
    the lost frames repeat the last good picture, so the video keeps its length and timing (a warning lists
    the damage). Output files appear only when complete."""
    if out is None and png_dir is None:
        raise StvError("nothing to write: give OUT and/or --png DIR")
    if out is not None:
        check_output(out, overwrite)
    reader = StvReader(source)
    header = reader.header
    start, stop = parse_frame_range(frame_range, len(reader))
    if stop <= start:
        raise StvError(f"{source}: no frames to decode (range {start}:{stop} of {len(reader)})")
    paste, paste_warnings = (None, []) if crop else paste_back_for(header)
    frame_size = paste.output_size if paste is not None else (header.width, header.height)
    size = parse_size(size_text, frame_size)
    torch_device = resolve_device(device)
    if paste is not None:  # the size is the whole picture's; the face is rendered at the generator's own, and
        # blended on the GPU when the decode runs there (the CPU keeps OpenCV's blend)
        paste = replace(paste, size=size, device=torch_device if torch_device.type == "cuda" else None)
    settings = DecodeSettings(batch=batch, size=None if paste is not None else size, device=torch_device,
                              dtype=decode_dtype(torch_device), paste=paste)
    generator = load_stream_generator(header, torch_device, settings.dtype)
    spec, latent = header.pose_editor, None
    if identity is not None:
        replacement = load_identity(identity, header, generator, torch_device)
        latent, spec = replacement.latent, replacement.pose_spec or spec
    editor = pose_editor_for(spec, header.generator_name, torch_device)
    for line in [] if quiet else [*paste_warnings, *damage_warnings(reader, start, stop, str(source))]:
        warn(line)
    prepare_kernel(PROG, torch_device, quiet)
    width, height = size or frame_size
    frames = decode(reader, generator, editor, start, stop, settings, id_latent=latent)
    with contextlib.ExitStack() as stack:
        video = None
        if out is not None:
            video = stack.enter_context(VideoWriter(out, header.fps, (width, height), lossless=lossless))
        pngs = stack.enter_context(png_directory(png_dir, stop - start, start, overwrite)) if png_dir else None
        bar = stack.enter_context(tqdm(total=stop - start, unit="frame", desc=PROG, disable=quiet))
        write_frames(frames, video, pngs, lambda: bar.update(1))
    for line in [] if quiet or paste is None else paste.scene.warnings():
        warn(line)


if __name__ == "__main__":
    main()
