"""The model registry: names -> files (weights/ or the user cache), sha256, fetching, safe loading.

Files live in weights/ when shipped (the tiny generator) and in `$STV_HOME/weights` otherwise
(STV_HOME defaults to ~/.cache/stv). Everything loads from safetensors or torch.load(weights_only=True).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from codec.errors import ModelError
from codec.ops.extension import stv_home
from codec.resources import data_dir

WEIGHTS_DIR = data_dir("weights")
MANIFEST = WEIGHTS_DIR / "manifest.json"
CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelEntry:
    name: str
    file: str
    role: str
    url: str | None
    sha256: str | None
    size: int | None
    licence: str
    shipped: bool = False
    direct: bool = True
    sha256_prefix: str | None = None
    pip: str | None = None
    note: str = ""


def manifest(path: Path | None = None) -> dict[str, ModelEntry]:
    data = json.loads(Path(path or MANIFEST).read_text())
    out = {}
    for name, e in data["models"].items():
        out[name] = ModelEntry(name=name, file=e["file"], role=e["role"], url=e.get("url"), sha256=e.get("sha256"),
                               size=e.get("size"), licence=e.get("licence", ""), shipped=e.get("shipped", False),
                               direct=e.get("direct", True), sha256_prefix=e.get("sha256_prefix"),
                               pip=e.get("pip"), note=e.get("note", ""))
    return out


def entry(name: str) -> ModelEntry:
    models = manifest()
    if name not in models:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(models))}")
    return models[name]


def cache_dir() -> Path:
    return stv_home() / "weights"


def location(name: str) -> Path:
    """Where model `name` lives (whether or not it is there yet)."""
    e = entry(name)
    return (WEIGHTS_DIR if e.shipped else cache_dir()) / e.file


def path(name: str) -> Path:
    """The existing file of model `name`; ModelError saying how to get it otherwise."""
    p = location(name)
    if not p.exists():
        raise ModelError(f"model {name!r} not found at {p}; run `stv-weights fetch {name}`"
                         + (" (or `stv-weights convert`)" if entry(name).url is None else ""))
    return p


def sha256_of(file: Path, progress: Callable[[int], Any] | None = None) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
            if progress:
                progress(len(block))
    return h.hexdigest()


def verify(name: str, file: Path) -> str:
    """sha256 of `file`, checked against the manifest (full digest, else torchvision-style prefix)."""
    e = entry(name)
    digest = sha256_of(file)
    if e.sha256 and digest != e.sha256:
        raise ModelError(f"{file}: sha256 {digest} does not match the manifest's {e.sha256} for {name!r}")
    if e.sha256_prefix and not digest.startswith(e.sha256_prefix):
        raise ModelError(f"{file}: sha256 {digest} does not start with {e.sha256_prefix} as {name!r} requires")
    return digest


# --- fetching ------------------------------------------------------------------------------------------------

def download(url: str, dest: Path, expected_sha256: str | None, expected_prefix: str | None = None,
             progress_factory: Callable[[int | None, int], Any] | None = None, timeout: float = 60.0) -> str:
    """Download `url` to `dest` atomically: bytes go to `dest.part` (resumed with an HTTP Range request when a
    partial file exists), are hashed, and the part is renamed onto `dest` only if the sha256 matches.
    A mismatching download is deleted (a resume cannot repair it). Returns the sha256."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part is already complete (or longer than the file): check it
            response = None
        else:
            raise ModelError(f"download of {url} failed: HTTP {exc.code}") from exc
    except urllib.error.URLError as exc:
        raise ModelError(f"download of {url} failed: {exc.reason}") from exc
    if response is not None:
        with response:
            resumed = response.status == 206
            if not resumed:
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            bar = progress_factory(total, have) if progress_factory else None
            try:
                with open(part, "ab" if resumed else "wb") as f:
                    while block := response.read(CHUNK):
                        f.write(block)
                        if bar is not None:
                            bar.update(len(block))
            except (http.client.HTTPException, OSError) as exc:  # the bytes so far stay in the .part file
                raise ModelError(f"download of {url} interrupted at {part.stat().st_size} bytes "
                                 f"({getattr(exc, 'strerror', None) or exc or 'connection lost'}); run the fetch again "
                                 "to resume") from exc
            finally:
                if bar is not None:
                    bar.close()
        if total is not None and part.stat().st_size < total:
            raise ModelError(f"download of {url} stopped at {part.stat().st_size} of {total} bytes; "
                             "run the fetch again to resume")
    digest = sha256_of(part)
    bad = (expected_sha256 and digest != expected_sha256) or (expected_prefix and not digest.startswith(expected_prefix))
    if bad:
        part.unlink()
        raise ModelError(f"{url}: sha256 {digest} does not match the expected "
                         f"{expected_sha256 or expected_prefix + '...'}; the download was deleted")
    os.replace(part, dest)
    return digest


