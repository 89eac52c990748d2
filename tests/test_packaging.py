"""A regular install carries everything the code reads at run time: the wheel holds every package, the shipped
models, the manifest, the channel tables and the C++/CUDA sources; and stvinfo, stvdec and the fused CPU op run
from a non-editable install, with nothing read from this checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from test_decoder_helpers import generator, write_stream  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def source_packages() -> set[str]:
    return {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "codec").rglob("__init__.py")}


def shipped_files() -> set[str]:
    """What the wheel must carry: every module, and every file of weights/ and csrc/ (as codec/<folder>/...)."""
    files = {str(p.relative_to(ROOT)) for p in (ROOT / "codec").rglob("*.py")}
    for folder in ("weights", "csrc"):
        files |= {f"codec/{folder}/{p.name}" for p in (ROOT / folder).iterdir() if p.is_file()}
    return files


def test_every_package_under_codec_is_listed_in_pyproject():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert source_packages() == listed - {"codec.weights", "codec.csrc"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # no build isolation: the venv's setuptools builds it, so the test needs no download
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, text=True)
    (path,) = out.glob("stv-*.whl")
    return path


def test_wheel_carries_every_module_model_table_and_source(wheel):
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        manifest = json.loads(whl.read("codec/weights/manifest.json"))
    missing = shipped_files() - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    for name, model in manifest["models"].items():
        if model.get("shipped"):
            assert f"codec/weights/{model['file']}" in names, name
    # the repository's top-level folders must not leak into site-packages as top-level packages
    assert not [n for n in names if n.startswith(("weights/", "csrc/", "tests/", "tools/"))]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, text=True)
    return target


def run_installed(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Run with the installed copy first on sys.path, from a folder outside the checkout."""
    env = dict(os.environ, PYTHONPATH=str(installed))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_installed_package_reads_nothing_from_the_checkout(installed, tmp_path):
    probe = run_installed(installed, tmp_path, "-c", (
        "import codec, json; from codec import zoo; from codec.ops import extension; "
        "print(json.dumps([codec.__file__, str(zoo.MANIFEST), str(extension.CSRC)]))"))
    assert probe.returncode == 0, probe.stderr
    for path in json.loads(probe.stdout):
        assert Path(path).resolve().is_relative_to(installed.resolve()), path
        assert Path(path).exists(), path


def test_stvinfo_stvdec_and_fused_op_run_from_the_installed_package(installed, tmp_path, generator):
    stream, _ = write_stream(tmp_path / "a.stv", generator, n=4)
    info = run_installed(installed, tmp_path, "-m", "codec.cli.stvinfo", str(stream), "--json", "--validate")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["format"]["nb_frames"] == 4

    out = tmp_path / "decoded.mkv"
    dec = run_installed(installed, tmp_path, "-m", "codec.cli.stvdec", str(stream), str(out), "--lossless", "-q",
                        "--device", "cpu")
    assert dec.returncode == 0, dec.stderr
    assert out.stat().st_size > 0

    op = run_installed(installed, tmp_path, "-c", (
        "from codec.ops import extension; module, why = extension.load('cpu'); "
        "print('built' if module is not None else 'failed: ' + why)"))
    assert op.returncode == 0, op.stderr
    if os.environ.get("CI") == "true" or op.stdout.strip() == "built":
        assert op.stdout.strip() == "built", op.stdout
    else:
        pytest.skip(f"CPU extension not buildable here: {op.stdout.strip()}")
