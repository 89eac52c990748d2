"""Show what pre-processing did to a video: input with landmarks | aligned crop | region masks, side by side.

    python tools/show_alignment.py IN.mp4 --out sheet.png      # contact sheet of evenly spaced frames
    python tools/show_alignment.py IN.mp4 --out check.mp4      # every frame, as a video
    python tools/show_alignment.py IN.mp4 --json frames.json   # per frame: roll, crop transform, landmarks

Colours: landmarks green on the input (red when the detector missed and the last ones were carried over); masks
blue = eyes+brows, yellow = pupils, red = mouth+jaw, green tint = rigid face (used for the head-pose L2), grey =
rest of the 81-point face. The caption gives the frame index, roll, K for a key frame, the registration residual
and BLINK when the eye aspect ratio says the eyes are closed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec.cli.common import atomic_output, clean_errors, refuse_overwrite  # noqa: E402
from codec.errors import InputError  # noqa: E402
from codec.preprocess.align import AlignedFrame, align_video_with_sources  # noqa: E402
from codec.preprocess.masks import region_masks  # noqa: E402
from codec.preprocess.video import VideoWriter, probe, read_frames  # noqa: E402

PANEL = 256
MASK_COLOURS = (("face", (90, 90, 90)), ("face_rigid", (40, 140, 40)), ("mouth_jaw", (220, 40, 40)),
                ("eyes_brows", (40, 80, 230)), ("pupils", (250, 230, 0)))


def _draw_points(image: np.ndarray, points: np.ndarray, scale: float, colour) -> None:
    radius = max(1, int(round(image.shape[0] / 200)))
    for x, y in points * scale:
        cv2.circle(image, (int(round(x)), int(round(y))), radius, colour, -1, cv2.LINE_AA)


def _input_panel(frame: np.ndarray, aligned: AlignedFrame) -> np.ndarray:
    scale = PANEL / frame.shape[0]
    panel = cv2.resize(frame, (max(1, round(frame.shape[1] * scale)), PANEL), interpolation=cv2.INTER_AREA)
    _draw_points(panel, aligned.landmarks, scale, (0, 255, 0) if aligned.face_detected else (255, 0, 0))
    # the crop square, mapped back into the input
    size = aligned.image.shape[0]
    corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], dtype=np.float64) - 0.5
    inverse = np.linalg.inv(aligned.crop_transform)
    quad = (corners @ inverse[:2, :2].T + inverse[:2, 2]) * scale
    cv2.polylines(panel, [np.round(quad).astype(np.int32)], True, (255, 255, 255), 1, cv2.LINE_AA)
    return panel


def _aligned_panels(aligned: AlignedFrame) -> tuple[np.ndarray, np.ndarray]:
    crop = cv2.resize(aligned.image, (PANEL, PANEL), interpolation=cv2.INTER_AREA)
    masks = region_masks(aligned.landmarks_aligned, PANEL, source_size=aligned.image.shape[0],
                         pupil_centres=aligned.pupils_aligned)
    overlay = crop.copy()
    for name, colour in MASK_COLOURS:
        overlay[masks[name]] = colour
    blended = cv2.addWeighted(crop, 0.45, overlay, 0.55, 0)
    _draw_points(crop, aligned.landmarks_aligned, PANEL / aligned.image.shape[0], (0, 255, 0))
    return crop, blended


def _caption(aligned: AlignedFrame) -> str:
    parts = [f"#{aligned.index}", f"roll {aligned.roll_deg:+.1f}", "K" if aligned.is_key_frame else
             f"res {aligned.registration_residual:.1f}"]
    if aligned.blink:
        parts.append("BLINK")
    return "  ".join(parts)


def side_by_side(frame: np.ndarray, aligned: AlignedFrame) -> np.ndarray:
    row = np.concatenate([_input_panel(frame, aligned), *_aligned_panels(aligned)], axis=1)
    cv2.putText(row, _caption(aligned), (6, PANEL - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(row, _caption(aligned), (6, PANEL - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                cv2.LINE_AA)
    return row


def frame_record(aligned: AlignedFrame) -> dict:
    return {"index": aligned.index, "roll_deg": round(aligned.roll_deg, 4),
            "crop_transform": np.round(aligned.crop_transform, 8).tolist(),
            "landmarks": np.round(aligned.landmarks, 3).tolist(),
            "pupils_aligned": np.round(aligned.pupils_aligned, 3).tolist(), "is_key_frame": aligned.is_key_frame,
            "blink": aligned.blink, "eye_aspect_ratio": round(aligned.eye_aspect_ratio, 4),
            "face_detected": aligned.face_detected,
            "registration_residual": round(aligned.registration_residual, 3)}


def _paired(path: Path, size: int, stabilise: bool, max_frames: int | None):
    """(input frame, aligned frame) pairs: the input frames are kept one at a time for drawing."""
    return align_video_with_sources(read_frames(path, stop=max_frames), output_size=size, stabilise=stabilise)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("video", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Contact sheet (.png/.jpg: evenly spaced frames) or side-by-side video (.mp4/.mkv).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write per-frame roll_deg, crop transform (input px -> aligned px) and input-px landmarks.")
@click.option("--crops", "crops_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the aligned crops alone as a video (.mkv: lossless FFV1; .mp4: H.264): the reference "
                   "`stv-eval` compares `stvdec`'s output with, frame for frame.")
@click.option("--size", default=1024, show_default=True, help="Aligned crop size (the generator's resolution).")
@click.option("--rows", default=8, show_default=True, help="Frames on a contact sheet.")
@click.option("--max-frames", type=int, default=None, help="Stop after this many frames.")
@click.option("--no-stabilise", is_flag=True, help="Align every frame from its own landmarks (for comparison).")
@click.option("-y", "overwrite", is_flag=True, help="Overwrite existing outputs.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@clean_errors("show_alignment")
def main(video: Path, out: Path | None, json_path: Path | None, crops_path: Path | None, size: int, rows: int,
         max_frames: int | None, no_stabilise: bool, overwrite: bool, quiet: bool) -> None:
    """Align VIDEO as the encoder's pre-processing does and show the result.

    Each row: the input with its 68 landmarks (green; red when the detector missed and the last ones were carried
    over) and the crop square in white | the aligned crop with its landmarks | the region masks over the crop
    (blue eyes+brows, yellow pupils, red mouth+jaw, green rigid face). The caption gives the frame index, the
    roll removed (degrees), K on key frames or else the registration residual (grey levels), and BLINK.
    """
    if out is None and json_path is None and crops_path is None:
        raise InputError("nothing to do: give --out, --json and/or --crops")
    for path in (out, json_path, crops_path):
        if path is not None:
            refuse_overwrite(path, overwrite)
    info = probe(video)
    total = min(info.frame_count, max_frames or info.frame_count)
    as_video = out is not None and out.suffix.lower() in (".mp4", ".mkv", ".mov")
    picked = set(np.unique(np.linspace(0, total - 1, min(rows, total)).round().astype(int)).tolist())
    records, sheet_rows = [], []
    lossless_crops = crops_path is not None and crops_path.suffix.lower() == ".mkv"
    with _maybe_video(out if as_video else None, info.fps) as writer, \
            _maybe_video(crops_path, info.fps, lossless_crops) as crops:
        for frame, aligned in tqdm(_paired(video, size, not no_stabilise, max_frames), total=total, disable=quiet,
                                   unit="frame", desc="aligning"):
            records.append(frame_record(aligned))
            if crops is not None:
                crops.add(aligned.image)
            if writer is not None:
                writer.add(side_by_side(frame, aligned))
            elif out is not None and aligned.index in picked:
                sheet_rows.append(side_by_side(frame, aligned))
    if out is not None and not as_video:
        _write_image(out, _stack(sheet_rows))
    if json_path is not None:
        document = {"input": str(video), "width": info.width, "height": info.height,
                    "fps": f"{info.fps.numerator}/{info.fps.denominator}", "output_size": size,
                    "stabilised": not no_stabilise, "frames": records}
        with atomic_output(json_path) as tmp:
            tmp.write_text(json.dumps(document, indent=1))
    if not quiet:
        keys = sum(r["is_key_frame"] for r in records)
        click.echo(f"{len(records)} frames aligned, {keys} key frames, {sum(r['blink'] for r in records)} blinks",
                   err=True)


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(padded, axis=0)


def _write_image(path: Path, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(path.suffix or ".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"{path}: cannot encode an image with suffix {path.suffix!r}")
    with atomic_output(path) as tmp:
        tmp.write_bytes(encoded.tobytes())


class _maybe_video:
    """A video writer opened on the first frame (a side-by-side frame's width depends on the input's aspect)."""

    def __init__(self, path: Path | None, fps, lossless: bool = False):
        self.path, self.fps, self.lossless, self._writer = path, fps, lossless, None

    def __enter__(self):
        return self if self.path is not None else None

    def add(self, image: np.ndarray) -> None:
        image = image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2]  # H.264 wants even sizes
        if self._writer is None:
            self._writer = VideoWriter(self.path, self.fps, (image.shape[1], image.shape[0]),
                                       lossless=self.lossless).__enter__()
        self._writer.write(np.ascontiguousarray(image))

    def __exit__(self, *exc) -> bool:
        if self._writer is not None:
            self._writer.__exit__(*exc)
        return False


if __name__ == "__main__":
    main()
