"""tools/sensitivity.py for config-f (issue 12 part 3): the --model path, its error without weights, and --plan, the
count of renders and LPIPS evaluations the README's GPU estimate is made from, checked against what `analyse`
actually runs on a reduced random generator."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from codec.encoder import sensitivity as S
from codec.encoder.losses import make_lpips
from codec.models.stylegan2 import Generator, GeneratorConfig
from codec.preprocess.masks import canonical_masks

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "sensitivity.py"
SMALL = GeneratorConfig(size=16, channels={4: 32, 8: 32, 16: 16}, n_mlp=2)


def load_tool():
    spec = importlib.util.spec_from_file_location("sensitivity_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(*args, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "STV_HOME": str(home)}, timeout=120)


def test_config_f_without_weights_is_one_line_naming_convert(tmp_path):
    result = run_tool("--model", "stylegan2-ffhq-config-f", "--out", str(tmp_path / "t.json"), home=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sensitivity: error: generator 'stylegan2-ffhq-config-f' is not "
                                                   "installed") and "stv-weights convert" in lines[0]
    assert not (tmp_path / "t.json").exists()


def test_config_f_plan_needs_no_weights(tmp_path):
    result = run_tool("--model", "stylegan2-ffhq-config-f", "--plan", home=tmp_path)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout.strip().splitlines()[-1])
    # config-f StyleSpace: 9088 channels, 3040 of them toRGB (StyleSpace paper's count), the rest candidates
    assert plan["candidates"] == 6048 and plan["size"] == 1024
    assert plan["renders_stage1"] == 3 * 2 * 6048 and plan["renders_stage2"] == 3 * 96 * 5
    assert plan["lpips_pairs"] == 3 * 96 * 4 * 3
    assert plan["gmac_per_render"] == 74.26  # the README's estimate is made from these numbers


def test_plan_counts_what_analyse_runs_and_the_macs_of_a_forward(monkeypatch):
    monkeypatch.setenv("STV_OPS", "reference")  # the count does not depend on the path; this one is quicker here
    tool = load_tool()
    torch.manual_seed(0)
    g = Generator(SMALL).eval()
    renders, pairs = [], []
    synthesize = g.synthesize

    def counting_synthesize(styles, stop_at=None):
        renders.append(styles[0].shape[0])
        return synthesize(styles, stop_at=stop_at)

    g.synthesize = counting_synthesize
    lpips_module = make_lpips()

    def counting_lpips(a, b):
        pairs.append(a.shape[0])
        return lpips_module(a, b)

    settings = S.SensitivitySettings(identities=1, spread_samples=64, batch_images=128, shortlist_factor=1,
                                     steps_in_std=(-1.0, 0.0, 1.0))
    S.analyse(g, counting_lpips, canonical_masks(SMALL.size), settings)
    plan = tool.plan(SMALL, settings)
    assert sum(renders) == plan["renders_stage1"] + plan["renders_stage2"]
    assert sum(pairs) == plan["lpips_pairs"]

    # multiply-adds of one forward: torch's count of its convolutions, less the FIR filters the plan leaves out
    g.synthesize = synthesize
    styles = [s.detach().requires_grad_() for s in g.styles(torch.randn(1, SMALL.n_latent, SMALL.style_dim))]
    with FlopCounterMode(display=False) as counter:
        g.synthesize(styles)  # with gradients: the reference path, plain aten convolutions
    ch = SMALL.channel_table
    fir = sum(16 * r * r * (ch[r] + 3) for r in SMALL.resolutions[1:])  # 4x4 blur after each up-conv, skip RGB
    assert counter.get_total_flops() // 2 == tool.synthesis_macs(SMALL) + fir
