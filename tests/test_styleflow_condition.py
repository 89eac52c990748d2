"""The StyleFlow condition estimated offline (codec.encoder.styleflow_condition): the flow's log-density is right,
and a condition used to draw latents from a seeded flow is recovered from them."""

from __future__ import annotations

import math

import pytest
import torch

from codec.encoder.styleflow_condition import (ConditionSettings, estimate_condition, log_density, prior,
                                               rademacher, styleflow_pose_spec)
from codec.models.styleflow import PITCH_INDEX, YAW_INDEX, load_styleflow
from official_layouts import styleflow_layout, synthetic_state

DIM, HIDDEN, ROWS, LATENTS = 32, 32, 18, 4
FIT = ConditionSettings(steps=25, learning_rate=0.25, tolerance=1e-3)


@pytest.fixture(autouse=True)
def one_thread():
    # The adaptive ODE solver makes many small calls: on a shared, loaded machine two threads are ~10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def seeded_flow(dim: int, hidden: int, seed: int = 11, condition_scale: float = 1.0):
    """A small flow in the official layout whose hyper layers read each condition value in units of its published
    spread (as a trained flow would be sensitive to each attribute on its own scale, age in years as lighting in SH
    units); condition_scale 0 gives a flow that ignores the condition."""
    state = synthetic_state(styleflow_layout(dim=dim, hidden=(hidden, hidden), condition=17), seed=seed)
    _, std, _, _ = prior()
    for key in state:
        if "_hyper" in key and key.endswith("weight"):
            state[key] = state[key].clone()
            state[key][:, 1:] *= condition_scale / std  # column 0 reads the time
    return load_styleflow(state)


def draw(flow, seed: int = 3):
    """LATENTS conditions from the published prior, and ROWS latent rows drawn from the flow under each."""
    mean, std, low, high = prior()
    generator = torch.Generator().manual_seed(seed)
    truth = (mean + std * torch.randn(LATENTS, 17, generator=generator)).clamp(low, high)
    with torch.no_grad():
        w = flow.from_z(torch.randn(LATENTS, ROWS, DIM, generator=generator), truth)
    return w, truth


def rms_in_prior_units(condition: torch.Tensor, truth: torch.Tensor) -> float:
    _, std, _, _ = prior()
    return ((condition - truth) / std).pow(2).mean().sqrt().item()


def test_log_density_matches_the_exact_change_of_variables():
    # In 4 dimensions the Jacobian of w -> z can be taken whole: log p(w|c) = log N(z) + log|det dz/dw|. The
    # Hutchinson estimate is unbiased, so its mean over 200 probes lands on it within a few of its standard errors.
    flow = seeded_flow(4, 16)
    mean = prior()[0]
    w = torch.randn(1, 1, 4, generator=torch.Generator().manual_seed(5))
    jacobian = torch.autograd.functional.jacobian(lambda x: flow.to_z(x.reshape(1, 1, 4), mean).reshape(4),
                                                  w.reshape(4))
    with torch.no_grad():
        z = flow.to_z(w, mean)
        exact = -0.5 * (z * z).sum() - 2 * math.log(2 * math.pi) + torch.linalg.slogdet(jacobian)[1]
        # 200 copies of w in one batch, each with its own probe vector
        estimates = log_density(flow, w.expand(200, 1, 4), mean, rademacher((200, 1, 4), 0), 1e-5)
    standard_error = estimates.std() / math.sqrt(len(estimates))
    assert abs(estimates.mean() - exact) < 4 * standard_error + 1e-3
    assert estimates.std() > 0  # really an estimate (the Jacobian is not diagonal)


def test_condition_is_recovered_from_latents_drawn_under_it():
    flow = seeded_flow(DIM, HIDDEN)
    w, truth = draw(flow)
    mean = prior()[0]
    estimate = estimate_condition(flow, w, settings=FIT)
    recovered, baseline = rms_in_prior_units(estimate.condition, truth), rms_in_prior_units(mean, truth)
    # Tolerance: with 18 x 32 numbers per latent for 17 unknowns the posterior is not a point (the MAP beats the
    # truth's own density below), so the error cannot go to zero; it must be well under the prior's (measured:
    # 0.42 against 0.94 prior units). A fit that ignores the latent stays at the prior mean, ratio 1.
    assert recovered < 0.6 * baseline, (recovered, baseline)
    # The optimiser reaches the MAP's level: the estimate scores at least as well as the truth (1 nat of slack for
    # the fit's looser ODE tolerance and the probe noise).
    _, std, _, _ = prior()
    probes = rademacher((LATENTS, ROWS, DIM), FIT.seed)

    def score(condition):
        with torch.no_grad():
            return log_density(flow, w, condition, probes, FIT.tolerance) - 0.5 * (((condition - mean) / std) ** 2).sum(1)

    assert (score(estimate.condition) > score(truth) - 1.0).all()
    assert (estimate.log_density > estimate.initial_log_density).all()


