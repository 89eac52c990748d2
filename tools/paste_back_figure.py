#!/usr/bin/env python3
"""The README's before/after picture of a paste-back, made from the project's own synthetic clip
(tools/make_scene_clip.py: sample photos only).

    python tools/paste_back_figure.py tools/figures/paste_back.png [--frame 4]

Four panels: the input frame; the aligned face crop the encoder sees and the decoder renders; that crop pasted
back into the whole frame as stvdec does (`plac` placement and roll, feathered blend) over the background still
(`--background still`: the median of a few frames with the faces taken out, so a moving body or hand is lost or
smeared) and over the background video (`--background video`: AV1 at its default rate, body and hand move). The
crop is the aligner's own, standing in for the generator's rendering: the shipped tiny generator is untrained,
so its pictures are not faces, while the geometry and the blend are exactly the decoder's. The PNG is quantised to
256 colours to stay small.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import click
import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_scene_clip import scene_clip  # noqa: E402

from codec.bitstream.background import decode_background  # noqa: E402
from codec.bitstream.background_video import (DEFAULT_KBITS, BackgroundVideoDecoder,  # noqa: E402
                                              BackgroundVideoEncoder)
from codec.bitstream.placement import decode_placement  # noqa: E402
from codec.cli.common import atomic_output, clean_errors, refuse_overwrite  # noqa: E402
from codec.decoder.paste import paste_face  # noqa: E402
from codec.encoder.scene import SceneCollector  # noqa: E402
from codec.errors import StvError  # noqa: E402

CLIP_SIZE = (1280, 720)
CLIP_FRAMES = 25  # one second at 25 fps: enough for the video's rate control to settle a little
CROP_SIZE = 256
PANEL = (480, 270)  # each panel's size in the figure


def paste_back_panels(frame_index: int) -> list[tuple[str, np.ndarray]]:
    """(caption, RGB picture) of the four panels, for frame `frame_index` of the synthetic clip."""
    from codec.preprocess.align import align_video

    frames = scene_clip(*CLIP_SIZE, CLIP_FRAMES)
    scene = SceneCollector(CROP_SIZE, len(frames), video=BackgroundVideoEncoder(Fraction(25), DEFAULT_KBITS))
    crops = []
    for source, aligned in zip(frames, align_video(iter(frames), output_size=CROP_SIZE)):
        scene.add(source, aligned.crop_transform, aligned.roll_deg)
        crops.append(aligned)
    if len(crops) != len(frames):
        raise StvError(f"the aligner followed {len(crops)} of {len(frames)} frames")
    placement = decode_placement(scene.placement())  # as stored: quantised
    still = decode_background(scene.background(quality=80))
    video = BackgroundVideoDecoder(scene.background_video(), CLIP_SIZE).frame(frame_index)
    crop = crops[frame_index]

    def pasted(background: np.ndarray) -> np.ndarray:
        return paste_face(crop.image, placement.centre[frame_index], float(placement.side[frame_index]),
                          crop.roll_deg, background)

    return [("input frame (1280x720)", frames[frame_index]), ("pasted back over the still", pasted(still)),
            ("aligned face crop (what the decoder renders)", crop.image),
            (f"pasted back over the video ({DEFAULT_KBITS} kbit/s AV1)", pasted(video))]


def figure(panels: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """The panels in a 2x2 grid, each letterboxed to PANEL with its caption."""
    tiles = [_tile(caption, picture) for caption, picture in panels]
    return np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])


def _tile(caption: str, picture: np.ndarray) -> np.ndarray:
    width, height = PANEL
    scale = min(width / picture.shape[1], height / picture.shape[0])
    size = (max(1, round(picture.shape[1] * scale)), max(1, round(picture.shape[0] * scale)))
    small = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
    tile = np.full((height, width, 3), 255, np.uint8)
    top, left = (height - size[1]) // 2, (width - size[0]) // 2
    tile[top : top + size[1], left : left + size[0]] = small
    cv2.rectangle(tile, (0, 0), (width - 1, 22), (255, 255, 255), -1)
    cv2.putText(tile, caption, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return tile


@click.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--frame", "frame_index", default=12, show_default=True, type=click.IntRange(0, CLIP_FRAMES - 1))
@click.option("-y", "overwrite", is_flag=True, help="overwrite OUT if it exists")
@clean_errors("paste_back_figure")
def main(out: Path, frame_index: int, overwrite: bool) -> None:
    """Write the paste-back figure to OUT (.png)."""
    refuse_overwrite(out, overwrite)
    picture = Image.fromarray(figure(paste_back_panels(frame_index))).quantize(256, dither=Image.Dither.NONE)
    with atomic_output(out) as tmp:
        picture.save(tmp, format="PNG", optimize=True)
    click.echo(f"{out}: {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
