"""Linear pose editors from published direction files (issue 12 part 2) and `stvenc --pose-editor`.

The direction files are written here in the published layouts (e4e's InterFaceGAN pose.pt: [1, 18, 512] float32
saved from a CUDA device; angle_pitch.npy: [18, 512] float64); the official copies in ../shared/official-small
are read too when that folder exists (never committed).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from codec import zoo
from codec.errors import ModelError
from codec.models.pose import LinearPoseEditor, linear_editor_from_files, load_direction_file

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OFFICIAL = ROOT.parent / "shared" / "official-small"
CONFIG_F = "stylegan2-ffhq-config-f"


def save_as_if_from_cuda(tensor: torch.Tensor, file: Path) -> None:
    """torch.save, then the storage's device tag rewritten from 'cpu' to 'cuda:0' in the archive's pickle: the
    bytes a tensor saved from a GPU has, which a CPU-only torch loads only with map_location."""
    buffer = io.BytesIO()
    torch.save(tensor, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as out:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("data.pkl"):
                assert data.count(b"X\x03\x00\x00\x00cpu") == 1  # protocol 2 BINUNICODE, as in e4e's file
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            out.writestr(info, data)


@pytest.fixture
def published(tmp_path):
    """Synthetic direction files in the published layouts: (yaw .pt, pitch .npy, yaw row, pitch row)."""
    g = torch.Generator().manual_seed(0)
    yaw_row = torch.randn(512, generator=g)
    yaw_row /= yaw_row.norm()
    pitch_row = torch.randn(512, generator=g, dtype=torch.float64) * 0.016
    save_as_if_from_cuda(yaw_row.expand(1, 18, 512).clone(), tmp_path / "pose.pt")
    np.save(tmp_path / "angle_pitch.npy", pitch_row.expand(18, 512).numpy().copy())
    return tmp_path / "pose.pt", tmp_path / "angle_pitch.npy", yaw_row, pitch_row


def test_cuda_saved_direction_loads_on_cpu(published):
    yaw_file, _, yaw_row, _ = published
    if not torch.cuda.is_available():  # the file really names a CUDA device: plain torch.load refuses it here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(yaw_file, weights_only=True)
    direction = load_direction_file(yaw_file)
    assert direction.shape == (18, 512) and direction.dtype == torch.float32 and direction.device.type == "cpu"
    assert torch.equal(direction, yaw_row.expand(18, 512))


def test_float64_npy_direction_becomes_float32(published):
    _, pitch_file, _, pitch_row = published
    direction = load_direction_file(pitch_file)
    assert direction.shape == (18, 512) and direction.dtype == torch.float32
    assert torch.equal(direction, pitch_row.float().expand(18, 512))


def test_bad_direction_files_are_refused(tmp_path):
    np.save(tmp_path / "short.npy", np.zeros((17, 512)))
    np.save(tmp_path / "ints.npy", np.zeros((18, 512), dtype=np.int64))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "nan.npy", np.full((18, 512), np.nan))
    torch.save({"a": torch.zeros(18, 512), "b": torch.zeros(18, 512)}, tmp_path / "two.pt")
    (tmp_path / "x.txt").write_text("0")
    for name, words in [("short.npy", "shape"), ("ints.npy", "floating"), ("objects.npy", "pickle"),
                        ("nan.npy", "non-finite"), ("two.pt", "not a direction"), ("x.txt", "unknown")]:
        with pytest.raises(ValueError, match=words):
            load_direction_file(tmp_path / name)
    with pytest.raises(ModelError, match="not a plain numpy array"):  # what `stv-weights install` checks
        zoo.probe_loadable(tmp_path / "objects.npy")


def test_editor_from_files_adds_each_direction_once_per_unit(published):
    yaw_file, pitch_file, yaw_row, pitch_row = published
    editor = linear_editor_from_files(yaw_file, pitch_file)
    w = torch.randn(3, 18, 512)
    yaw, pitch = torch.tensor([0.0, 1.0, -2.5]), torch.tensor([1.0, 0.0, 0.5])
    edited = editor.edit(w, yaw, pitch)
    expected = w + yaw[:, None, None] * yaw_row + pitch[:, None, None] * pitch_row.float()
    torch.testing.assert_close(edited, expected, rtol=0, atol=1e-6)


@pytest.fixture
def stand_in_home(tmp_path, monkeypatch, published):
    """STV_HOME holding the synthetic pair under the manifest's names; a manifest without their digests."""
    data = json.loads(zoo.MANIFEST.read_text())
    for name in zoo.LINEAR_DIRECTION_PAIRS["ffhq-pose-interfacegan"]:
        data["models"][name].update(sha256=None, size=None)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    monkeypatch.setenv("STV_MANIFEST", str(tmp_path / "manifest.json"))
    monkeypatch.setenv("STV_HOME", str(tmp_path / "home"))
    yaw_file, pitch_file = published[:2]
    for name, source in zip(zoo.LINEAR_DIRECTION_PAIRS["ffhq-pose-interfacegan"], (yaw_file, pitch_file)):
        zoo.install(name, source, allow_unverified=True)
    return published


