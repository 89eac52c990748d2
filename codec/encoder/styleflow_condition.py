"""The ID latent's StyleFlow condition (9 lighting + 8 attribute values), estimated offline from the flow itself.

StyleFlow's pose edit needs the condition c of the latent it edits (codec.models.styleflow). The public StyleFlow
takes c from cloud services (the Face API for the attributes, DPR for the lighting), which a codec cannot call.
Here c is the maximum a-posteriori estimate under the flow:

    c* = argmax_c  log p(w_ID | c) + log p(c)

- log p(w | c) is the flow's own density (the change of variables of a CNF): w -> z through the chain
  [BN, CNF, BN], log p(w|c) = log N(z; 0, I) + sum of the BN log-scales + int_0^T tr(df/dy) dt, summed over the
  W+ rows used (every row is a sample of the same conditional density; StyleFlow trained on W rows).
- The trace is Hutchinson's estimate eps^T (df/dy) eps with Rademacher eps, one vector-Jacobian product per
  dynamics evaluation. The exact trace would need 512 of them per evaluation (one per dimension): about 500x the
  cost, for a 17-value fit whose error is dominated by what the latent says about c, not by the estimator's
  noise. The probes are drawn once from a seeded generator and held fixed for the whole fit (common random
  numbers), so the objective is a deterministic, smooth function of c that Adam can descend; averaging over the
  18 rows' independent probes (and `probes` copies) keeps its noise small.
- log p(c) is an independent Gaussian with the mean and spread of the conditions StyleFlow publishes for its
  1000 sample latents (data/attributes.npy and data/light.npy, statistics below). It makes the estimate
  well-posed where the latent says little about a value, and it is the starting point of the fit. The fit runs in
  units of that spread (every value moves on the same scale) and each value stays within the published data's
  range widened by one spread.
- The ODE is integrated with dopri5 at `tolerance` (default 1e-4, looser than the edit's released 1e-5: the fit
  needs the objective to about 1e-3 per row, not the latent to 1e-5).

Yaw and pitch: StyleFlow's units are the Face API's head-pose degrees (its sliders span -20..20). Our landmark
estimator (codec.encoder.pose_directions.landmarks_pose) also reports degrees, but from a geometric proxy whose
sign conventions and scale have not been checked against the Face API's (no reference pictures with Face API
poses can be run here). So by default all 17 values come from the flow; a caller that trusts another estimate
passes `fixed={YAW_INDEX: yaw, PITCH_INDEX: pitch}`, and those values are kept as given.

The codec does not need c to be "true": the encoder solves each frame's yaw/pitch under the c it writes into the
stream's `pose` extension, and the decoder edits under the same c. A better c only makes the edit act as StyleFlow
intends (z = flow(w | c) is in-distribution).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import math

import torch
from torchdiffeq import odeint

from codec.models.styleflow import CONDITION_DIMS, CNF, MovingBatchNorm1d, StyleFlowCNF

# Mean and standard deviation of StyleFlow's published conditions (1000 latents; lighting = 9 spherical-harmonic
# values, then gender, glasses, yaw, pitch, baldness, beard, age, expression), and their range.
PRIOR_MEAN = (0.854, -0.151, 0.280, -0.041, -0.022, -0.014, -0.163, -0.005, 0.121,
              0.433, 0.168, -0.039, -2.938, 0.074, 0.078, 30.541, 0.743)
PRIOR_STD = (0.112, 0.102, 0.125, 0.125, 0.072, 0.077, 0.081, 0.071, 0.127,
             0.495, 0.374, 11.237, 6.728, 0.114, 0.142, 12.798, 0.397)
DATA_MIN = (0.463, -0.413, -0.057, -0.383, -0.337, -0.303, -0.388, -0.291, -0.271,
            0.0, 0.0, -42.7, -27.1, 0.0, 0.0, 0.0, 0.0)
DATA_MAX = (1.215, 0.311, 0.754, 0.353, 0.311, 0.277, 0.177, 0.368, 0.544,
            1.0, 1.0, 50.2, 28.5, 0.98, 0.9, 68.0, 1.0)


@dataclass(frozen=True)
class ConditionSettings:
    steps: int = 40  # Adam steps
    learning_rate: float = 0.15  # in prior standard deviations per step
    prior_weight: float = 1.0  # 1: MAP under the published spread; 0: maximum likelihood
    probes: int = 1  # Hutchinson probe vectors per W+ row
    tolerance: float = 1e-4  # dopri5 atol = rtol during the fit
    seed: int = 0  # of the probe vectors
    rows: tuple[int, ...] | None = None  # W+ rows whose density counts (None: all)


@dataclass(frozen=True)
class ConditionEstimate:
    condition: torch.Tensor  # [B, 17]
    log_density: torch.Tensor  # [B] log p(w | c) at the estimate (nats, summed over the rows used)
    initial_log_density: torch.Tensor  # [B] the same at the prior mean (with the fixed values)


def prior() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, std, low, high) as float32 [17] tensors; low/high = the data's range widened by one std."""
    mean, std = torch.tensor(PRIOR_MEAN), torch.tensor(PRIOR_STD)
    return mean, std, torch.tensor(DATA_MIN) - std, torch.tensor(DATA_MAX) + std


def rademacher(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, shape, generator=generator).float() * 2 - 1


