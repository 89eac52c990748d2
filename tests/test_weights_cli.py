"""stv-weights install / list / fetch all / convert: the published digests, registering files the user has,
and converted generators whose bytes do not depend on the official layout they came from. No network."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_stylegan2_loaders import _nvidia_pickle, fake_persistence  # noqa: F401 - fixture used by name

from codec import zoo
from codec.cli.weights import main as cli
from codec.errors import ModelError
from codec.models.stylegan2 import Generator, GeneratorConfig
from official_layouts import E4E_OPTS_SAMPLE

MARKER = Path("/tmp/stv_pwned_install")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def _tree(home: Path) -> dict[str, bytes]:
    """Every file under home with its bytes: what 'changes nothing' compares."""
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()} \
        if home.exists() else {}


@pytest.fixture()
def weights_env(tmp_path, monkeypatch):
    """A manifest with one entry per kind of check, and the files that pass them."""
    good = tmp_path / "dl" / "net.pt"
    good.parent.mkdir()
    torch.save({"w": torch.arange(6.0).reshape(2, 3)}, good)
    flow = tmp_path / "dl" / "flow.pt"
    torch.save({"chain.0.weight": torch.ones(4)}, flow)
    models = {
        "net": {"role": "test", "file": "net.pt", "url": "https://drive.google.com/x", "direct": False,
                "sha256": zoo.sha256_of(good), "size": good.stat().st_size, "licence": "t",
                "used_by": ["stvenc: testing"]},
        "flow": {"role": "test", "file": "flow.pt", "url": flow.as_uri(), "direct": True,
                 "sha256": None, "size": None, "git_blob": zoo.git_blob_of(flow), "licence": "t"},
        "free": {"role": "test", "file": "free.pt", "url": "https://example.invalid/free.pt", "direct": False,
                 "sha256": None, "size": None, "licence": "t"},
        "table": {"role": "channel table", "file": "tiny-64.json", "shipped": True, "url": None, "sha256": None,
                  "measured": False, "licence": "t"},
    }
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"format": 1, "models": models}))
    monkeypatch.setattr(zoo, "MANIFEST", manifest)
    home = tmp_path / "home"
    monkeypatch.setenv("STV_HOME", str(home))
    return home, good, flow


def _one_line_failure(result, *words):
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1, result.output  # one clean line, no traceback
    for w in words:
        assert w in result.output, result.output


def test_git_blob_is_gits_hash(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(bytes(range(256)) * 3 + b"\0tail")
    expected = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True).stdout
    assert zoo.git_blob_of(f) == expected.strip()
    assert zoo.git_blob_of(f) == hashlib.sha1(b"blob %d\0" % f.stat().st_size + f.read_bytes()).hexdigest()


def test_install_verifies_links_and_lists(weights_env):
    home, good, flow = weights_env
    runner = CliRunner()
    result = runner.invoke(cli, ["install", str(good), "net"])
    assert result.exit_code == 0, result.output
    dest = home / "weights" / "net.pt"
    assert dest.read_bytes() == good.read_bytes() and "verified by sha256" in result.output
    assert os.path.samefile(dest, good)  # same filesystem: a hard link
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".net.pt")]  # no temporary left
    result = runner.invoke(cli, ["install", str(flow), "flow"])
    assert result.exit_code == 0 and "verified by git blob" in result.output, result.output
    listing = runner.invoke(cli, ["list"]).output
    lines = {line.split()[0]: line for line in listing.splitlines() if not line.startswith(" ")}
    assert "installed" in lines["net"] and "verified (sha256)" in lines["net"]
    assert "verified (git blob)" in lines["flow"]
    assert "missing" in lines["free"]
    assert "UNVERIFIED content" in lines["table"]
    assert "needed by stvenc: testing" in listing
    # a file changed after it was installed is hashed again, not trusted from the record
    dest.unlink()
    dest.write_bytes(b"Q" + good.read_bytes()[1:])
    assert "MISMATCH" in runner.invoke(cli, ["list"]).output


def test_install_copies_across_filesystems(weights_env, monkeypatch):
    home, good, _ = weights_env

    def no_link(*_):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    result = CliRunner().invoke(cli, ["install", str(good), "net"])
    assert result.exit_code == 0 and "copied" in result.output, result.output
    dest = home / "weights" / "net.pt"
    assert dest.read_bytes() == good.read_bytes() and not os.path.samefile(dest, good)


def test_bad_files_change_nothing(weights_env, tmp_path):
    home, good, flow = weights_env
    runner = CliRunner()
    assert runner.invoke(cli, ["install", str(flow), "flow"]).exit_code == 0
    before = _tree(home)
    wrong = tmp_path / "wrong.pt"
    wrong.write_bytes(b"Q" + good.read_bytes()[1:])  # same size, other bytes
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"w": _Evil()}, protocol=2))
    other_suffix = tmp_path / "net.safetensors"
    other_suffix.write_bytes(good.read_bytes())
    MARKER.unlink(missing_ok=True)
    cases = [
        (["install", str(wrong), "net"], ("does not match",)),
        (["install", str(truncated), "net"], ("truncated",)),
        (["install", str(evil), "free", "--allow-unverified"], ("would run code",)),
        (["install", str(evil), "free"], ("--allow-unverified",)),
        (["install", str(good), "flow"], ("git blob",)),
        (["install", str(tmp_path), "net"], ("directory",)),
        (["install", str(tmp_path / "absent.pt"), "net"], ("no such file",)),
        (["install", str(good), "nosuchmodel"], ("unknown model",)),
        (["install", str(good), "table"], ("ships with stv",)),
        (["install", str(other_suffix), "net"], ("is a .pt file",)),
    ]
    for args, words in cases:
        _one_line_failure(runner.invoke(cli, args), *words)
        assert _tree(home) == before, args
    assert not MARKER.exists()


def test_install_unverified_when_allowed(weights_env):
    home, good, _ = weights_env
    result = CliRunner().invoke(cli, ["install", str(good), "free", "--allow-unverified"])
    assert result.exit_code == 0 and "UNVERIFIED" in result.output, result.output
    assert (home / "weights" / "free.pt").read_bytes() == good.read_bytes()
    assert "unverified (no published digest)" in CliRunner().invoke(cli, ["list"]).output


def test_stand_ins_install_under_a_manifest_without_digests(tmp_path, monkeypatch):
    """--allow-unverified cannot override a published digest; a test's stand-in for an official file is
    installed under a manifest (STV_MANIFEST) that leaves the digest out."""
    monkeypatch.setenv("STV_HOME", str(tmp_path / "home"))
    stand_in = tmp_path / "model_ir_se50.pth"
    torch.save({"w": torch.ones(3)}, stand_in)
    _one_line_failure(CliRunner().invoke(cli, ["install", str(stand_in), "arcface_ir_se50", "--allow-unverified"]),
                      "175367323 bytes")
    data = json.loads(zoo.MANIFEST.read_text())
    data["models"]["arcface_ir_se50"].update(sha256=None, size=None)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    monkeypatch.setenv("STV_MANIFEST", str(tmp_path / "manifest.json"))
    result = CliRunner().invoke(cli, ["install", str(stand_in), "arcface_ir_se50", "--allow-unverified"])
    assert result.exit_code == 0 and "UNVERIFIED" in result.output, result.output
    assert zoo.path("arcface_ir_se50").read_bytes() == stand_in.read_bytes()


def test_fetch_all_says_what_to_install_by_hand(weights_env, monkeypatch):
    def offline(*_, **__):
        raise AssertionError("no network in tests")

    monkeypatch.setattr(zoo.urllib.request, "urlopen", offline)
    home, _, flow = weights_env
    # what fetch can download is already there: fetch checks it and does not download
    (home / "weights").mkdir(parents=True)
    (home / "weights" / "flow.pt").write_bytes(flow.read_bytes())
    result = CliRunner().invoke(cli, ["fetch", "all", "-q"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "https://drive.google.com/x" in out and "stv-weights install PATH/TO/net.pt net" in out
    assert "stv-weights install PATH/TO/free.pt free" in out
    assert "flow: " in out


def test_fetch_checks_the_git_blob_id(weights_env, monkeypatch):
    """A file:// URL stands in for the raw GitHub one: the download is kept only if its git blob id matches."""
    home, _, flow = weights_env
    assert CliRunner().invoke(cli, ["fetch", "flow", "-q"]).exit_code == 0
    assert (home / "weights" / "flow.pt").read_bytes() == flow.read_bytes()
    assert "verified (git blob)" in CliRunner().invoke(cli, ["list"]).output
    (home / "weights" / "flow.pt").unlink()
    flow.write_bytes(b"Q" + flow.read_bytes()[1:])  # the server now serves other bytes
    before = _tree(home)
    _one_line_failure(CliRunner().invoke(cli, ["fetch", "flow", "-q"]), "git blob id", "deleted")
    assert _tree(home) == before


