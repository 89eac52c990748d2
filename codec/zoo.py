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

from codec.digests import CHUNK, file_digests, git_blob_of, sha256_of  # noqa: F401  (zoo.sha256_of etc. stay)
from codec.errors import ModelError
from codec.ops.extension import stv_home
from codec.resources import data_dir

WEIGHTS_DIR = data_dir("weights")
MANIFEST = WEIGHTS_DIR / "manifest.json"


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
    git_blob: str | None = None  # git's blob id (sha1 of b"blob <size>\0" + bytes): the check when no sha256 is known
    used_by: tuple[str, ...] = ()  # "command: role" lines for `stv-weights list`
    measured: bool | None = None  # channel tables: False = taken from an unofficial list, not measured on real weights
    derived_from: tuple[str, ...] = ()  # files made locally: the models `stv-weights convert` makes them from

    @property
    def checkable(self) -> bool:
        """Whether the manifest holds a published digest to check this file against."""
        return bool(self.sha256 or self.git_blob or self.sha256_prefix)


def manifest(path: Path | None = None) -> dict[str, ModelEntry]:
    """The models stv knows, from `path`, else $STV_MANIFEST when set, else the shipped weights/manifest.json.
    A manifest without some digests (STV_MANIFEST) is how a test installs random-weight stand-ins of official
    files: `--allow-unverified` never overrides a digest the manifest publishes."""
    data = json.loads(Path(path or os.environ.get("STV_MANIFEST") or MANIFEST).read_text())
    out = {}
    for name, e in data["models"].items():
        out[name] = ModelEntry(name=name, file=e["file"], role=e["role"], url=e.get("url"), sha256=e.get("sha256"),
                               size=e.get("size"), licence=e.get("licence", ""), shipped=e.get("shipped", False),
                               direct=e.get("direct", True), sha256_prefix=e.get("sha256_prefix"),
                               pip=e.get("pip"), note=e.get("note", ""), git_blob=e.get("git_blob"),
                               used_by=tuple(e.get("used_by", ())), measured=e.get("measured"),
                               derived_from=tuple(e.get("derived_from", ())))
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


def check_digests(e: ModelEntry, file: Path, sha256: str, git_blob: str | None) -> None:
    """ModelError unless the digests of `file` match what the manifest publishes for entry `e`."""
    if e.sha256 and sha256 != e.sha256:
        raise ModelError(f"{file}: sha256 {sha256} does not match the manifest's {e.sha256} for {e.name!r}")
    if e.sha256_prefix and not sha256.startswith(e.sha256_prefix):
        raise ModelError(f"{file}: sha256 {sha256} does not start with {e.sha256_prefix} as {e.name!r} requires")
    if e.git_blob and not e.sha256 and git_blob != e.git_blob:  # None (not computed) fails too
        raise ModelError(f"{file}: git blob id {git_blob} does not match the manifest's {e.git_blob} for {e.name!r}")


def check_size(e: ModelEntry, file: Path) -> None:
    size = Path(file).stat().st_size
    if e.size is not None and size != e.size:
        raise ModelError(f"{file}: {size} bytes, but {e.name!r} is {e.size} bytes "
                         f"({'truncated or incomplete' if size < e.size else 'a different file'})")


def verify(name: str, file: Path) -> str:
    """sha256 of `file`, checked against the manifest: its size, then the full sha256, else the torchvision-style
    prefix, else the git blob id."""
    e = entry(name)
    check_size(e, file)
    sha256, blob = file_digests(file, git_blob=bool(e.git_blob and not e.sha256))
    check_digests(e, file, sha256, blob)
    return sha256


# --- fetching ------------------------------------------------------------------------------------------------