def log_density(
    flow: StyleFlowCNF,
    w: torch.Tensor,
    condition: torch.Tensor,
    probes: torch.Tensor | None = None,
    tolerance: float = 1e-4,
    create_graph: bool = False,
) -> torch.Tensor:
    """log p(w | c) [B], summed over the rows of w [B, R, D], under condition [B, 17] (or one shared [17]).

    probes [B, K*R, D] (K probe vectors per row, Rademacher): Hutchinson's trace estimate; None draws one per row
    from seed 0. `create_graph=True` keeps the graph for gradients with respect to the condition.
    """
    batch, rows, dim = w.shape
    context = flow.condition_batch(condition, batch).to(w)
    if probes is None:
        probes = rademacher((batch, rows, dim), 0)
    probes = probes.to(w)
    copies = probes.shape[1] // rows
    y = w.repeat(1, copies, 1)  # every probe sees its own copy of the rows (the dynamics are row-wise)
    trace = torch.zeros(batch, y.shape[1], dtype=w.dtype, device=w.device)
    log_scale = torch.zeros((), dtype=w.dtype, device=w.device)
    for step in flow.chain:
        if isinstance(step, MovingBatchNorm1d):
            y = step(y, context)
            log_scale = log_scale + (step.weight - 0.5 * torch.log(step.running_var + step.eps)).sum()
        elif isinstance(step, CNF):
            y, trace = _integrate_with_trace(step, y, trace, context, probes, tolerance, create_graph)
        else:  # pragma: no cover - the loader only builds these two
            raise TypeError(f"unexpected flow step {type(step).__name__}")
    z = y[:, :rows]
    log_normal = -0.5 * (z * z).sum((1, 2)) - 0.5 * rows * dim * math.log(2 * math.pi)
    mean_trace = trace.reshape(batch, copies, rows).mean(1).sum(1)
    return log_normal + rows * log_scale + mean_trace


def _integrate_with_trace(cnf: CNF, y, trace, context, probes, tolerance, create_graph):
    end = cnf.sqrt_end_time * cnf.sqrt_end_time
    times = torch.stack([torch.zeros_like(end), end]).to(y)
    batch = y.shape[0]

    def dynamics(t, state):
        x, _ = state
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            time_context = torch.cat([t.expand(batch, 1).to(x), context], dim=1)
            velocity = cnf.odefunc.diffeq(time_context, x)
            (jvp_t,) = torch.autograd.grad(velocity, x, probes, create_graph=create_graph)
        divergence = (jvp_t * probes).sum(-1)  # eps^T J eps per row: E = tr(J)
        if not create_graph:
            velocity, divergence = velocity.detach(), divergence.detach()
        return velocity, divergence

    path_y, path_trace = odeint(dynamics, (y, trace), times, rtol=tolerance, atol=tolerance, method="dopri5")
    return path_y[-1], path_trace[-1]


def estimate_condition(
    flow: StyleFlowCNF,
    w_plus: torch.Tensor,
    fixed: Mapping[int, float] | None = None,
    settings: ConditionSettings = ConditionSettings(),
) -> ConditionEstimate:
    """The MAP condition of each latent in w_plus [B, R, D] (or one [R, D]): see the module docstring.

    `fixed` maps condition indices (e.g. YAW_INDEX, PITCH_INDEX) to values that are kept as given."""
    if w_plus.ndim == 2:
        w_plus = w_plus[None]
    flow = flow.float()
    device = next(flow.parameters()).device
    w = w_plus.detach().to(device=device, dtype=torch.float32)
    if settings.rows is not None:
        w = w[:, list(settings.rows)]
    batch, rows, dim = w.shape
    mean, std, low, high = (x.to(device) for x in prior())
    free = torch.ones(CONDITION_DIMS, dtype=torch.bool, device=device)
    base = mean.clone()
    for index, value in (fixed or {}).items():
        free[index] = False
        base[index] = float(value)
    lower, upper = (low - mean) / std, (high - mean) / std  # the bounds in prior units
    probes = rademacher((batch, settings.probes * rows, dim), settings.seed).to(device)
    units = torch.zeros(batch, CONDITION_DIMS, device=device, requires_grad=True)
    optimiser = torch.optim.Adam([units], lr=settings.learning_rate)

    def condition_of(u: torch.Tensor) -> torch.Tensor:
        return torch.where(free, mean + std * u, base)

    def objective(u: torch.Tensor, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        density = log_density(flow, w, condition_of(u), probes, settings.tolerance, create_graph)
        prior_term = -0.5 * (u * u * free).sum(1)
        return density, density + settings.prior_weight * prior_term

    with torch.no_grad():
        initial_density, _ = objective(units, False)
    best = torch.full((batch,), -math.inf, device=device)
    best_density = initial_density.clone()
    best_units = units.detach().clone()

    def keep_best(density: torch.Tensor, score: torch.Tensor) -> None:
        # Adam overshoots near the optimum: keep each latent's best point seen (scored where it was evaluated)
        better = score > best
        best[better], best_density[better] = score[better], density[better]
        best_units[better] = units.detach()[better]

    for _ in range(settings.steps):
        density, score = objective(units, True)
        keep_best(density.detach(), score.detach())
        optimiser.zero_grad(set_to_none=True)
        (-score.sum() / (rows * dim)).backward()  # latents are independent: each gets its own gradient
        optimiser.step()
        with torch.no_grad():
            units.copy_(torch.maximum(torch.minimum(units, upper), lower))
    with torch.no_grad():
        keep_best(*objective(units, False))
    return ConditionEstimate(condition_of(best_units).detach(), best_density, initial_density)


def styleflow_pose_spec(condition: torch.Tensor, model: str = "styleflow") -> dict:
    """The stream's `pose` extension for a StyleFlow editor (format_spec.md): 17 finite numbers."""
    values = [float(v) for v in torch.as_tensor(condition).reshape(-1).tolist()]
    if len(values) != CONDITION_DIMS or not all(math.isfinite(v) for v in values):
        raise ValueError(f"a StyleFlow condition is 17 finite numbers, got {values}")
    return {"editor": "styleflow", "model": model, "condition": values}