def test_real_manifest_carries_published_digests():
    m = zoo.manifest()
    published = {
        "e4e_ffhq_encode": ("2ace1d9a8c05c10a399bcd500b8dda118f759ff1aac89dbdab7435f2136a0999", 1201649680),
        "stylegan2-ffhq-rosinality": ("bae494ef77e32a9cd1792a81a3c167692a0e64f6bcd8b06592ff42917e2ed46e", 381462551),
        "stylegan2-ffhq-nvidia": ("5288b53ad77fd754568efed10275e88acbd27b85d74ad45df54704e127bb55d0", 381601496),
        "stylegan2-ada-ffhq": ("a205a346e86a9ddaae702e118097d014b7b8bd719491396a162cca438f2f524c", 381624121),
        "arcface_ir_se50": ("a035c768259b98ab1ce0e646312f48b9e1e218197a0f80ac6765e88f8b6ddf28", 175367323),
        "bisenet_face_parsing": ("468e13ca13a9b43cc0881a9f99083a430e9c0a38abd935431d1c28ee94b26567", 53289463),
        "lpips_alex_backbone": ("7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02", 244408911),
        "lpips_vgg_backbone": ("397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0", 553433881),
    }
    for name, (sha, size) in published.items():
        assert (m[name].sha256, m[name].size) == (sha, size), name
        assert m[name].sha256_prefix is None or sha.startswith(m[name].sha256_prefix)
    assert "one published source only" in m["stylegan2-ffhq-nvidia"].note.lower()
    assert m["styleflow"].git_blob == "94fd23b8d3e51d1921309694bc51ee9ead122961" and m["styleflow"].direct
    assert m["ffhq-1024-channels"].measured is False
    for e in m.values():  # every Drive-only file has its install command, every file its users listed
        if not e.direct:
            assert e.url and e.file
    assert set(m["stylegan2-ffhq-config-f"].derived_from) == {"e4e_ffhq_encode", "stylegan2-ffhq-rosinality",
                                                              "stylegan2-ffhq-nvidia"}
    listing = CliRunner().invoke(cli, ["list"]).output
    line = next(ln for ln in listing.splitlines() if ln.startswith("ffhq-1024-channels"))
    assert "UNVERIFIED" in line


