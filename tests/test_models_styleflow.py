"""StyleFlow CNF and the pose editors: the modellarge10k.pt layout loads strict, the flow inverts, edits are
differentiable in yaw and pitch."""

from __future__ import annotations

import pytest
import torch

from codec.errors import ModelError
from codec.models.pose import LinearPoseEditor, PoseEditor
from codec.models.styleflow import PITCH_INDEX, YAW_INDEX, StyleFlowPoseEditor, load_styleflow
from official_layouts import styleflow_layout, synthetic_state

# dopri5 keeps each step's local error under atol + rtol*|y| = 1e-5 * (1 + |y|) with |y| <~ 4 here; a forward
# and a backward integration of a few dozen steps stay far below 1e-3, while the flow itself moves the rows by
# O(0.1-1): 1e-3 separates "inverted" from "not inverted" with margin on both sides.
ODE_ROUND_TRIP_TOL = 1e-3


@pytest.fixture(scope="module")
def release_state():
    return synthetic_state(styleflow_layout(), seed=6)


@pytest.fixture(scope="module")
def flow(release_state):
    return load_styleflow(release_state)


@pytest.fixture(scope="module")
def inputs():
    gen = torch.Generator().manual_seed(7)
    w_plus = torch.randn(2, 18, 512, generator=gen)
    condition = torch.randn(2, 17, generator=gen)
    return w_plus, condition


def test_release_layout_loads_strict_with_weights_only(tmp_path, release_state):
    path = tmp_path / "modellarge10k.pt"
    torch.save(release_state, path)  # released as a bare state_dict of cnf(512, '512-...-512', 17, 1)
    flow = load_styleflow(path)
    loaded = flow.state_dict()
    assert set(loaded) == set(release_state)
    assert all(torch.equal(loaded[k], release_state[k]) for k in release_state)
    assert flow.condition_dim == 17 and not flow.training


def test_wrong_layout_is_a_clear_error(release_state):
    broken = {k: v for k, v in release_state.items() if "layers.5._hyper_gate" not in k}
    with pytest.raises(ModelError, match="StyleFlow"):
        load_styleflow(broken)
    with pytest.raises(ModelError, match="layout not recognised"):
        load_styleflow({"weight": torch.zeros(3)})


def test_flow_is_invertible_and_not_trivial(flow, inputs):
    w_plus, condition = inputs
    rows = w_plus[:, :4]
    with torch.no_grad():
        z = flow.to_z(rows, condition)
        back = flow.from_z(z, condition)
    assert (z - rows).abs().mean() > 0.1  # the flow really moves the latent
    assert (back - rows).abs().max() < ODE_ROUND_TRIP_TOL


def test_edit_with_the_original_pose_returns_the_input(flow, inputs):
    w_plus, condition = inputs
    editor = StyleFlowPoseEditor(flow)
    with torch.no_grad():
        same = editor.edit(w_plus, condition[:, YAW_INDEX], condition[:, PITCH_INDEX], condition)
        turned = editor.edit(w_plus, condition[:, YAW_INDEX] + 3.0, condition[:, PITCH_INDEX], condition)
    assert (same - w_plus).abs().max() < ODE_ROUND_TRIP_TOL
    assert torch.equal(turned[:, 4:], w_plus[:, 4:])  # rows 4-17 always come from the input
    assert (turned[:, :4] - w_plus[:, :4]).abs().mean() > 10 * ODE_ROUND_TRIP_TOL


def test_edit_only_integrating_kept_rows_matches_the_whole_latent(flow, inputs):
    # The public code integrates all 18 rows then keeps 0-3; the dynamics are row-wise, so integrating
    # rows 0-3 alone must agree up to the ODE tolerance.
    w_plus, condition = inputs
    target = condition.clone()
    target[:, YAW_INDEX] += 3.0
    with torch.no_grad():
        whole = flow.from_z(flow.to_z(w_plus, condition), target)[:, :4]
        edited = StyleFlowPoseEditor(flow).edit(w_plus, target[:, YAW_INDEX], target[:, PITCH_INDEX], condition)
    assert (whole - edited[:, :4]).abs().max() < ODE_ROUND_TRIP_TOL


def test_condition_in_the_public_code_shape_is_accepted(flow, inputs):
    w_plus, condition = inputs
    editor = StyleFlowPoseEditor(flow, condition=condition[:1].reshape(1, 17, 1, 1))  # the UI's [1, 17, 1, 1]
    with torch.no_grad():
        a = editor.edit(w_plus[:1], 3.0, -2.0)
        b = StyleFlowPoseEditor(flow).edit(w_plus[:1], torch.tensor([3.0]), torch.tensor([-2.0]), condition[:1])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="condition"):
        StyleFlowPoseEditor(flow).edit(w_plus, 0.0, 0.0)


def test_edit_is_differentiable_in_yaw_and_pitch(flow, inputs):
    w_plus, condition = inputs
    w_plus, condition = w_plus[:1], condition[:1]
    editor = StyleFlowPoseEditor(flow, condition)
    direction = torch.randn(1, 4, 512, generator=torch.Generator().manual_seed(8))

    def objective(yaw, pitch):
        return (editor.edit(w_plus, yaw, pitch)[:, :4] * direction).sum()

    yaw = torch.tensor([5.0], requires_grad=True)
    pitch = torch.tensor([-3.0], requires_grad=True)
    objective(yaw, pitch).backward()
    assert yaw.grad is not None and pitch.grad is not None
    with torch.no_grad():  # central difference; the step is large against the ODE error (1e-3 / 2h)
        h = 1.0
        numeric = (objective(yaw + h, pitch) - objective(yaw - h, pitch)) / (2 * h)
    assert abs(yaw.grad.item()) > 1e-3
    assert abs(yaw.grad.item() - numeric.item()) < 0.05 * abs(numeric.item()) + 1e-3


def pose_editors_interface(editor: PoseEditor, w_plus: torch.Tensor) -> torch.Tensor:
    return editor.edit(w_plus, torch.zeros(w_plus.shape[0]), torch.zeros(w_plus.shape[0]))


def test_linear_editor_adds_the_directions_on_the_chosen_rows():
    gen = torch.Generator().manual_seed(9)
    directions = torch.randn(2, 10, 64, generator=gen)
    w_plus = torch.randn(3, 10, 64, generator=gen)
    yaw = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    pitch = torch.tensor([0.0, 0.25, -0.5])
    editor = LinearPoseEditor(directions)
    out = editor.edit(w_plus, yaw, pitch)
    expected = w_plus + yaw.detach()[:, None, None] * directions[0] + pitch[:, None, None] * directions[1]
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    torch.testing.assert_close(yaw.grad, directions[0].sum().expand(3))
    first_rows = LinearPoseEditor(directions, rows=range(4)).edit(w_plus, yaw.detach(), pitch)
    torch.testing.assert_close(first_rows[:, :4], expected[:, :4])
    assert torch.equal(first_rows[:, 4:], w_plus[:, 4:])
    torch.testing.assert_close(pose_editors_interface(editor, w_plus), w_plus)
    with pytest.raises(ValueError, match="do not match"):
        editor.edit(torch.zeros(1, 18, 512), yaw[:1], pitch[:1])