def download(url: str, dest: Path, expected_sha256: str | None, expected_prefix: str | None = None,
             progress_factory: Callable[[int | None, int], Any] | None = None, timeout: float = 60.0,
             expected_git_blob: str | None = None) -> str:
    """Download `url` to `dest` atomically: bytes go to `dest.part` (resumed with an HTTP Range request when a
    partial file exists), are hashed, and the part is renamed onto `dest` only if the sha256 (or the sha256
    prefix, or the git blob id) matches.
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
    digest, blob = file_digests(part, git_blob=bool(expected_git_blob))
    bad = (expected_sha256 and digest != expected_sha256) or (expected_prefix and not digest.startswith(expected_prefix))
    if bad:
        part.unlink()
        raise ModelError(f"{url}: sha256 {digest} does not match the expected "
                         f"{expected_sha256 or expected_prefix + '...'}; the download was deleted")
    if expected_git_blob and blob != expected_git_blob:
        part.unlink()
        raise ModelError(f"{url}: git blob id {blob} does not match the expected {expected_git_blob}; "
                         "the download was deleted")
    os.replace(part, dest)
    return digest


class ManualDownload(ModelError):
    """Model `name` must be downloaded by hand from `url`, then registered with `command`."""

    def __init__(self, name: str, url: str):
        self.name, self.url = name, url
        self.command = f"stv-weights install PATH/TO/{entry(name).file} {name}"
        super().__init__(f"{name!r} is published on a web page a script cannot download reliably: get it from "
                         f"{url}, then run `{self.command}`")


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
        raise ModelError(f"{name!r} is made locally: run `stv-weights convert FILE` on the file of one of: "
                         f"{', '.join(e.derived_from) or '(none listed)'}")
    if target.exists():
        _remember(name, target, verify(name, target))
        return target
    if not e.direct:
        raise ManualDownload(name, e.url)
    if not e.checkable and not allow_unverified:
        raise ModelError(f"no published sha256 for {name!r}: pass --allow-unverified to download it unchecked")
    digest = download(e.url, target, e.sha256, e.sha256_prefix, progress_factory,
                      expected_git_blob=None if e.sha256 else e.git_blob)
    _remember(name, target, digest)
    return target


# --- installing files the user already has ---------------------------------------------------------------------

RECORDS = "installed.json"  # in cache_dir(): the digests of what install/fetch placed there, keyed by model name


def _records() -> dict:
    try:
        data = json.loads((cache_dir() / RECORDS).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(name: str, file: Path, sha256: str, source: Path | None = None) -> None:
    """Note the digests of an installed file, with its size, mtime and inode so a later change shows."""
    e = entry(name)
    st = Path(file).stat()
    records = _records()
    records[name] = {"sha256": sha256, "git_blob": git_blob_of(file) if e.git_blob else None, "size": st.st_size,
                     "mtime_ns": st.st_mtime_ns, "inode": st.st_ino, "source": str(source) if source else None}
    tmp = cache_dir() / f".{RECORDS}.{os.getpid()}"
    tmp.write_text(json.dumps(records, indent=1, sort_keys=True))
    os.replace(tmp, cache_dir() / RECORDS)


def probe_loadable(file: Path) -> None:
    """ModelError unless `file` loads without running code: .pt/.pth with torch.load(weights_only=True), .pkl
    with the restricted unpickler (it must hold a G_ema network), .npy with numpy.load(allow_pickle=False),
    .safetensors by reading its header."""
    file = Path(file)
    suffix = file.suffix.lower()
    if suffix in (".pt", ".pth"):
        import zipfile

        try:
            torch.load(file, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(file))
        except Exception as exc:  # noqa: BLE001 - any failure means: not a plain weights file
            text = str(exc) or type(exc).__name__
            if text.startswith("Weights only load failed"):  # the pickle names something beyond tensors
                detail = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln or "global" in ln), "")
                raise ModelError(f"{file}: refused: a pickle that would run code or build objects beyond tensors "
                                 f"(torch.load weights_only=True: {detail[:160] or 'refused'})") from None
            raise ModelError(f"{file}: refused: damaged or not a torch file ({text.split('. ')[0][:160]})") from None
    elif suffix == ".pkl":
        from codec.models.nvidia_pickle import nvidia_generator

        nvidia_generator(file)
    elif suffix == ".npy":  # a direction file: numpy refuses object arrays (pickles) with allow_pickle=False
        import numpy as np

        try:
            np.load(file, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{file}: refused: not a plain numpy array ({str(exc).split('. ')[0][:160]})") from None
    elif suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(file), framework="pt") as f:
                f.metadata()
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{file}: refused: not a readable safetensors file ({exc})") from None


def _place(source: Path, dest: Path, sha256: str) -> str:
    """Put `source` at `dest` atomically: a hard link when both are on one filesystem, else a copy whose
    sha256 is checked again; either goes to a temporary name first and is renamed onto `dest`."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.install")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, tmp)
            how = "linked"
        except OSError:
            h = hashlib.sha256()
            with open(source, "rb") as fi, open(tmp, "wb") as fo:
                while block := fi.read(CHUNK):
                    h.update(block)
                    fo.write(block)
                fo.flush()
                os.fsync(fo.fileno())
            if h.hexdigest() != sha256:
                raise ModelError(f"{source} changed while it was being copied; nothing installed")
            how = "copied"
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return how


