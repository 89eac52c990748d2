"""A home ($STV_HOME) holding random-weight stand-ins of the official config-f files, in their official layouts,
installed the way a user installs the real ones (`stv-weights install`, `stv-weights convert`).

Full size, or reduced (REDUCED: a 64² generator with narrow channels and 32-wide styles, the e4e and StyleFlow
layouts shrunk to match, ArcFace and BiSeNet as released) for a default-run test of the same path. The reduced
generator cannot hold the shipped config-f channel table's indices (layers up to 17, channels up to 505), so it
comes with a table of its own (reduced_channel_table).

The stand-ins cannot match the published digests, so they are installed under a copy of the manifest that leaves
those digests out (STV_MANIFEST), with --allow-unverified; everything else is the user's path.

- e4e_ffhq_encode.pt: the full e4e encoder (267 M random weights: 1.1 GB on disk; stride-0 tensors would keep the
  file small, but an encoder whose every kernel is one constant value gives W+ rows of 1e7) and a decoder with
  random weights, whose generator `stv-weights convert` extracts.
- modellarge10k.pt (StyleFlow), model_ir_se50.pth (ArcFace), 79999_iter.pth (BiSeNet): full layouts, random.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner

from codec import zoo
from codec.cli.weights import main as weights_cli
from codec.ops.extension import stv_home
from codec.models.e4e import E4EEncoder, tiny_e4e_config
from codec.models.stylegan2 import Generator, GeneratorConfig
from official_layouts import (E4E_OPTS_SAMPLE, arcface_ir_se50_layout, bisenet_face_parsing_layout,
                              e4e_encoder_layout, styleflow_layout, synthetic_state)

# manifest name -> file name, in install order
STAND_INS = {"e4e_ffhq_encode": "e4e_ffhq_encode.pt", "styleflow": "modellarge10k.pt",
             "arcface_ir_se50": "model_ir_se50.pth", "bisenet_face_parsing": "79999_iter.pth",
             "interfacegan-yaw": "pose.pt", "ffhq-angle-pitch": "angle_pitch.npy"}


REDUCED = GeneratorConfig(size=64, style_dim=32, n_mlp=8, channels={4: 64, 8: 64, 16: 32, 32: 32, 64: 16})


@dataclass(frozen=True)
class StandInHome:
    home: Path  # $STV_HOME
    manifest: Path  # $STV_MANIFEST
    generator: Generator  # the random generator inside the e4e stand-in, as built

    def environ(self) -> dict[str, str]:
        return {**os.environ, "STV_HOME": str(self.home), "STV_MANIFEST": str(self.manifest)}


def random_generator(config: GeneratorConfig, seed: int) -> Generator:
    """rosinality's own initialisation (weights ~ N(0, 1) scaled at run time), seeded; a random latent average."""
    torch.manual_seed(seed)
    generator = Generator(config).eval()
    with torch.no_grad():
        generator.latent_avg.copy_(torch.randn(config.style_dim) * 0.3)
    return generator


def write_stand_ins(directory: Path, generator: Generator, seed: int = 0) -> dict[str, Path]:
    """The official files, with random weights, in `directory`. The linear pose pair is written as published:
    e4e's InterFaceGAN yaw direction a [1, 18, 512] float32 tensor, the pitch direction [18, 512] float64 .npy."""
    n_latent, dim = generator.n_latent, generator.style_dim
    full_size = (n_latent, dim) == (18, 512)
    decoder = {f"decoder.{k}": v for k, v in generator.state_dict().items()}
    if full_size:
        encoder_state = synthetic_state(e4e_encoder_layout(), seed)
    else:
        torch.manual_seed(seed)
        encoder_state = E4EEncoder(tiny_e4e_config(n_styles=n_latent, style_dim=dim, input_size=64)).state_dict()
    encoder = {f"encoder.{k}": v for k, v in encoder_state.items()}
    # the published linear pair is [18, 512]: only at full size
    files = {name: directory / file for name, file in STAND_INS.items()
             if full_size or name not in ("interfacegan-yaw", "ffhq-angle-pitch")}
    torch.save({"state_dict": {**encoder, **decoder}, "opts": dict(E4E_OPTS_SAMPLE),
                "latent_avg": generator.latent_avg[None].repeat(n_latent, 1).clone()}, files["e4e_ffhq_encode"])
    hidden = (512,) * 5 if full_size else (64,)
    torch.save(synthetic_state(styleflow_layout(dim=dim, hidden=hidden), seed + 1), files["styleflow"])
    torch.save(synthetic_state(arcface_ir_se50_layout(), seed + 2), files["arcface_ir_se50"])
    torch.save(synthetic_state(bisenet_face_parsing_layout(), seed + 3), files["bisenet_face_parsing"])
    if full_size:
        directions = torch.randn(2, n_latent, dim, generator=torch.Generator().manual_seed(seed + 4))
        torch.save(directions[:1].clone(), files["interfacegan-yaw"])
        np.save(files["ffhq-angle-pitch"], directions[1].double().numpy())
    return files


def reduced_channel_table(generator: Generator, path: Path) -> Path:
    """The shipped config-f table's 32 entries (regions, order, null gammas) moved onto `generator`'s layout: entry
    i on the i-th non-toRGB layer (cycling), a distinct channel each."""
    data = json.loads((zoo.WEIGHTS_DIR / "ffhq-1024-channels.json").read_text())
    layers = [i for i, layer in enumerate(generator.layout.layers) if not layer.is_torgb]
    for i, entry in enumerate(data["channels"]):
        layer = layers[i % len(layers)]
        entry.update(layer=layer, channel=(i // len(layers)) % generator.layout.channels[layer])
    data["generator_sha256"] = None
    path.write_text(json.dumps(data, indent=1))
    return path


def stand_in_home(directory: Path, config: GeneratorConfig = GeneratorConfig(), seed: int = 0) -> StandInHome:
    """Write the stand-ins, install them into directory/home and convert the generator, through the CLI."""
    directory.mkdir(parents=True, exist_ok=True)
    generator = random_generator(config, seed)
    files = write_stand_ins(directory, generator, seed)
    data = json.loads(zoo.MANIFEST.read_text())
    for name in [*STAND_INS, "stylegan2-ffhq-config-f"]:
        data["models"][name].update(sha256=None, size=None, git_blob=None)
    manifest = directory / "manifest.json"
    manifest.write_text(json.dumps(data))
    home = StandInHome(directory / "home", manifest, generator)
    # the compiled CPU extension is shared with the default home: the same build, not rebuilt per test (~40 s)
    builds = stv_home() / "torch_extensions"
    builds.mkdir(parents=True, exist_ok=True)
    home.home.mkdir(parents=True, exist_ok=True)
    (home.home / "torch_extensions").symlink_to(builds, target_is_directory=True)
    runner = CliRunner()
    for name, file in files.items():
        result = runner.invoke(weights_cli, ["install", str(file), name, "--allow-unverified"], env=home.environ())
        assert result.exit_code == 0, result.output
    result = runner.invoke(weights_cli, ["convert", str(files["e4e_ffhq_encode"])], env=home.environ())
    assert result.exit_code == 0 and "e4e layout" in result.output, result.output
    return home
