#!/usr/bin/env python3
"""Write a small full-frame talking-head stand-in: scikit-image's astronaut (a real face, head and shoulders)
composited onto a room (scikit-image's coffee photo), swaying and turning a little, with a second photo (the
cat) sliding across the lower part as a moving hand would. Everything comes from the sample photos that ship with
scikit-image, so tests, figures and demos need no outside clip.

    python tools/make_scene_clip.py clip.mp4 [--size 1280x720] [--frames 12] [--fps 25]
    stvenc clip.mp4 a.stv && stvdec a.stv out.mp4          # out.mp4 is 1280x720 at 25 fps, like clip.mp4

`.mkv` output is lossless (FFV1); `.mp4` is H.264 (CRF 18). A portrait size (e.g. 720x1280) puts the person in
the upper half, as a phone's framing does.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator

import click
import cv2
import numpy as np
from skimage import data as samples

from codec.cli.common import clean_errors, refuse_overwrite
from codec.errors import StvError
from codec.preprocess.video import write_video

PERSON_HEIGHT = 0.8  # of the frame's shorter side: the astronaut's 512-pixel photo scaled to this
SWAY_PX = 0.03  # of the frame's width, each way
TURN_DEG = 4.0  # in-plane turn, each way


def scene_clip(width: int, height: int, count: int) -> list[np.ndarray]:
    """`count` RGB frames [height, width, 3] uint8; frame t depends only on t (closed form, no random draw)."""
    return list(scene_frames(width, height, count))


def scene_frames(width: int, height: int, count: int) -> Iterator[np.ndarray]:
    """scene_clip's frames one at a time (a long clip is never held)."""
    room = _cover(samples.coffee(), width, height)
    person, alpha = _person(int(PERSON_HEIGHT * min(width, height)))
    hand = cv2.resize(samples.chelsea(), None, fx=0.25 * min(width, height) / 300, fy=0.25 * min(width, height) / 300,
                      interpolation=cv2.INTER_AREA)
    for t in range(count):
        phase = 2 * np.pi * t / max(count, 8)
        centre = (width / 2 + SWAY_PX * width * np.sin(phase), _person_centre_y(width, height, person.shape[0]))
        frame = _composite(room, person, alpha, centre, TURN_DEG * np.sin(0.7 * phase))
        x = int((0.1 + 0.6 * t / max(count - 1, 1)) * (width - hand.shape[1]))
        y = height - hand.shape[0] - height // 20
        frame[y : y + hand.shape[0], x : x + hand.shape[1]] = hand
        yield frame


def _cover(picture: np.ndarray, width: int, height: int) -> np.ndarray:
    """The picture scaled to cover width x height, centre-cropped."""
    scale = max(width / picture.shape[1], height / picture.shape[0])
    big = cv2.resize(picture, (int(np.ceil(picture.shape[1] * scale)), int(np.ceil(picture.shape[0] * scale))),
                     interpolation=cv2.INTER_CUBIC)
    top, left = (big.shape[0] - height) // 2, (big.shape[1] - width) // 2
    return np.ascontiguousarray(big[top : top + height, left : left + width])


def _person(side: int) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut photo at side x side and a feathered head-and-shoulders matte [side, side] in [0, 1]."""
    photo = cv2.resize(samples.astronaut(), (side, side), interpolation=cv2.INTER_AREA)
    matte = np.zeros((512, 512), np.float32)
    cv2.ellipse(matte, (225, 130), (115, 150), 0, 0, 360, 1.0, -1)  # head and hair
    cv2.ellipse(matte, (240, 470), (235, 200), 0, 0, 360, 1.0, -1)  # shoulders and chest
    matte = cv2.GaussianBlur(matte, (0, 0), 8)
    return photo, cv2.resize(matte, (side, side), interpolation=cv2.INTER_AREA)


def _person_centre_y(width: int, height: int, side: int) -> float:
    """Landscape: the photo's bottom on the frame's bottom; portrait: in the upper half."""
    return height - side / 2 if width >= height else 0.3 * height + side / 4


def _composite(room: np.ndarray, person: np.ndarray, alpha: np.ndarray, centre, angle: float) -> np.ndarray:
    side = person.shape[0]
    turn = cv2.getRotationMatrix2D(((side - 1) / 2, (side - 1) / 2), angle, 1.0)
    turn[:, 2] += np.asarray(centre) - (side - 1) / 2
    size = (room.shape[1], room.shape[0])
    placed = cv2.warpAffine(person, turn, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    weight = cv2.warpAffine(alpha, turn, size, flags=cv2.INTER_LINEAR, borderValue=0.0)[..., None]
    return np.round(weight * placed + (1 - weight) * room).astype(np.uint8)


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise StvError(f"--size: {text!r} is not WxH") from None
    if not (64 <= width <= 4096 and 64 <= height <= 4096):
        raise StvError(f"--size: {width}x{height} outside 64..4096")
    return width, height


@click.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--size", "size_text", default="1280x720", show_default=True, metavar="WxH")
@click.option("--frames", "count", default=12, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--fps", default=25, show_default=True, type=click.IntRange(1, 240))
@click.option("-y", "overwrite", is_flag=True, help="overwrite OUT if it exists")
@clean_errors("make_scene_clip")
def main(out: Path, size_text: str, count: int, fps: int, overwrite: bool) -> None:
    """Write the synthetic full-frame clip OUT (.mp4/.mkv)."""
    refuse_overwrite(out, overwrite)
    width, height = parse_size(size_text)
    write_video(out, scene_frames(width, height, count), Fraction(fps), lossless=out.suffix == ".mkv")
    click.echo(f"{out}: {count} frames, {width}x{height}, {fps} fps")


if __name__ == "__main__":
    main()