def fetch(name: str, allow_unverified: bool = False,
          progress_factory: Callable[[int | None, int], Any] | None = None) -> Path:
    """Make model `name` present in the cache (download + verify); returns its path."""
    e = entry(name)
    target = location(name)
    if e.shipped:
        verify(name, target)
        return target
    if e.pip:
        raise ModelError(f"{name!r} comes with the pip package {e.pip!r}; nothing to fetch")
    if e.url is None:
        raise ModelError(f"{name!r} is made locally: run `stv-weights convert`")
    if not e.direct:
        raise ModelError(f"{name!r} is published on a web page a script cannot download reliably: get it from "
                         f"{e.url} and place it at {target}")
    if target.exists():
        verify(name, target)
        return target
    if not (e.sha256 or e.sha256_prefix) and not allow_unverified:
        raise ModelError(f"no published sha256 for {name!r}: pass --allow-unverified to download it unchecked")
    download(e.url, target, e.sha256, e.sha256_prefix, progress_factory)
    return target


# --- generators ----------------------------------------------------------------------------------------------

def save_generator(generator, file: Path, how: dict | None = None) -> None:
    """Generator -> safetensors (state dict + latent_avg; config and provenance in the metadata), atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().float().contiguous().cpu() for k, v in generator.state_dict().items()}
    tensors["latent_avg"] = generator.latent_avg.detach().float().contiguous().cpu()
    # ONE metadata entry: safetensors writes its metadata map in hash order, so two keys would make the
    # file's bytes (and so its sha256, the generator digest) vary from run to run
    metadata = {"stv": json.dumps({"config": generator.config.to_json(), "how": how or {}}, sort_keys=True)}
    file = Path(file)
    tmp = file.with_name(file.name + ".part")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, file)


def load_generator_file(file: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """safetensors written by save_generator -> Generator (eval mode, on device)."""
    from safetensors import safe_open

    from codec.models.stylegan2 import Generator, GeneratorConfig, load_rosinality_state_dict

    with safe_open(str(file), framework="pt") as f:
        meta = f.metadata() or {}
        if "stv" not in meta:
            raise ModelError(f"{file}: not an stv generator file (no 'stv' metadata)")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    g = Generator(GeneratorConfig.from_json(json.loads(meta["stv"])["config"]))
    load_rosinality_state_dict(g, {k: v for k, v in tensors.items() if k != "latent_avg"}, tensors.get("latent_avg"))
    return g.to(device=device, dtype=dtype).eval()


def load_generator(name: str = "tiny", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """Generator `name` ('tiny', 'stylegan2-ffhq-config-f'), checked against the manifest when it has a digest."""
    file = path(name)
    verify(name, file)
    return load_generator_file(file, device, dtype)


def generator_digest(name: str = "tiny") -> str:
    """sha256 of the generator's weights file: what a .stv header stores to name the generator."""
    return verify(name, path(name))


# --- converting official checkpoints ---------------------------------------------------------------------------

