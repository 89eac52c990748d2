"""Read NVIDIA stylegan2-ada-pytorch `.pkl` generators WITHOUT running their code, and map them to rosinality.

NVIDIA pickles hold `torch_utils.persistence` objects: each network is pickled as
`_reconstruct_persistent_obj(meta)` with meta = {type, version, module_src (Python source!), class_name,
state (the module's __dict__)}. Unpickling them normally would `exec` module_src. Here a restricted unpickler
maps every global to an inert stand-in except a short allow-list of data constructors:

    torch_utils.persistence._reconstruct_persistent_obj -> Persistent(class_name, state)  (module_src is ignored)
    torch._utils._rebuild_tensor_v2 / _rebuild_parameter(_with_state) -> plain tensors
    torch.storage._load_from_bytes -> torch.load(..., weights_only=True) of the storage bytes
    collections.OrderedDict, dnnlib.util.EasyDict -> dicts;  _codecs.encode (latin1 only) -> bytes

Everything else (numpy scalars, torch dtypes, unknown classes, `os.system`, ...) becomes an `Opaque` object that
records its arguments and is never called. The tensors are then read from the `_parameters`/`_buffers` of the
`G_ema` state tree.
"""

from __future__ import annotations

import io
import math
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from codec.errors import ModelError


class Persistent:
    """A persistence-decorated network: its class name and pickled __dict__ (no code)."""

    def __init__(self, meta: Any):
        meta = meta if isinstance(meta, dict) else {}
        self.class_name = str(meta.get("class_name", "?"))
        state = meta.get("state")
        self.state: dict = state if isinstance(state, dict) else {}


class Opaque:
    """Inert stand-in for any global not on the allow-list: stores what pickle gives it, does nothing."""

    qualified_name = "?"

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs, self.items, self.state = args, kwargs, {}, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.items[len(self.items)] = value

    def extend(self, values: Any) -> None:
        for v in values:
            self.append(v)


def _opaque_class(module: str, name: str) -> type:
    return type(f"Opaque<{module}.{name}>", (Opaque,), {"qualified_name": f"{module}.{name}"})


def _rebuild_parameter(data: torch.Tensor, *_: Any) -> torch.Tensor:
    return data


def _load_storage(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise ModelError(f"pickle asks to encode with {encoding!r}; only latin1 is expected")
    return text.encode("latin1")


class _EasyDict(dict):
    pass


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): Persistent,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): OrderedDict,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("_codecs", "encode"): _latin1_encode,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _ALLOWED.get((module, name)) or _opaque_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise ModelError("unexpected persistent id in pickle (not a stylegan2-ada-pytorch network pickle)")


def read_pickle(file: Path) -> Any:
    with open(file, "rb") as f:
        try:
            return RestrictedUnpickler(f).load()
        except ModelError:
            raise
        except Exception as exc:  # truncated / foreign files
            reason = str(exc) or "damaged or not a pickle"
            raise ModelError(f"{file}: cannot read as a network pickle ({reason})") from exc


def module_tensors(node: Persistent, prefix: str = "") -> dict[str, torch.Tensor]:
    """state_dict-like flat dict of a Persistent module tree (parameters and persistent buffers)."""
    out: dict[str, torch.Tensor] = {}
    state = node.state
    skip = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, t in (state.get(group) or {}).items():
            if isinstance(t, torch.Tensor) and name not in skip:
                out[prefix + name] = t
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, Persistent):
            out.update(module_tensors(child, f"{prefix}{name}."))
    return out


def _attribute(node: Any, path: str) -> Any:
    """A plain attribute of a sub-network, e.g. 'synthesis.b8.conv0.conv_clamp' (None if absent)."""
    *modules, name = path.split(".")
    for part in modules:
        node = (node.state.get("_modules") or {}).get(part) if isinstance(node, Persistent) else None
    return node.state.get(name) if isinstance(node, Persistent) else None


def nvidia_generator(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors of G_ema, facts) from an NVIDIA pickle; facts holds conv_clamp / architecture as found."""
    data = read_pickle(file)
    g = data.get("G_ema") if isinstance(data, dict) else None
    if not isinstance(g, Persistent):
        raise ModelError(f"{file}: no G_ema network in this pickle")
    facts = {"class": g.class_name, "architecture": _attribute(g, "synthesis.b8.architecture"),
             "conv_clamp": _attribute(g, "synthesis.b8.conv0.conv_clamp"),
             "lr_multiplier": _attribute(g, "mapping.fc0.bias_gain")}  # bias_gain == lr_multiplier
    return module_tensors(g), facts


def nvidia_to_rosinality(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any], torch.Tensor]:
    """NVIDIA G_ema tensors -> (rosinality state dict WITHOUT the blur kernels, config kwargs, latent_avg).

    Both implementations apply weights the same way (weight / lr stored, gain at run time; the up-sampling conv
    is conv_transpose2d with the stored weight, no flip), so the mapping is renaming and reshaping."""
    out: dict[str, torch.Tensor] = {}
    n_mlp = 0
    while f"mapping.fc{n_mlp}.weight" in sd:
        out[f"style.{n_mlp + 1}.weight"] = sd[f"mapping.fc{n_mlp}.weight"]
        out[f"style.{n_mlp + 1}.bias"] = sd[f"mapping.fc{n_mlp}.bias"]
        n_mlp += 1
    if n_mlp == 0 or "synthesis.b4.const" not in sd:
        raise ModelError("not a StyleGAN2 generator: no mapping.fc0 or synthesis.b4.const")
    resolutions = sorted(int(k.split(".")[1][1:]) for k in sd if k.startswith("synthesis.b") and k.endswith(".torgb.weight"))
    channels = {4: sd["synthesis.b4.const"].shape[0]}
    out["input.input"] = sd["synthesis.b4.const"][None]

    def layer(src: str, dst: str, noise_index: int) -> None:
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.noise.weight"] = sd[f"{src}.noise_strength"].reshape(1)
        out[f"{dst}.activate.bias"] = sd[f"{src}.bias"]
        out[f"noises.noise_{noise_index}"] = sd[f"{src}.noise_const"][None, None]

    def torgb(src: str, dst: str) -> None:
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.bias"] = sd[f"{src}.bias"].view(1, -1, 1, 1)

    layer("synthesis.b4.conv1", "conv1", 0)
    torgb("synthesis.b4.torgb", "to_rgb1")
    for j, r in enumerate(resolutions[1:]):
        layer(f"synthesis.b{r}.conv0", f"convs.{2 * j}", 1 + 2 * j)
        layer(f"synthesis.b{r}.conv1", f"convs.{2 * j + 1}", 2 + 2 * j)
        torgb(f"synthesis.b{r}.torgb", f"to_rgbs.{j}")
        channels[r] = sd[f"synthesis.b{r}.conv1.weight"].shape[0]
    style_dim = sd["mapping.fc0.weight"].shape[1]
    config = dict(size=resolutions[-1], style_dim=style_dim, n_mlp=n_mlp, channels=channels)
    if int(math.log2(config["size"])) + 1 - 2 != len(resolutions):
        raise ModelError(f"unexpected block resolutions {resolutions}")
    latent_avg = sd.get("mapping.w_avg", torch.zeros(style_dim))
    return out, config, latent_avg
