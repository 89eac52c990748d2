"""Loading official layouts: rosinality/e4e config-f keys, and NVIDIA pickles through the restricted unpickler."""

from __future__ import annotations

import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from codec import zoo
from codec.errors import ModelError
from codec.models.nvidia_pickle import read_pickle
from codec.models.stylegan2 import Generator, GeneratorConfig, load_rosinality_state_dict


def rosinality_config_f_1024_keys() -> dict[str, tuple[int, ...]]:
    """Every state-dict key and shape of rosinality's Generator(1024, 512, 8, channel_multiplier=2), written out
    from the public model.py (rosinality/stylegan2-pytorch), NOT from our module, so a naming slip fails here.

    EqualLinear: weight [out, in], bias [out]. ModulatedConv2d: weight [1, out, in, k, k], modulation (EqualLinear
    style_dim -> in). StyledConv: conv, noise.weight [1], activate.bias [out]. ToRGB: conv (k=1, out=3), bias
    [1, 3, 1, 1], upsample.kernel [4, 4] when up-sampling. Blur/Upsample kernels are registered buffers (persistent).
    noises.noise_i: [1, 1, 2^((i+5)//2), same] for i in 0..16."""
    ch = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}
    keys: dict[str, tuple[int, ...]] = {}
    for i in range(1, 9):
        keys[f"style.{i}.weight"] = (512, 512)
        keys[f"style.{i}.bias"] = (512,)
    keys["input.input"] = (1, 512, 4, 4)

    def styled(prefix, cin, cout, up):
        keys[f"{prefix}.conv.weight"] = (1, cout, cin, 3, 3)
        keys[f"{prefix}.conv.modulation.weight"] = (cin, 512)
        keys[f"{prefix}.conv.modulation.bias"] = (cin,)
        if up:
            keys[f"{prefix}.conv.blur.kernel"] = (4, 4)
        keys[f"{prefix}.noise.weight"] = (1,)
        keys[f"{prefix}.activate.bias"] = (cout,)

    def rgb(prefix, cin, up):
        keys[f"{prefix}.conv.weight"] = (1, 3, cin, 1, 1)
        keys[f"{prefix}.conv.modulation.weight"] = (cin, 512)
        keys[f"{prefix}.conv.modulation.bias"] = (cin,)
        keys[f"{prefix}.bias"] = (1, 3, 1, 1)
        if up:
            keys[f"{prefix}.upsample.kernel"] = (4, 4)

    styled("conv1", 512, 512, False)
    rgb("to_rgb1", 512, False)
    cin = 512
    for j, r in enumerate([8, 16, 32, 64, 128, 256, 512, 1024]):
        styled(f"convs.{2 * j}", cin, ch[r], True)
        styled(f"convs.{2 * j + 1}", ch[r], ch[r], False)
        rgb(f"to_rgbs.{j}", ch[r], True)
        cin = ch[r]
    for i in range(17):
        side = 2 ** ((i + 5) // 2)
        keys[f"noises.noise_{i}"] = (1, 1, side, side)
    return keys


@pytest.fixture(scope="module")
def config_f():
    return Generator(GeneratorConfig(size=1024, style_dim=512, n_mlp=8, channel_multiplier=2))


def test_full_config_f_key_set_loads_strict(config_f):
    ref = rosinality_config_f_1024_keys()
    gen = torch.Generator().manual_seed(0)
    sd = {f"decoder.{k}": torch.randn(shape, generator=gen) for k, shape in ref.items()}
    sd["encoder.input_layer.0.weight"] = torch.zeros(1)  # e4e's other half: ignored by the decoder loader
    latent = torch.randn(512, generator=gen)
    load_rosinality_state_dict(config_f, sd, latent[None].repeat(18, 1))
    assert torch.equal(config_f.conv1.conv.weight, sd["decoder.conv1.conv.weight"])
    assert torch.equal(config_f.noises.noise_16, sd["decoder.noises.noise_16"])
    assert torch.equal(config_f.latent_avg, latent)
    assert config_f.n_latent == 18 and config_f.layout.total == 9088


def test_layout_errors_name_the_keys(config_f):
    ref = rosinality_config_f_1024_keys()
    sd = {k: torch.zeros(shape) for k, shape in ref.items()}
    del sd["to_rgbs.3.bias"]
    sd["convs.99.noise.weight"] = torch.zeros(1)
    sd["style.1.weight"] = torch.zeros(512, 256)
    with pytest.raises(ModelError) as err:
        load_rosinality_state_dict(config_f, sd)
    text = str(err.value)
    assert "to_rgbs.3.bias" in text and "convs.99.noise.weight" in text and "style.1.weight" in text


# --- NVIDIA pickles -------------------------------------------------------------------------------------------

def _nvidia_state_from(g: Generator) -> dict[str, dict[str, torch.Tensor]]:
    """Per-module tensors of a stylegan2-ada-pytorch Generator (networks.py names) holding g's weights:
    mapping.fc{i}.{weight,bias}, mapping.w_avg; synthesis.b{r}.{const | conv0,conv1: weight, bias, affine.*,
    noise_strength [], noise_const [r, r], resample_filter; torgb: weight [3,I,1,1], bias [3], affine.*}."""
    sd = g.state_dict()
    mods: dict[str, dict[str, torch.Tensor]] = {"mapping": {"w_avg": g.latent_avg.clone()}}
    for i in range(g.config.n_mlp):
        mods[f"mapping.fc{i}"] = {"weight": sd[f"style.{i + 1}.weight"], "bias": sd[f"style.{i + 1}.bias"]}
    filt = torch.tensor([1.0, 3, 3, 1]) / 8  # ada's setup_filter keeps the 1-D normalised taps

    def layer(dst, src, noise):
        mods[dst] = {"weight": sd[f"{src}.conv.weight"][0], "bias": sd[f"{src}.activate.bias"],
                     "noise_strength": sd[f"{src}.noise.weight"].reshape(()),
                     "noise_const": sd[f"noises.noise_{noise}"][0, 0], "resample_filter": filt}
        mods[dst + ".affine"] = {"weight": sd[f"{src}.conv.modulation.weight"],
                                 "bias": sd[f"{src}.conv.modulation.bias"]}

    def torgb(dst, src):
        mods[dst] = {"weight": sd[f"{src}.conv.weight"][0], "bias": sd[f"{src}.bias"].view(-1)}
        mods[dst + ".affine"] = {"weight": sd[f"{src}.conv.modulation.weight"],
                                 "bias": sd[f"{src}.conv.modulation.bias"]}

    mods["synthesis.b4"] = {"const": sd["input.input"][0], "resample_filter": filt}
    layer("synthesis.b4.conv1", "conv1", 0)
    torgb("synthesis.b4.torgb", "to_rgb1")
    for j, r in enumerate(g.config.resolutions[1:]):
        mods[f"synthesis.b{r}"] = {"resample_filter": filt}
        layer(f"synthesis.b{r}.conv0", f"convs.{2 * j}", 1 + 2 * j)
        layer(f"synthesis.b{r}.conv1", f"convs.{2 * j + 1}", 2 + 2 * j)
        torgb(f"synthesis.b{r}.torgb", f"to_rgbs.{j}")
    return mods


@pytest.fixture()
def fake_persistence(monkeypatch):
    """Modules named like NVIDIA's so pickle writes the same globals their pickles contain."""
    pkg = types.ModuleType("torch_utils")
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # never called by the reader under test
        raise AssertionError("the converter must not call the pickle's reconstruct function")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    pkg.persistence = persistence
    monkeypatch.setitem(sys.modules, "torch_utils", pkg)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", persistence)
    return persistence


class _Net:
    """Pickles exactly as persistence.Decorator.__reduce__ does: (_reconstruct_persistent_obj, (meta,))."""

    def __init__(self, reconstruct, class_name, state):
        self.reconstruct, self.class_name, self.state = reconstruct, class_name, state

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src="import os\nos.system('touch /tmp/stv_pwned')\n",
                    class_name=self.class_name, state=self.state)
        return (self.reconstruct, (meta,))


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/stv_pwned_reduce",))