def generator_from_e4e(checkpoint: Path):
    """The StyleGAN2 decoder inside e4e's checkpoint (torch.load weights_only=True) -> Generator."""
    from codec.models.stylegan2 import Generator, config_from_rosinality, load_rosinality_state_dict

    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{checkpoint}: not loadable with weights_only=True: {exc}") from exc
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(k.startswith("decoder.") for k in state):
        raise ModelError(f"{checkpoint}: no 'decoder.' weights (not an e4e/pSp checkpoint)")
    decoder = {k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")}
    g = Generator(config_from_rosinality(decoder))
    return load_rosinality_state_dict(g, decoder, ckpt.get("latent_avg"))


def generator_from_nvidia_pickle(pickle_file: Path):
    """NVIDIA stylegan2-ada-pytorch pickle (read with the restricted unpickler) -> Generator."""
    import logging

    from codec.models.nvidia_pickle import nvidia_generator, nvidia_to_rosinality
    from codec.models.stylegan2 import Generator, GeneratorConfig, load_rosinality_state_dict

    tensors, facts = nvidia_generator(pickle_file)
    if facts.get("architecture") not in (None, "skip"):
        raise ModelError(f"{pickle_file}: synthesis architecture {facts['architecture']!r}; only 'skip' (config-f)")
    if facts.get("conv_clamp") is not None:
        logging.getLogger(__name__).warning("%s: conv_clamp=%s is not reproduced (outputs may differ slightly)",
                                            pickle_file, facts["conv_clamp"])
    state, config, latent_avg = nvidia_to_rosinality(tensors)
    lr = facts.get("lr_multiplier")
    g = Generator(GeneratorConfig(**config, lr_mlp=float(lr) if isinstance(lr, (int, float)) else 0.01))
    # the FIR kernels are constants of the architecture, not weights: take them from the fresh generator
    state.update({k: v for k, v in g.state_dict().items() if k.endswith(".kernel")})
    return load_rosinality_state_dict(g, state, latent_avg)


# --- pose editors ----------------------------------------------------------------------------------------------

# The editor a stream uses when its header names none: the linear directions shipped for that generator.
DEFAULT_POSE_EDITOR = {"tiny": "tiny-pose"}
# Generators whose default editor is StyleFlow (the paper's): its condition comes from the stream's `pose`
# extension, or from the encoder (codec.encoder.styleflow_condition) before it writes one.
DEFAULT_STYLEFLOW_EDITOR = {"stylegan2-ffhq-config-f": "styleflow"}


def load_pose_editor(spec: dict | None, generator_name: str):
    """The pose editor of a stream: `spec` is the JSON of its b"pose" header extension (format_spec.md), e.g.
    {"editor": "linear", "model": "tiny-pose"} or {"editor": "styleflow", "model": "styleflow",
    "condition": [17 floats]}; None -> the generator's default editor."""
    if spec is None and generator_name in DEFAULT_STYLEFLOW_EDITOR:
        from codec.models.styleflow import StyleFlowPoseEditor, load_styleflow

        name = DEFAULT_STYLEFLOW_EDITOR[generator_name]
        if not location(name).is_file():
            raise ModelError(
                f"no pose editor for generator {generator_name!r}: StyleFlow (its default) is not installed; get it "
                f"with `stv-weights fetch {name}`, or use a linear editor (`stvenc --pose-editor linear[:NAME]`, "
                f"directions from tools/fit_pose_directions.py or a published direction file)")
        file = path(name)
        verify(name, file)
        return StyleFlowPoseEditor(load_styleflow(file))  # condition: none yet (the encoder estimates it)
    if spec is None:
        if generator_name not in DEFAULT_POSE_EDITOR:
            raise ModelError(f"no default pose editor for generator {generator_name!r}; the stream must name one")
        spec = {"editor": "linear", "model": DEFAULT_POSE_EDITOR[generator_name]}
    kind, model = spec.get("editor"), spec.get("model")
    if kind == "linear":
        from safetensors.torch import load_file

        from codec.models.pose import LinearPoseEditor

        file = path(model)
        verify(model, file)
        return LinearPoseEditor(load_file(str(file))["directions"])
    if kind == "styleflow":
        from codec.models.styleflow import StyleFlowPoseEditor, load_styleflow

        condition = spec.get("condition")
        if not isinstance(condition, list) or len(condition) != 17:
            raise ModelError("a StyleFlow pose editor needs the ID latent's 17-value condition")
        file = path(model or "styleflow")
        verify(model or "styleflow", file)
        return StyleFlowPoseEditor(load_styleflow(file), condition=torch.tensor(condition, dtype=torch.float32))
    raise ModelError(f"unknown pose editor {kind!r} (known: linear, styleflow)")


# --- inverters -------------------------------------------------------------------------------------------------

# The feed-forward inverter for each generator: the tiny model's own encoder, and e4e for config-f (the
# generator itself comes out of the same e4e checkpoint).
DEFAULT_INVERTER = {"tiny": "tiny-e4e", "stylegan2-ffhq-config-f": "e4e_ffhq_encode"}


def load_inverter(generator_name: str, device: str | torch.device = "cpu"):
    """frames [B,3,R,R] in [-1,1] at the generator's resolution -> W+ [B, n_latent, dim], via the generator's
    e4e-layout encoder (frames resized to the encoder's input size, 256 for the release)."""
    import torch.nn.functional as F

    from codec.models.e4e import load_e4e_checkpoint

    if generator_name not in DEFAULT_INVERTER:
        raise ModelError(f"no encoder known for generator {generator_name!r}; use the projector (--inverter project)")
    name = DEFAULT_INVERTER[generator_name]
    file = path(name)
    verify(name, file)
    encoder = load_e4e_checkpoint(file).encoder.to(device)
    size = encoder.config.input_size

    def encode(frames: torch.Tensor) -> torch.Tensor:
        if frames.shape[-1] != size:
            frames = F.interpolate(frames, size=(size, size), mode="area" if frames.shape[-1] > size else "bilinear")
        return encoder(frames)

    return encode