def test_config_f_linear_default_is_the_published_pair(stand_in_home):
    _, _, yaw_row, pitch_row = stand_in_home
    spec, editor = zoo.encoder_pose_editor("linear", CONFIG_F)
    assert spec == {"editor": "linear", "model": "ffhq-pose-interfacegan"}
    assert isinstance(editor, LinearPoseEditor)
    assert torch.equal(editor.directions, torch.stack([yaw_row.expand(18, 512), pitch_row.float().expand(18, 512)]))
    decoded = zoo.load_pose_editor(spec, CONFIG_F)  # what stvdec builds from the stream's extension
    assert torch.equal(decoded.directions, editor.directions)


def test_missing_pair_file_names_the_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("STV_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="stv-weights fetch interfacegan-yaw"):
        zoo.load_pose_editor({"editor": "linear", "model": "ffhq-pose-interfacegan"}, CONFIG_F)


@pytest.mark.parametrize("choice, words", [
    ("linear:nope", "unknown linear pose editor 'nope'; known: ffhq-pose-interfacegan, tiny-pose"),
    ("linear:styleflow", "unknown linear pose editor 'styleflow'"),
    ("linear:", "unknown pose editor 'linear:'"),
    ("flow", "unknown pose editor 'flow': use styleflow, linear or linear:NAME"),
])
def test_pose_editor_names(choice, words):
    with pytest.raises(ModelError, match=words):
        zoo.pose_editor_spec(choice, "tiny")
    assert zoo.pose_editor_spec("linear", "tiny") == {"editor": "linear", "model": "tiny-pose"}
    assert zoo.pose_editor_spec(None, CONFIG_F) is None
    assert zoo.pose_editor_spec("styleflow", CONFIG_F) == {"editor": "styleflow", "model": "styleflow"}


def test_config_f_default_without_styleflow_names_both_ways(tmp_path, monkeypatch):
    monkeypatch.setenv("STV_HOME", str(tmp_path))
    for choice in (None, "styleflow"):
        with pytest.raises(ModelError, match=r"stv-weights fetch styleflow.*--pose-editor linear"):
            zoo.encoder_pose_editor(choice, CONFIG_F)


@pytest.mark.skipif(not OFFICIAL.is_dir(), reason="no ../shared/official-small (the official files' copies)")
def test_official_files_load_and_match_the_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("STV_HOME", str(tmp_path))
    yaw_file, pitch_file = OFFICIAL / "e4e_interfacegan_pose.pt", OFFICIAL / "a312863063_angle_pitch.npy"
    for name, file in zip(zoo.LINEAR_DIRECTION_PAIRS["ffhq-pose-interfacegan"], (yaw_file, pitch_file)):
        zoo.install(name, file)  # size and sha256 against the manifest, loadable without code
        assert zoo.status(name) == ("installed", "verified (sha256)")
    editor = zoo.load_pose_editor({"editor": "linear", "model": "ffhq-pose-interfacegan"}, CONFIG_F)
    yaw, pitch = editor.directions
    assert yaw.shape == pitch.shape == (18, 512)
    assert torch.equal(yaw, yaw[:1].expand(18, -1)) and torch.equal(pitch, pitch[:1].expand(18, -1))  # one W row
    # the units the manifest states: yaw is InterFaceGAN's unit normal, pitch's rows have norm 0.364
    torch.testing.assert_close(yaw.norm(dim=1), torch.ones(18), rtol=0, atol=1e-5)
    torch.testing.assert_close(pitch.norm(dim=1), torch.full((18,), 0.3637), rtol=0, atol=1e-4)
    assert abs(float(yaw[0] @ pitch[0]) / float(pitch[0].norm())) < 0.05  # nearly orthogonal (cos -0.034)


# --- stvenc --pose-editor on the tiny model ---------------------------------------------------------------------

QUICK = ["--aligned", "--frames", "0:2", "--inverter", "e4e", "--pose-steps", "2", "--attribute-steps", "1",
         "--refine-rounds", "0", "-q"]


def run(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    made = run(sys.executable, ROOT / "tools" / "make_demo_clip.py", "demo.mkv", "--truth", "truth.json", "--frames", "2",
               cwd=folder)
    assert made.returncode == 0, made.stderr
    return folder


def test_stvenc_linear_writes_its_extension_and_stvdec_decodes_it(clip):
    from codec.bitstream import StvReader

    out = clip / "linear.stv"
    result = run(BIN / "stvenc", "demo.mkv", out, "--pose-editor", "linear", *QUICK, cwd=clip)
    assert result.returncode == 0, result.stderr
    assert StvReader(out).header.pose_editor == {"editor": "linear", "model": "tiny-pose"}
    decoded = run(BIN / "stvdec", out, "--png", clip / "png", "-q", cwd=clip)
    assert decoded.returncode == 0, decoded.stderr
    assert len(list((clip / "png").glob("frame_*.png"))) == 2


@pytest.mark.parametrize("choice, message", [
    ("linear:nope", "unknown linear pose editor 'nope'; known: ffhq-pose-interfacegan, tiny-pose"),
    ("sideways", "unknown pose editor 'sideways': use styleflow, linear or linear:NAME"),
])
def test_stvenc_bad_pose_editor_is_one_line_and_no_output(clip, choice, message):
    result = run(BIN / "stvenc", "demo.mkv", "bad.stv", "--pose-editor", choice, *QUICK, cwd=clip)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"stvenc: error: {message}"]
    assert not list(clip.glob("bad.stv*"))