def test_a_flow_that_ignores_the_condition_recovers_nothing():
    # The same fit on a flow blind to c: the latents say nothing, so the estimate stays at the prior mean and the
    # recovery bound above fails (the test can fail).
    flow = seeded_flow(DIM, HIDDEN, condition_scale=0.0)
    w, truth = draw(flow)
    mean = prior()[0]
    estimate = estimate_condition(flow, w, settings=ConditionSettings(steps=5, learning_rate=0.25, tolerance=1e-3))
    assert rms_in_prior_units(estimate.condition, truth) > 0.9 * rms_in_prior_units(mean, truth)


def test_fixed_values_are_kept_and_the_pose_spec_is_well_formed():
    flow = seeded_flow(8, 16)
    w = torch.randn(ROWS, 8, generator=torch.Generator().manual_seed(4))
    estimate = estimate_condition(flow, w, fixed={YAW_INDEX: 7.5, PITCH_INDEX: -3.0},
                                  settings=ConditionSettings(steps=3, tolerance=1e-3))
    assert estimate.condition.shape == (1, 17)
    assert estimate.condition[0, YAW_INDEX].item() == 7.5 and estimate.condition[0, PITCH_INDEX].item() == -3.0
    _, _, low, high = prior()
    assert ((estimate.condition >= low) & (estimate.condition <= high)).all()
    spec = styleflow_pose_spec(estimate.condition[0])
    assert spec["editor"] == "styleflow" and len(spec["condition"]) == 17
    with pytest.raises(ValueError, match="17 finite"):
        styleflow_pose_spec(torch.full((17,), float("nan")))


def test_config_f_default_editor_is_styleflow_when_installed_else_one_error_naming_both_ways(tmp_path, monkeypatch):
    from codec import zoo
    from codec.errors import ModelError
    from codec.models.styleflow import StyleFlowPoseEditor

    monkeypatch.setenv("STV_HOME", str(tmp_path))
    with pytest.raises(ModelError) as error:
        zoo.load_pose_editor(None, "stylegan2-ffhq-config-f")
    assert "stv-weights fetch styleflow" in str(error.value) and "linear" in str(error.value)
    file = zoo.location("styleflow")
    file.parent.mkdir(parents=True)
    torch.save(synthetic_state(styleflow_layout(dim=8, hidden=(16,), condition=17), seed=1), file)
    monkeypatch.setattr(zoo, "verify", lambda name, path: "")  # a stand-in file: no published digest to match
    editor = zoo.load_pose_editor(None, "stylegan2-ffhq-config-f")
    assert isinstance(editor, StyleFlowPoseEditor) and editor.condition is None



def test_encoder_part1_estimates_the_condition_for_a_styleflow_editor(tmp_path):
    # The wiring: given a StyleFlow editor without a condition, part 1 estimates it from the ID latent (a cached
    # stage like the others), solves the pose under it from its own yaw/pitch, and returns it for the stream.
    from codec import zoo
    from codec.encoder.head_pose import PoseSettings
    from codec.encoder.losses import make_lpips
    from codec.encoder.pipeline import EncoderModels, Part1Settings, encode_part1
    from codec.models.arcface import seeded_standin
    from codec.models.styleflow import StyleFlowPoseEditor
    from encoder_fixtures import synthetic_clip
    from test_encoder_head_pose import STOP_AT, masks_at

    clip = synthetic_clip()
    frames = clip.frames[:3]
    dim = clip.id_latent.shape[-1]
    editor = StyleFlowPoseEditor(seeded_flow(dim, 16))
    models = EncoderModels(clip.generator, editor, make_lpips(), seeded_standin(0), encoder=zoo.load_inverter("tiny"))
    settings = Part1Settings(inverter="e4e", stop_at=STOP_AT, pose=PoseSettings(steps=2, batch_frames=8),
                             condition=ConditionSettings(steps=2, tolerance=1e-3))
    first = encode_part1(frames, models, masks_at(STOP_AT), settings, tmp_path, "clip", progress=False)
    condition = first.styleflow_condition
    assert condition.shape == (17,) and torch.isfinite(condition).all()
    assert torch.equal(torch.as_tensor(editor.condition), condition)
    assert not torch.equal(condition, prior()[0])  # really fitted, not the prior mean
    assert styleflow_pose_spec(condition)["condition"] == condition.tolist()
    editor.condition = None
    again = encode_part1(frames, models, masks_at(STOP_AT), settings, tmp_path, "clip", progress=False)
    assert again.generator_renders == {} and torch.equal(again.styleflow_condition, condition)
    # a condition given with the editor is kept, and the pose search starts from its yaw/pitch (2 Adam steps of
    # 1.5 units cannot get far from there)
    given = condition.clone()
    given[YAW_INDEX], given[PITCH_INDEX] = 15.0, -10.0
    editor.condition = given
    third = encode_part1(frames, models, masks_at(STOP_AT), settings, tmp_path / "given", "clip", progress=False)
    assert torch.equal(third.styleflow_condition, given)
    assert (abs(third.yaw - 15.0) <= 3.5).all() and (abs(third.pitch + 10.0) <= 3.5).all()
