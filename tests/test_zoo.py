"""Model zoo: fetch from a local HTTP server (good, wrong hash, interrupted + resumed), CLI, loading."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from codec import zoo
from codec.cli.weights import main as cli
from codec.errors import ModelError

PAYLOAD = bytes(range(256)) * 1200  # 300 KiB, not a multiple of any read size
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves PAYLOAD with HTTP Range support; server.cut_at > 0 drops the connection after that many bytes."""

    def do_GET(self):  # noqa: N802 - http.server API
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.server.ranges.append(start)
        body = PAYLOAD[start:]
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.server.cut_at
        self.wfile.write(body[:cut] if cut else body)
        self.wfile.flush()
        if cut:
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.cut_at, srv.ranges = 0, []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}/model.bin"
    srv.shutdown()
    srv.server_close()


def test_download_good_file(server, tmp_path):
    _, url = server
    dest = tmp_path / "model.bin"
    assert zoo.download(url, dest, DIGEST) == DIGEST
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "model.bin.part").exists()


def test_download_wrong_hash_leaves_nothing(server, tmp_path):
    _, url = server
    dest = tmp_path / "model.bin"
    with pytest.raises(ModelError, match="does not match"):
        zoo.download(url, dest, "0" * 64)
    assert not dest.exists() and not (tmp_path / "model.bin.part").exists()


def test_interrupted_download_resumes_with_range(server, tmp_path):
    srv, url = server
    dest = tmp_path / "model.bin"
    srv.cut_at = 100_000
    with pytest.raises(ModelError, match="interrupted|stopped"):
        zoo.download(url, dest, DIGEST)
    part = tmp_path / "model.bin.part"
    assert not dest.exists() and 0 < part.stat().st_size <= 100_000
    kept = part.stat().st_size
    srv.cut_at = 0
    assert zoo.download(url, dest, DIGEST) == DIGEST
    assert srv.ranges == [kept]  # the second request asked only for the missing bytes
    assert dest.read_bytes() == PAYLOAD


@pytest.fixture()
def fake_manifest(tmp_path, monkeypatch, server):
    _, url = server
    data = {"format": 1, "models": {
        "good": {"role": "test", "file": "good.bin", "url": url, "sha256": DIGEST, "size": len(PAYLOAD),
                 "licence": "test"},
        "nohash": {"role": "test", "file": "nohash.bin", "url": url, "sha256": None, "size": None,
                   "licence": "test"},
        "page": {"role": "test", "file": "page.bin", "url": url, "direct": False, "sha256": None,
                 "licence": "test"}}}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(zoo, "MANIFEST", path)
    monkeypatch.setenv("STV_HOME", str(tmp_path / "home"))
    return path


def test_cli_fetch_verifies_and_refuses_unverified(fake_manifest, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["fetch", "good", "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "home" / "weights" / "good.bin").read_bytes() == PAYLOAD
    result = runner.invoke(cli, ["fetch", "nohash", "-q"])
    assert result.exit_code == 2 and "allow-unverified" in result.output
    assert result.output.count("\n") == 1  # one clean line, no traceback
    assert runner.invoke(cli, ["fetch", "nohash", "-q", "--allow-unverified"]).exit_code == 0
    result = runner.invoke(cli, ["fetch", "page", "-q"])
    assert result.exit_code == 2 and "stv-weights install PATH/TO/page.bin page" in result.output
    result = runner.invoke(cli, ["list"])
    assert result.exit_code == 0 and "good" in result.output and "verified (sha256)" in result.output


def test_real_manifest_is_complete():
    models = zoo.manifest()
    for name in ("tiny", "e4e_ffhq_encode", "stylegan2-ffhq-nvidia", "styleflow", "arcface_ir_se50",
                 "lpips_alex_backbone", "lpips_vgg_backbone", "bisenet_face_parsing"):
        assert name in models
    for e in models.values():
        assert e.licence
        assert e.url or e.shipped or e.pip or e.name == "stylegan2-ffhq-config-f"
    assert "non-commercial" in models["stylegan2-ffhq-nvidia"].licence.lower()


def test_missing_model_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("STV_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="stv-weights fetch"):
        zoo.path("arcface_ir_se50")


def test_tampered_generator_is_refused(tmp_path, monkeypatch):
    data = json.loads(zoo.MANIFEST.read_text())
    data["models"]["tiny"]["sha256"] = "f" * 64
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(zoo, "MANIFEST", path)
    with pytest.raises(ModelError, match="does not match"):
        zoo.load_generator("tiny")


def test_cli_convert_e4e_checkpoint_round_trip(tmp_path):
    """A synthetic e4e-layout checkpoint (the tiny generator's weights under 'decoder.', latent_avg repeated
    per W+ row as e4e stores it) converts to a generator that renders the same pixels."""
    g = zoo.load_generator("tiny")
    ckpt = {"state_dict": {f"decoder.{k}": v for k, v in g.state_dict().items()},
            "latent_avg": g.latent_avg[None].repeat(g.n_latent, 1), "opts": {"stylegan_size": 64}}
    # an encoder part must be ignored by the generator loader
    ckpt["state_dict"]["encoder.body.0.weight"] = torch.zeros(2)
    src = tmp_path / "e4e.pt"
    torch.save(ckpt, src)
    out = tmp_path / "g.safetensors"
    result = CliRunner().invoke(cli, ["convert", str(src), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(cli, ["convert", str(src), "-o", str(out)]).exit_code == 2  # no -y: refuse
    back = zoo.load_generator_file(out)
    assert torch.equal(back.latent_avg, g.latent_avg)
    w = g.latent_avg[None, None].repeat(2, g.n_latent, 1) + torch.randn(2, g.n_latent, g.style_dim)
    with torch.no_grad():
        assert torch.equal(back(w), g(w))