# --- one generator, three official layouts, one digest ------------------------------------------------------

def _random_generator(seed: int = 7) -> Generator:
    """A reduced config-f (32x32, 3-layer mapping) with every weight random, noise and latent_avg included."""
    torch.manual_seed(seed)
    g = Generator(GeneratorConfig(size=32, style_dim=32, n_mlp=3, channels={4: 32, 8: 32, 16: 16, 32: 8}))
    with torch.no_grad():
        for k, v in g.state_dict().items():
            if not k.endswith(".kernel"):  # the FIR kernels are constants of the architecture
                v.copy_(torch.randn_like(v) * 0.2)
        g.latent_avg.copy_(torch.randn(g.style_dim))
    return g.eval()


def test_three_official_layouts_convert_to_identical_bytes(fake_persistence, tmp_path):  # noqa: F811
    g = _random_generator()
    sd = {k: v.clone() for k, v in g.state_dict().items()}
    e4e = tmp_path / "e4e_ffhq_encode.pt"
    torch.save({"state_dict": {**{f"decoder.{k}": v for k, v in sd.items()}, "encoder.body.0.weight": torch.ones(2)},
                "latent_avg": g.latent_avg[None].repeat(g.n_latent, 1), "opts": E4E_OPTS_SAMPLE}, e4e)
    rosinality = tmp_path / "stylegan2-ffhq-config-f.pt"
    torch.save({"g_ema": sd, "latent_avg": g.latent_avg.clone()}, rosinality)
    nvidia = tmp_path / "stylegan2-ffhq-1024x1024.pkl"
    _nvidia_pickle(g, fake_persistence, nvidia)
    runner = CliRunner()
    outputs = {}
    for src, layout in ((e4e, "e4e"), (rosinality, "rosinality"), (nvidia, "nvidia")):
        out = tmp_path / f"from-{layout}.safetensors"
        result = runner.invoke(cli, ["convert", str(src), "-o", str(out)])
        assert result.exit_code == 0 and f"{layout} layout" in result.output, result.output
        outputs[layout] = out.read_bytes()
    assert outputs["e4e"] == outputs["rosinality"] == outputs["nvidia"]
    back = zoo.load_generator_file(tmp_path / "from-rosinality.safetensors")
    w = g.latent_avg[None, None].repeat(2, g.n_latent, 1) + torch.randn(2, g.n_latent, g.style_dim)
    with torch.no_grad():
        assert torch.equal(back(w), g(w))
    # converting again gives the same bytes (nothing run- or time-dependent in the file)
    again = tmp_path / "again.safetensors"
    assert runner.invoke(cli, ["convert", str(nvidia), "-o", str(again)]).exit_code == 0
    assert again.read_bytes() == outputs["nvidia"]


def test_rosinality_checkpoint_without_latent_avg_is_refused(tmp_path):
    g = _random_generator()
    src = tmp_path / "train.pt"
    torch.save({"g_ema": g.state_dict()}, src)
    with pytest.raises(ModelError, match="latent_avg"):
        zoo.generator_from_checkpoint(src)
    (tmp_path / "other.pt").write_bytes(b"")
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="g_ema"):
        zoo.generator_from_checkpoint(tmp_path / "other.pt")


def test_shipped_tiny_digest_unchanged():
    """The conversion's provenance metadata changed; the shipped tiny file (and the goldens naming it) did not."""
    assert zoo.generator_digest("tiny") == "846361d99531e5f7152802b1503d6488684a6644f491a4f65c6aa25bee91be37"
