"""FFHQ config-f at full size (1024², 18 x 512 W+), end to end, as a user runs it (issue 12).

Random-weight stand-ins of the official files, in their official layouts, are installed into a temporary STV_HOME
with `stv-weights install --allow-unverified` and the generator is converted with `stv-weights convert`
(tests/config_f_home.py). Then the console scripts run on 3 frames of a real face clip:
`stvenc --model stylegan2-ffhq-config-f` (StyleFlow pose editor, the default; and the published linear pair),
`stvinfo --validate`, `stvdec` to 1024x1024 PNG frames. The decoded pictures must be what the renderer the encoder
optimises through gives for the stream's parameters.

Run alone with `pytest tests/test_config_f_end_to_end.py -m slow -s`: it prints each stage's time and peak
memory (the README's table comes from this run).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from codec import zoo
from codec.bitstream.reader import StvReader
from codec.decoder.decode import to_uint8
from codec.decoder.render import apply_roll, render
from config_f_home import StandInHome, stand_in_home

SHARED_CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "d0.mp4"
FRAMES = 3
CHEAPEST = ["--frames", f"0:{FRAMES}", "--inverter", "e4e", "--pose-steps", "1", "--attribute-steps", "1",
            "--refine-rounds", "1"]
STAGE_LINE = re.compile(r"stage (\w+): ([\d.]+) s, peak RSS (\d+) MB")


def face_clip(directory: Path) -> Path:
    """A real talking-head clip (../shared/media, beside the checkout), else the project's own clip of a photo."""
    if SHARED_CLIP.is_file():
        return SHARED_CLIP
    from fractions import Fraction

    from codec.preprocess.video import write_video
    from preprocess_fixtures import make_clip

    path = directory / "clip.mp4"
    write_video(path, make_clip(count=FRAMES, size=512).frames, Fraction(25))
    return path


