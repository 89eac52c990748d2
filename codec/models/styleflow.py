"""StyleFlow's conditional continuous normalising flow over W (Abdal et al. 2021), and the pose edit built on it.

`modellarge10k.pt` is a plain state_dict (the public code does `prior.load_state_dict(torch.load(path))` on
`cnf(512, '512-512-512-512-512', 17, 1)`), so it loads with `torch.load(weights_only=True)`. Its keys:
    chain.0.*  MovingBatchNorm1d(512): weight, bias (log-scale and shift), running_mean, running_var, step
    chain.1.*  CNF: sqrt_end_time (T = sqrt_end_time**2), odefunc._num_evals (a counter),
               odefunc.diffeq.layers.{0..5}: ConcatSquashLinear 512->512 (five hidden layers + the output one):
               _layer (Linear with bias), _hyper_gate (Linear with bias), _hyper_bias (Linear, no bias), the
               hyper layers reading [t, condition] (1 + 17 inputs)
    chain.2.*  MovingBatchNorm1d(512)
Each ConcatSquashLinear computes  layer(x) * sigmoid(hyper_gate([t, c])) + hyper_bias([t, c]); tanh between
layers. The dynamics act on every W+ row separately (the 18 rows share the condition).

Forward (W -> z): BN0, then the ODE from 0 to T, then BN2; backward runs the inverse steps in reverse order.
The solver is torchdiffeq's dopri5 with atol = rtol = 1e-5, as released.

Two departures from the public code, neither changing the result beyond the ODE tolerance:
- the log-density and its Hutchinson divergence estimate are not integrated (an edit does not need them);
- only the W+ rows the edit keeps (0-3) are integrated: the dynamics are row-wise, so the other rows'
  trajectories cannot influence them, and the public code discards them anyway (4.5x less work).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn
from torchdiffeq import odeint

from codec.errors import ModelError
from codec.models.safe_load import load_checkpoint, load_strict

ODE_TOLERANCE = 1e-5
LIGHTING_DIMS = 9
ATTRIBUTES = ("gender", "glasses", "yaw", "pitch", "baldness", "beard", "age", "expression")
CONDITION_DIMS = LIGHTING_DIMS + len(ATTRIBUTES)  # 17
YAW_INDEX = LIGHTING_DIMS + ATTRIBUTES.index("yaw")  # 11
PITCH_INDEX = LIGHTING_DIMS + ATTRIBUTES.index("pitch")  # 12
POSE_EDIT_ROWS = 4  # StyleFlow's UI keeps rows 0-3 of a yaw/pitch edit and restores rows 4-17


class MovingBatchNorm1d(nn.Module):
    """The flow's affine normalisation with frozen statistics: y = (x - mean) / sqrt(var + eps) * e^w + b."""

    def __init__(self, num_features: int, eps: float = 1e-4):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("step", torch.zeros(1))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor, context: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        std = torch.sqrt(self.running_var + self.eps)
        if reverse:
            return (x - self.bias) * torch.exp(-self.weight) * std + self.running_mean
        return (x - self.running_mean) / std * torch.exp(self.weight) + self.bias