def check_kind(e: ModelEntry) -> str:
    return "sha256" if e.sha256 else ("git blob" if e.git_blob else ("sha256 prefix" if e.sha256_prefix else ""))


def install(name: str, source: Path, allow_unverified: bool = False) -> tuple[Path, str]:
    """Register a file the user already has as model `name`: check its size and digest against the manifest
    (or nothing, with allow_unverified, where none is published), check that it loads without running code,
    then link or copy it into the cache atomically. Nothing in the cache changes unless every check passes.
    Returns (installed path, what was done: 'linked'/'copied' + how it was checked)."""
    e = entry(name)
    if e.shipped:
        raise ModelError(f"{name!r} ships with stv ({location(name)}); nothing to install")
    if e.pip:
        raise ModelError(f"{name!r} comes with the pip package {e.pip!r}; nothing to install")
    source = Path(source)
    if not source.exists():
        raise ModelError(f"{source}: no such file")
    if not source.is_file():
        raise ModelError(f"{source}: not a regular file; give the downloaded file itself")
    if source.suffix.lower() != Path(e.file).suffix.lower():
        hint = "; convert a generator checkpoint with `stv-weights convert`" if e.derived_from else ""
        raise ModelError(f"{source}: {name!r} is a {Path(e.file).suffix} file ({e.file}), this is not{hint}")
    if not e.checkable and not allow_unverified:
        raise ModelError(f"no published digest for {name!r}: pass --allow-unverified to install {source} unchecked")
    check_size(e, source)
    sha256, blob = file_digests(source, git_blob=bool(e.git_blob and not e.sha256))
    check_digests(e, source, sha256, blob)
    probe_loadable(source)
    dest = location(name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    how = "already there" if dest.is_file() and os.path.samefile(dest, source) else _place(source, dest, sha256)
    _remember(name, dest, sha256, source)
    return dest, f"{how}; {('verified by ' + check_kind(e)) if e.checkable else 'UNVERIFIED: no published digest'}"


def status(name: str) -> tuple[str, str]:
    """(where it stands, whether it is verified) of model `name`, for `stv-weights list`. Files install/fetch
    recorded are not hashed again unless their size, mtime or inode changed."""
    e = entry(name)
    where = location(name)
    if e.pip:
        return "pip", "-"
    if not where.is_file():
        if e.derived_from:
            return "missing", "make it with `stv-weights convert`"
        return "missing", f"`stv-weights fetch {name}`" + ("" if e.direct else " says where to get it by hand")
    state = "shipped" if e.shipped else "installed"
    if e.measured is not None:
        return state, ("measured on its generator's weights" if e.measured else
                       "UNVERIFIED content (not measured on real weights)")
    if not e.checkable:
        return state, "unverified (no published digest)"
    st = where.stat()
    rec = None if e.shipped else _records().get(name)
    fresh = isinstance(rec, dict) and (rec.get("size"), rec.get("mtime_ns"), rec.get("inode")) == (
        st.st_size, st.st_mtime_ns, st.st_ino)
    need_blob = bool(e.git_blob and not e.sha256)
    if fresh and (rec.get("git_blob") or not need_blob):
        sha256, blob = rec.get("sha256", ""), rec.get("git_blob")
    else:
        sha256, blob = file_digests(where, git_blob=need_blob)
    try:
        check_size(e, where)
        check_digests(e, where, sha256, blob)
    except ModelError:
        return state, "MISMATCH (not the published file)"
    return state, f"verified ({check_kind(e)})"


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

# What `stv-weights convert` writes as the file's provenance: the same for every source, so that the converted
# bytes (and so the generator digest) depend only on the weights, not on which official file they came from.
CONVERTED_HOW = {"made_by": "stv-weights convert"}


def generator_from_checkpoint(checkpoint: Path):
    """A rosinality-layout generator in a torch checkpoint (torch.load weights_only=True) -> (Generator, layout).

    Layouts: e4e/pSp {'state_dict': {'encoder.*', 'decoder.*'}, 'latent_avg': [18, 512], 'opts'} ('e4e'), and
    rosinality's own {'g_ema': state_dict, 'latent_avg': [512]} as convert_weight.py writes it, e.g. pSp/e4e's
    pretrained_models/stylegan2-ffhq-config-f.pt ('rosinality'; other keys such as 'g' or 'd' are ignored)."""
    from codec.models.stylegan2 import Generator, config_from_rosinality, load_rosinality_state_dict

    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{checkpoint}: not loadable with weights_only=True: {exc}") from exc
    if not isinstance(ckpt, dict):
        raise ModelError(f"{checkpoint}: not a generator checkpoint (a {type(ckpt).__name__}, not a dict)")
    if isinstance(ckpt.get("g_ema"), dict):
        state, layout = ckpt["g_ema"], "rosinality"
        if ckpt.get("latent_avg") is None:
            raise ModelError(f"{checkpoint}: rosinality checkpoint without 'latent_avg' (a training checkpoint?); "
                             "convert_weight.py's output, e4e's checkpoint or the NVIDIA pickle carry it")
    else:
        state = ckpt.get("state_dict", ckpt)
        if not isinstance(state, dict) or not any(k.startswith("decoder.") for k in state):
            raise ModelError(f"{checkpoint}: neither 'decoder.' weights (an e4e/pSp checkpoint) nor 'g_ema' "
                             "(a rosinality checkpoint)")
        state, layout = {k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")}, "e4e"
    g = Generator(config_from_rosinality(state))
    return load_rosinality_state_dict(g, state, ckpt.get("latent_avg")), layout


def generator_from_e4e(checkpoint: Path):
    """The StyleGAN2 decoder inside e4e's checkpoint (or a rosinality checkpoint) -> Generator."""
    return generator_from_checkpoint(checkpoint)[0]


def convert_generator(source: Path, output: Path, kind: str = "auto") -> tuple[Any, str]:
    """Official generator file -> stv safetensors at `output` (atomically). kind: 'auto' (by suffix and
    content), 'nvidia' (.pkl), or 'e4e'/'rosinality' (torch checkpoints, told apart by their keys).
    Returns (Generator, the layout found)."""
    if kind == "auto":
        kind = "nvidia" if Path(source).suffix == ".pkl" else "checkpoint"
    if kind == "nvidia":
        g, layout = generator_from_nvidia_pickle(source), "nvidia"
    else:
        g, layout = generator_from_checkpoint(source)
    save_generator(g, output, CONVERTED_HOW)
    return g, layout


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
# "tiny-64" is the label format_spec.md uses for the shipped tiny generator (§3 "pose": its default editor)
DEFAULT_POSE_EDITOR = {"tiny": "tiny-pose", "tiny-64": "tiny-pose"}
# Generators whose default editor is StyleFlow (the paper's): its condition comes from the stream's `pose`
# extension, or from the encoder (codec.encoder.styleflow_condition) before it writes one.
DEFAULT_STYLEFLOW_EDITOR = {"stylegan2-ffhq-config-f": "styleflow"}
# `stvenc --pose-editor linear` without a name: each generator's default linear directions.
DEFAULT_LINEAR_EDITOR = {"tiny": "tiny-pose", "stylegan2-ffhq-config-f": "ffhq-pose-interfacegan"}
# Linear editors made of two published direction files (manifest names: yaw, pitch), for config-f's W+ [18, 512].
# Units are the files' own, not degrees: one unit of yaw adds e4e's InterFaceGAN pose normal (norm 1 in W, the
# same on all 18 rows) once; one unit of pitch adds a312863063's angle_pitch direction (norm 0.364 per row, the
# same on all rows) once. How many degrees a unit turns a config-f face is not measured here (no real weights):
# tools/fit_pose_directions.py --estimator landmarks on the real generator gives directions in degrees.
LINEAR_DIRECTION_PAIRS = {"ffhq-pose-interfacegan": ("interfacegan-yaw", "ffhq-angle-pitch")}
PAIR_LAYOUT = {"ffhq-pose-interfacegan": (18, 512)}


def linear_editor_names() -> list[str]:
    """Names `--pose-editor linear:NAME` accepts: manifest pose editors stored as safetensors directions, and
    the published direction pairs."""
    return sorted([n for n, e in manifest().items() if e.role == "pose editor" and e.file.endswith(".safetensors")]
                  + list(LINEAR_DIRECTION_PAIRS))


def pose_editor_spec(choice: str | None, generator_name: str) -> dict | None:
    """`stvenc --pose-editor` (None, 'styleflow', 'linear' or 'linear:NAME') -> the stream's pose spec, checked by
    name only (no file is read): {"editor": "linear", "model": NAME}; {"editor": "styleflow", "model": ...}
    without its condition (the encoder estimates it); None for the generator's default. ModelError for a name
    that is not a pose editor."""
    if choice is None:
        return None
    kind, sep, name = choice.partition(":")
    if kind == "styleflow" and not sep:
        return {"editor": "styleflow", "model": DEFAULT_STYLEFLOW_EDITOR.get(generator_name, "styleflow")}
    if kind != "linear" or (sep and not name):
        raise ModelError(f"unknown pose editor {choice!r}: use styleflow, linear or linear:NAME")
    if not sep:
        if generator_name not in DEFAULT_LINEAR_EDITOR:
            raise ModelError(f"no default linear pose editor for generator {generator_name!r}; name one "
                             f"(linear:NAME, NAME one of {', '.join(linear_editor_names())})")
        name = DEFAULT_LINEAR_EDITOR[generator_name]
    if name not in linear_editor_names():
        raise ModelError(f"unknown linear pose editor {name!r}; known: {', '.join(linear_editor_names())}")
    return {"editor": "linear", "model": name}


def _unconditioned_styleflow(name: str, generator_name: str):
    from codec.models.styleflow import StyleFlowPoseEditor, load_styleflow

    if not location(name).is_file():
        raise ModelError(
            f"no pose editor for generator {generator_name!r}: StyleFlow (its default) is not installed; get it "
            f"with `stv-weights fetch {name}`, or use a linear editor (`stvenc --pose-editor linear[:NAME]`, "
            f"directions from tools/fit_pose_directions.py or a published direction file)")
    file = path(name)
    verify(name, file)
    return StyleFlowPoseEditor(load_styleflow(file))  # condition: none yet (the encoder estimates it)


def encoder_pose_editor(choice: str | None, generator_name: str):
    """(pose spec, editor) for the encoder: `choice` as pose_editor_spec takes it. The spec is None where the
    editor is StyleFlow without its condition: the encoder writes the spec once it has estimated one."""
    spec = pose_editor_spec(choice, generator_name)
    if spec is None:
        if generator_name in DEFAULT_STYLEFLOW_EDITOR:
            return None, load_pose_editor(None, generator_name)
        if generator_name not in DEFAULT_POSE_EDITOR:
            raise ModelError(f"no default pose editor for generator {generator_name!r}; the stream must name one")
        spec = {"editor": "linear", "model": DEFAULT_POSE_EDITOR[generator_name]}
    if spec["editor"] == "styleflow":
        return None, _unconditioned_styleflow(spec["model"], generator_name)
    return spec, load_pose_editor(spec, generator_name)


def load_linear_directions(name: str) -> torch.Tensor:
    """[2, n_latent, style_dim] yaw/pitch directions of linear editor `name`: a safetensors file of the
    manifest, or a published pair of direction files (LINEAR_DIRECTION_PAIRS), each checked by its digest."""
    if name in LINEAR_DIRECTION_PAIRS:
        from codec.models.pose import load_direction_file

        files = []
        for part in LINEAR_DIRECTION_PAIRS[name]:
            if not location(part).is_file():
                raise ModelError(f"linear pose editor {name!r} needs {part!r} ({entry(part).file}); get it with "
                                 f"`stv-weights fetch {part}`")
            files.append(path(part))
            verify(part, files[-1])
        try:
            return torch.stack([load_direction_file(f, *PAIR_LAYOUT[name]) for f in files])
        except (ValueError, RuntimeError) as exc:
            raise ModelError(str(exc)) from None
    from safetensors.torch import load_file

    file = path(name)
    verify(name, file)
    return load_file(str(file))["directions"]


def load_pose_editor(spec: dict | None, generator_name: str):
    """The pose editor of a stream: `spec` is the JSON of its b"pose" header extension (format_spec.md), e.g.
    {"editor": "linear", "model": "tiny-pose"}, {"editor": "linear", "model": "ffhq-pose-interfacegan"} or
    {"editor": "styleflow", "model": "styleflow", "condition": [17 floats]}; None -> the generator's default
    editor."""
    if spec is None and generator_name in DEFAULT_STYLEFLOW_EDITOR:
        return _unconditioned_styleflow(DEFAULT_STYLEFLOW_EDITOR[generator_name], generator_name)
    if spec is None:
        if generator_name not in DEFAULT_POSE_EDITOR:
            raise ModelError(f"no default pose editor for generator {generator_name!r}; the stream must name one")
        spec = {"editor": "linear", "model": DEFAULT_POSE_EDITOR[generator_name]}
    kind, model = spec.get("editor"), spec.get("model")
    if kind == "linear":
        from codec.models.pose import LinearPoseEditor

        return LinearPoseEditor(load_linear_directions(model))
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


# --- the compact ID latent's bases (format 1.3, `idpc`) ---------------------------------------------------------

LATENT_BASES = {"tiny": "tiny-latent-basis"}  # generator -> its shipped PCA basis of W (tools/make_latent_basis.py)


def latent_basis_name(generator_name: str) -> str | None:
    """The basis the compact ID latent of this generator is coded in, or None (no basis made: --latent exact)."""
    return LATENT_BASES.get(generator_name)


def load_latent_basis(name: str):
    """(LatentBasis, its sha256 as 32 bytes), the file checked against the manifest."""
    from codec.bitstream.latent import read_basis

    file = path(name)
    return read_basis(file), bytes.fromhex(verify(name, file))


def latent_basis_with_digest(sha256: bytes):
    """The basis a stream's `idpc` names, by digest; ModelError when this install has none with it."""
    for name, e in manifest().items():
        if e.role == "latent basis" and e.sha256 == sha256.hex():
            return load_latent_basis(name)[0]
    raise ModelError(f"the stream's compact ID latent needs the latent basis with sha256 {sha256.hex()}, which this "
                     "install does not have (`stv-weights list` shows the bases it knows)")