def _nvidia_pickle(g: Generator, persistence, path: Path, architecture="skip") -> None:
    mods = _nvidia_state_from(g)
    tree: dict[str, dict] = {}

    def node(name):
        if name not in tree:
            tree[name] = {"_parameters": OrderedDict(), "_buffers": OrderedDict(), "_modules": OrderedDict(),
                          "_non_persistent_buffers_set": set(), "training": False}
        return tree[name]

    for name, tensors in mods.items():
        n = node(name)
        for k, v in tensors.items():
            group = "_buffers" if k in ("w_avg", "noise_const", "resample_filter") else "_parameters"
            n[group][k] = torch.nn.Parameter(v.clone(), requires_grad=False) if group == "_parameters" else v.clone()
    tree["synthesis"] = node("synthesis")
    for name in list(tree):  # every parent module must exist before linking
        if "." in name:
            node(name.rsplit(".", 1)[0])
    for name in sorted(tree, key=lambda s: -s.count(".")):
        if "." in name:
            parent, child = name.rsplit(".", 1)
            tree[parent]["_modules"][child] = _Net(persistence._reconstruct_persistent_obj, "X", tree[name])
        if name.startswith("synthesis.b") and name.count(".") == 1:
            tree[name]["architecture"] = architecture
        if name.endswith(".conv0") or name.endswith(".conv1"):
            tree[name]["conv_clamp"] = None
        if name.startswith("mapping.fc"):
            tree[name]["bias_gain"] = 0.01
    root = {"_parameters": OrderedDict(), "_buffers": OrderedDict(), "_non_persistent_buffers_set": set(),
            "_modules": OrderedDict(mapping=_Net(persistence._reconstruct_persistent_obj, "MappingNetwork",
                                                 tree["mapping"]),
                                    synthesis=_Net(persistence._reconstruct_persistent_obj, "SynthesisNetwork",
                                                   tree["synthesis"])),
            "z_dim": g.style_dim, "act_gain": 1.4142135623730951}
    data = {"G_ema": _Net(persistence._reconstruct_persistent_obj, "Generator", root), "D": _Evil(),
            "training_set_kwargs": {"resolution": g.size}}
    path.write_bytes(pickle.dumps(data, protocol=4))