class ConcatSquashLinear(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, context_dim: int):
        super().__init__()
        self._layer = nn.Linear(dim_in, dim_out)
        self._hyper_bias = nn.Linear(context_dim, dim_out, bias=False)
        self._hyper_gate = nn.Linear(context_dim, dim_out)

    def forward(self, time_context: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # time_context [B, 1 + C] is shared by all rows of x [B, rows, D]
        gate = torch.sigmoid(self._hyper_gate(time_context)).unsqueeze(1)
        shift = self._hyper_bias(time_context).unsqueeze(1)
        return self._layer(x) * gate + shift


class ODENet(nn.Module):
    def __init__(self, dim: int, hidden_dims: tuple[int, ...], condition_dim: int):
        super().__init__()
        widths = (dim, *hidden_dims, dim)
        self.layers = nn.ModuleList(
            ConcatSquashLinear(a, b, 1 + condition_dim) for a, b in zip(widths[:-1], widths[1:])
        )

    def forward(self, time_context: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(time_context, x)
            if i < len(self.layers) - 1:
                x = torch.tanh(x)
        return x


class ODEFunc(nn.Module):
    """Holds the dynamics network under the checkpoint's name `diffeq` (and its evaluation counter)."""

    def __init__(self, diffeq: ODENet):
        super().__init__()
        self.diffeq = diffeq
        self.register_buffer("_num_evals", torch.tensor(0.0))


class CNF(nn.Module):
    def __init__(self, odefunc: ODEFunc, end_time: float = 1.0):
        super().__init__()
        self.sqrt_end_time = nn.Parameter(torch.sqrt(torch.tensor(end_time)))
        self.odefunc = odefunc

    def forward(self, x: torch.Tensor, context: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        end = self.sqrt_end_time * self.sqrt_end_time
        times = torch.stack([torch.zeros_like(end), end]).to(x)
        if reverse:
            times = times.flip(0)
        batch = x.shape[0]

        def dynamics(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            time_context = torch.cat([t.expand(batch, 1).to(y), context], dim=1)
            return self.odefunc.diffeq(time_context, y)

        path = odeint(dynamics, x, times, rtol=ODE_TOLERANCE, atol=ODE_TOLERANCE, method="dopri5")
        return path[-1]


class StyleFlowCNF(nn.Module):
    """`chain` = [BN, (CNF, BN) x num_blocks]; W+ rows [B, R, D] <-> z under a condition [B, C]."""

    def __init__(
        self,
        dim: int = 512,
        hidden_dims: tuple[int, ...] = (512,) * 5,
        condition_dim: int = CONDITION_DIMS,
        num_blocks: int = 1,
    ):
        super().__init__()
        self.condition_dim = condition_dim
        chain: list[nn.Module] = [MovingBatchNorm1d(dim)]
        for _ in range(num_blocks):
            chain += [CNF(ODEFunc(ODENet(dim, hidden_dims, condition_dim))), MovingBatchNorm1d(dim)]
        self.chain = nn.ModuleList(chain)

    def condition_batch(self, condition: torch.Tensor, batch: int) -> torch.Tensor:
        # The public code passes conditions as [B, 17, 1, 1]; accept that, [B, 17] and one shared [17].
        condition = condition.reshape(-1, self.condition_dim) if condition.ndim != 1 else condition[None]
        return condition.expand(batch, -1)

    def to_z(self, w: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        context = self.condition_batch(condition, w.shape[0]).to(w)
        for step in self.chain:
            w = step(w, context)
        return w

    def from_z(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        context = self.condition_batch(condition, z.shape[0]).to(z)
        for step in reversed(self.chain):
            z = step(z, context, reverse=True)
        return z


def _with_pose(condition: torch.Tensor, yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
    """The condition with its yaw and pitch entries replaced (out of place, so gradients reach yaw/pitch)."""
    return torch.cat(
        [condition[:, :YAW_INDEX], yaw[:, None], pitch[:, None], condition[:, PITCH_INDEX + 1:]], dim=1
    )


class StyleFlowPoseEditor:
    """edit(w_plus, yaw, pitch): StyleFlow's yaw/pitch edit, differentiable in yaw and pitch.

    z = flow(w_plus | condition); edited = flow^-1(z | condition with yaw, pitch replaced); the result keeps
    rows 0-3 of `edited` and rows 4-17 of `w_plus`. `condition` ([B, 17] or [17]: 9 lighting + 8 attribute
    values of the input latent, the attributes as StyleFlow's classifiers report them) is given per call or
    once at construction.
    """

    def __init__(self, flow: StyleFlowCNF, condition: torch.Tensor | None = None, edited_rows: int = POSE_EDIT_ROWS):
        self.flow = flow
        self.condition = condition
        self.edited_rows = edited_rows

    def to(self, device: torch.device | str) -> "StyleFlowPoseEditor":
        self.flow.to(device)
        return self

    def edit(
        self,
        w_plus: torch.Tensor,
        yaw: torch.Tensor,
        pitch: torch.Tensor,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        condition = self.condition if condition is None else condition
        if condition is None:
            raise ValueError("StyleFlow needs the input latent's 17-value condition (lighting + attributes)")
        batch = w_plus.shape[0]
        # The ODE solve runs in float32 whatever the renderer's dtype (its 1e-5 tolerances mean nothing in
        # float16), on the latent's device.
        self.flow.to(w_plus.device)
        work = dict(dtype=torch.float32, device=w_plus.device)
        condition = self.flow.condition_batch(condition, batch).to(**work)
        yaw = torch.as_tensor(yaw).to(**work).reshape(-1).expand(batch)
        pitch = torch.as_tensor(pitch).to(**work).reshape(-1).expand(batch)
        kept = w_plus[:, : self.edited_rows].to(**work)
        z = self.flow.to_z(kept, condition)
        edited = self.flow.from_z(z, _with_pose(condition, yaw, pitch))
        return torch.cat([edited.to(w_plus.dtype), w_plus[:, self.edited_rows:]], dim=1)


def load_styleflow(path_or_state: str | Path | Mapping[str, torch.Tensor]) -> StyleFlowCNF:
    """Load `modellarge10k.pt` (a bare state_dict) strict; sizes are read off the tensors."""
    state = load_checkpoint(path_or_state, "StyleFlow")
    try:
        num_blocks = sum(1 for k in state if k.endswith(".sqrt_end_time"))
        prefix = "chain.1.odefunc.diffeq.layers."
        n_layers = sum(1 for k in state if k.startswith(prefix) and k.endswith("._layer.weight"))
        widths = [int(state[f"{prefix}{i}._layer.weight"].shape[0]) for i in range(n_layers)]
        dim = int(state["chain.0.weight"].shape[0])
        condition_dim = int(state[f"{prefix}0._hyper_gate.weight"].shape[1]) - 1
    except KeyError as exc:
        raise ModelError(f"StyleFlow: layout not recognised (no {exc})") from exc
    if num_blocks < 1 or n_layers < 1:
        raise ModelError("StyleFlow: layout not recognised (no CNF block)")
    flow = StyleFlowCNF(dim, tuple(widths[:-1]), condition_dim, num_blocks)
    load_strict(flow, state, "StyleFlow")
    return flow.eval()