def run_script(name: str, args: list[str], home: StandInHome, directory: Path) -> tuple[str, str, float, float]:
    """Run console script `name` (the one installed beside this Python): (stdout, stderr, seconds, peak RSS in
    MB). os.wait4 gives this one child's own peak memory."""
    script = Path(sys.executable).with_name(name)
    out, err = directory / f"{name}.out", directory / f"{name}.err"
    started = time.perf_counter()
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen([str(script), *args], env=home.environ(), stdout=stdout, stderr=stderr,
                                   stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    assert os.waitstatus_to_exitcode(status) == 0, f"{name} {' '.join(args)}:\n{out.read_text()}{err.read_text()}"
    return out.read_text(), err.read_text(), seconds, usage.ru_maxrss / 1024


def stage_costs(stvenc_output: str) -> dict[str, tuple[float, float]]:
    """stvenc -v's 'stage NAME: S s, peak RSS M MB' lines -> {NAME: (S, M)}."""
    return {m[1]: (float(m[2]), float(m[3])) for m in STAGE_LINE.finditer(stvenc_output)}


def decoded_frames(png_dir: Path) -> list[np.ndarray]:
    import cv2

    files = sorted(png_dir.glob("frame_*.png"))
    return [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]


def renderer_frames(stream: Path, home: StandInHome, monkeypatch) -> np.ndarray:
    """The stream's dequantised parameters through codec.decoder.render (what the encoder optimises through),
    one frame at a time: [N, 1024, 1024, 3] uint8."""
    for key in ("STV_HOME", "STV_MANIFEST"):
        monkeypatch.setenv(key, home.environ()[key])
    reader = StvReader(stream)
    header = reader.header
    generator = zoo.load_generator(header.generator_name)
    editor = zoo.load_pose_editor(header.pose_editor, header.generator_name)
    id_latent = torch.from_numpy(header.id_latent.astype(np.float32))
    values = torch.from_numpy(reader.values().astype(np.float32))
    k = len(header.style_indices)
    frames = []
    with torch.no_grad():
        for row in values:
            row = row[None]
            images = render(generator, editor, id_latent, header.style_indices, row[:, :k], row[:, k], row[:, k + 1])
            frames.append(to_uint8(apply_roll(images, row[:, k + 2]))[0])
    return np.stack(frames)


@pytest.fixture(scope="module")
def full_size_home(tmp_path_factory) -> StandInHome:
    return stand_in_home(tmp_path_factory.mktemp("config-f"))


@pytest.mark.slow
def test_config_f_full_size_encode_validate_decode(full_size_home, tmp_path, monkeypatch):
    home = full_size_home
    clip = face_clip(tmp_path)
    stream, png = tmp_path / "out.stv", tmp_path / "png"
    _, encoded, encode_s, encode_mb = run_script(
        "stvenc", ["--model", "stylegan2-ffhq-config-f", *CHEAPEST, "-q", "-v", str(clip), str(stream)], home,
        tmp_path)
    info, _, _, _ = run_script("stvinfo", ["--validate", "--json", str(stream)], home, tmp_path)
    # --crop: the generator's own 1024² pictures (a stream of full frames decodes to the source's size otherwise)
    _, _, decode_s, decode_mb = run_script("stvdec", ["-q", "--crop", "--png", str(png), str(stream)], home,
                                           tmp_path)

    header = StvReader(stream).header
    converted = zoo.location("stylegan2-ffhq-config-f").name
    digest = hashlib.sha256((home.home / "weights" / converted).read_bytes()).digest()
    assert header.generator_name == "stylegan2-ffhq-config-f" and header.generator_sha256 == digest
    assert (header.width, header.height, header.frame_count) == (1024, 1024, FRAMES)
    assert header.id_latent.shape == (18, 512) and np.isfinite(header.id_latent).all()
    pose = header.pose_editor
    assert pose["editor"] == "styleflow" and len(pose["condition"]) == 17
    assert all(math.isfinite(v) for v in pose["condition"])
    described = json.loads(info)["format"]
    assert described["nb_frames"] == FRAMES and not described["damage"], described

    decoded = decoded_frames(png)
    assert len(decoded) == FRAMES and all(f.shape == (1024, 1024, 3) for f in decoded)
    expected = renderer_frames(stream, home, monkeypatch)
    difference = np.abs(np.stack(decoded).astype(int) - expected.astype(int))
    # The decoder renders in batches of 4 rows, this one frame at a time: float sums in another order may move a
    # value across a rounding boundary (at most 1 level, on a few values), nothing more.
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3, (difference.max(), (difference > 0).mean())
    assert expected.std() > 1.0  # a picture, not a flat field

    costs = stage_costs(encoded)
    assert {"align", "invert", "id_select", "condition", "pose", "attributes", "refine"} <= set(costs), encoded
    print(f"\nconfig-f 1024², {FRAMES} frames, {' '.join(CHEAPEST[2:])}, torch threads {torch.get_num_threads()}")
    for stage, (seconds, mb) in costs.items():
        print(f"  stvenc {stage:<11} {seconds:7.1f} s  peak RSS {mb:6.0f} MB")
    print(f"  stvenc total       {encode_s:7.1f} s  peak RSS {encode_mb:6.0f} MB")
    print(f"  stvdec total       {decode_s:7.1f} s  peak RSS {decode_mb:6.0f} MB")


@pytest.mark.slow
def test_config_f_full_size_with_the_published_linear_pair(full_size_home, tmp_path, monkeypatch):
    home = full_size_home
    stream = tmp_path / "linear.stv"
    run_script("stvenc", ["--model", "stylegan2-ffhq-config-f", "--pose-editor", "linear", *CHEAPEST[:2],
                          "--inverter", "e4e", "--pose-steps", "1", "--attribute-steps", "1", "--refine-rounds", "0",
                          "-q", str(face_clip(tmp_path)), str(stream)], home, tmp_path)
    header = StvReader(stream).header
    assert header.pose_editor == {"editor": "linear", "model": "ffhq-pose-interfacegan"}
    run_script("stvinfo", ["--validate", str(stream)], home, tmp_path)
    png = tmp_path / "png"
    run_script("stvdec", ["-q", "--crop", "--png", str(png), "--frames", "0", str(stream)], home, tmp_path)
    decoded = decoded_frames(png)
    expected = renderer_frames(stream, home, monkeypatch)[:1]
    assert len(decoded) == 1 and np.abs(decoded[0].astype(int) - expected[0].astype(int)).max() <= 1


def test_reduced_config_f_takes_the_same_path(tmp_path, monkeypatch, caplog):
    """The default-run variant: the same commands and loaders on a reduced config-f (config_f_home.REDUCED: 64²,
    narrow channels, 32-wide styles; e4e and StyleFlow shrunk to match, ArcFace and BiSeNet full size). What is
    not the same: the channel table, which the reduced layout cannot hold, and stvenc runs in this process."""
    from click.testing import CliRunner

    from codec.cli.stvdec import main as stvdec
    from codec.cli.stvenc import main as stvenc
    from codec.encoder import encode
    from config_f_home import REDUCED, reduced_channel_table

    home = stand_in_home(tmp_path / "stand-ins", REDUCED)
    for key in ("STV_HOME", "STV_MANIFEST"):
        monkeypatch.setenv(key, home.environ()[key])
    table = reduced_channel_table(home.generator, tmp_path / "reduced-channels.json")
    monkeypatch.setitem(encode.CHANNEL_TABLES, "stylegan2-ffhq-config-f", str(table))  # an absolute path
    stream, png = tmp_path / "out.stv", tmp_path / "png"
    # no refinement here (the slow test runs it at full size, the tiny model's tests run it everywhere)
    with caplog.at_level("INFO", logger="codec.encoder"):
        result = CliRunner().invoke(stvenc, ["--model", "stylegan2-ffhq-config-f", *CHEAPEST[:-1], "0", "-q", "-v",
                                             str(face_clip(tmp_path)), str(stream)])
    assert result.exit_code == 0, result.output
    # -v: one line per stage that ran, with its time and peak memory
    costs = {r.stage: r.stage_cost for r in caplog.records if hasattr(r, "stage_cost")}
    # (the background is made as alignment ends, from the pictures it sampled: they are let go before inversion)
    assert list(costs) == ["align", "background", "invert", "id_select", "condition", "pose", "attributes", "latent",
                           "quantise"], list(costs)
    assert all(c.seconds > 0 and c.peak_rss_mb > 100 for c in costs.values())
    header = StvReader(stream).header
    assert header.generator_name == "stylegan2-ffhq-config-f" and header.id_latent.shape == (10, 32)
    assert header.generator_sha256.hex() == zoo.generator_digest("stylegan2-ffhq-config-f")
    assert header.pose_editor["editor"] == "styleflow" and len(header.pose_editor["condition"]) == 17
    result = CliRunner().invoke(stvdec, ["-q", "--crop", "--png", str(png), str(stream)])
    assert result.exit_code == 0, result.output
    decoded = decoded_frames(png)
    whole = tmp_path / "whole"
    result = CliRunner().invoke(stvdec, ["-q", "--png", str(whole), "--frames", "0", str(stream)])
    placement = header.placement
    assert result.exit_code == 0 and decoded_frames(whole)[0].shape == (placement.height, placement.width, 3)
    expected = renderer_frames(stream, home, monkeypatch)
    assert len(decoded) == FRAMES and decoded[0].shape == (64, 64, 3)
    difference = np.abs(np.stack(decoded).astype(int) - expected.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-2


def test_an_id_latent_that_does_not_fit_float16_is_one_clear_error():
    # Found by the full-size run: an e4e stand-in whose kernels were each one constant gave W+ rows of 1e7, and
    # the header writer then met inf; the encoder now says what is wrong with the models.
    from codec.encoder.encode import _stored_id_latent
    from codec.errors import ModelError

    fine = torch.randn(18, 512)
    assert np.array_equal(_stored_id_latent(fine), fine.numpy().astype(np.float16))
    for bad in (fine * 1e7, torch.full((18, 512), float("nan"))):
        with pytest.raises(ModelError, match="does not fit the stream's float16"):
            _stored_id_latent(bad)