def test_nvidia_pickle_converts_without_running_code(fake_persistence, tmp_path):
    for marker in ("/tmp/stv_pwned", "/tmp/stv_pwned_reduce"):
        Path(marker).unlink(missing_ok=True)
    g = zoo.load_generator("tiny")
    src = tmp_path / "network.pkl"
    _nvidia_pickle(g, fake_persistence, src)
    del sys.modules["torch_utils.persistence"]  # the reader must not need NVIDIA's code at all
    converted = zoo.generator_from_nvidia_pickle(src)
    assert not Path("/tmp/stv_pwned").exists() and not Path("/tmp/stv_pwned_reduce").exists()
    assert converted.config.channel_table == g.config.channel_table
    assert torch.equal(converted.latent_avg, g.latent_avg)
    for k, v in g.state_dict().items():
        assert torch.equal(converted.state_dict()[k], v), k
    w = torch.randn(2, g.n_latent, g.style_dim)
    with torch.no_grad():
        assert torch.equal(converted(w), g(w))


def test_nvidia_pickle_other_architecture_refused(fake_persistence, tmp_path):
    g = zoo.load_generator("tiny")
    src = tmp_path / "resnet.pkl"
    _nvidia_pickle(g, fake_persistence, src, architecture="resnet")
    with pytest.raises(ModelError, match="architecture"):
        zoo.generator_from_nvidia_pickle(src)


def test_restricted_unpickler_never_calls_unknown_globals(tmp_path):
    Path("/tmp/stv_pwned_reduce").unlink(missing_ok=True)
    src = tmp_path / "evil.pkl"
    src.write_bytes(pickle.dumps({"x": _Evil(), "t": torch.arange(3)}, protocol=2))
    data = read_pickle(src)
    assert not Path("/tmp/stv_pwned_reduce").exists()
    assert torch.equal(data["t"], torch.arange(3))  # protocol-2 tensors (_codecs.encode path) still read
    with pytest.raises(ModelError, match="no G_ema"):
        zoo.generator_from_nvidia_pickle(src)
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(ModelError):
        read_pickle(tmp_path / "junk.pkl")
