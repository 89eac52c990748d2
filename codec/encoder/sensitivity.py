"""Index sensitivity (paper eq. 5): which StyleSpace channels move one facial region and little else.

For a region f with mask M_f and a channel i = (l, c), perturb the ID latent's styles along channel i by a
sequence of offsets delta_0 < delta_1 < ... and score

    Gamma_f,i = mean over k of LPIPS(S_k * M_f, S_{k-1} * M_f) / |delta_k - delta_{k-1}|,
    S_k = G_ss(A(L_ID) + delta_k 1_i).

Gamma_i is the same over the whole face. The paper keeps channels with a high Gamma_f,i and a "negligible"
Gamma_i; taken literally that cannot hold (region f lies inside the face, so Gamma_i >= a share of Gamma_f,i),
so we score what it means: the *leakage* of channel i out of region f, the same LPIPS measured over the face
minus region f (region dilated by a small margin: an edit of the lips also moves the skin right next to them),
and select channels whose leakage is small relative to their Gamma_f,i.

Offsets are in units of each channel's spread (its standard deviation over many generated faces): a raw unit
means very different things on different channels, and relative steps make their scores comparable. Scores are
therefore "LPIPS per channel-standard-deviation"; the spreads are recorded with the table.

Scoring is repeated over several identities (seeded W samples), in two stages because LPIPS of every channel
under every mask costs minutes per identity on a CPU (measured: 557 s for the tiny model's 640 channels, one
identity, 7 masks, on 2 shared cores). Stage 1 screens every candidate by its summed pixel change inside each
region versus the leakage area (rank correlation with the LPIPS specificity, measured on the tiny model: 0.95
mouth, 0.92 eyes, 0.89 pupils); a candidate passes on an identity when its change is at least the median and its
specificity in the top decile, and the shortlist (3x the channels wanted) is ranked by how many identities it
passes on (paper: "the prominent indices across the sampled data"). Stage 2 scores the shortlist with eq. 5 and
keeps the channels of highest mean LPIPS specificity Gamma_f,i / (Gamma_f,i + leakage).
toRGB layers are never candidates (as in StyleSpace): they recolour the whole image.

The chosen 32 indices travel in a JSON channel table (`save_channel_table` / `load_channel_table`) that the
encoder reads and the .stv header carries (format_spec.md section 8 for the (layer, channel) convention).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from codec.encoder.losses import lpips_distance
from codec.errors import ModelError, StvError
from codec.models.stylespace import StyleSpaceLayout, apply_offsets

# Attribute regions in the order the bitstream lists their channels.
REGIONS = ("mouth_jaw", "eyes_brows", "pupils")
FACE = "face"
TABLE_SIZE = 32
LEAK_PREFIX = "leak:"


def leak_name(region: str) -> str:
    return LEAK_PREFIX + region


# --- what is perturbed, by how much --------------------------------------------------------------------------

def candidate_indices(layout: StyleSpaceLayout) -> list[tuple[int, int]]:
    """Every (layer, channel) of the non-toRGB style layers, in flat-index order."""
    return [(l, c) for l, layer in enumerate(layout.layers) if not layer.is_torgb for c in range(layer.channels)]


@torch.no_grad()
def sample_identities(generator, count: int, seed: int, truncation: float = 0.7) -> torch.Tensor:
    """`count` seeded identities as W+ latents [count, n_latent, style_dim] (one W broadcast over the rows),
    truncated towards the mean W by `truncation` (1 = none): typical faces, not the tails of the distribution."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(count, generator.style_dim, generator=gen)
    w = generator.mapping(z.to(generator.latent_avg.device))
    w = generator.latent_avg + truncation * (w - generator.latent_avg)
    return w[:, None].expand(-1, generator.n_latent, -1).contiguous()


@torch.no_grad()
def channel_spread(generator, samples: int = 2000, seed: int = 0, batch: int = 500) -> torch.Tensor:
    """Standard deviation of every StyleSpace channel over `samples` seeded faces (no truncation): [layout.total]."""
    gen = torch.Generator().manual_seed(seed)
    flats = []
    for start in range(0, samples, batch):
        z = torch.randn(min(batch, samples - start), generator.style_dim, generator=gen)
        w = generator.mapping(z.to(generator.latent_avg.device))
        flats.append(generator.layout.flatten(generator.styles(w)).double().cpu())
    return torch.cat(flats).std(dim=0).float()


def offset_steps(spread: torch.Tensor, layout: StyleSpaceLayout, indices: Sequence[tuple[int, int]],
                 steps_in_std: Sequence[float]) -> torch.Tensor:
    """Absolute offsets [len(indices), K]: the sequence `steps_in_std` scaled by each channel's spread."""
    flat = torch.tensor([layout.flat_index(l, c) for l, c in indices], dtype=torch.long)
    return spread[flat, None].double() * torch.tensor(steps_in_std, dtype=torch.float64)[None]


# --- masks -----------------------------------------------------------------------------------------------------

def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of a [.., H, W] float mask by a (2 radius + 1)-pixel square."""
    if radius <= 0:
        return mask
    shape = mask.shape
    flat = mask.reshape(-1, 1, *shape[-2:])
    return F.max_pool2d(flat, 2 * radius + 1, stride=1, padding=radius).reshape(shape)


def sensitivity_masks(region_masks: Mapping[str, np.ndarray], leak_margin: int) -> dict[str, torch.Tensor]:
    """[1, 1, H, W] float masks to score with: each attribute region, the face, and for each region its leakage
    area (face minus the region dilated by `leak_margin` pixels)."""
    as_tensor = {name: torch.from_numpy(np.asarray(region_masks[name], dtype=np.float32))[None, None]
                 for name in (*REGIONS, FACE)}
    masks = dict(as_tensor)
    for region in REGIONS:
        masks[leak_name(region)] = as_tensor[FACE] * (1.0 - dilate(as_tensor[region], leak_margin))
    return masks


# --- eq. 5 -----------------------------------------------------------------------------------------------------

@torch.no_grad()
def perturbation_gammas(
    generator,
    lpips_module: torch.nn.Module,
    w_plus: torch.Tensor,
    indices: Sequence[tuple[int, int]],
    offsets: torch.Tensor,
    masks: Mapping[str, torch.Tensor],
    stop_at: int | None = None,
    batch_images: int = 64,
    progress: Callable[[int], object] | None = None,
) -> dict[str, torch.Tensor]:
    """Gamma (eq. 5) of each index under each mask, for one identity.

    w_plus [1, n_latent, dim]; offsets [len(indices), K] (absolute, increasing; K >= 2), or [K] for all indices;
    masks: name -> [1, 1, R, R] at the rendered resolution R (`stop_at`, default full size).
    Returns name -> [len(indices)] float64. The K renders of an index run in one batch with those of other
    indices (`batch_images` renders per forward); `progress(n)` is told of each batch of n indices done."""
    n = len(indices)
    offsets = torch.as_tensor(offsets, dtype=torch.float64)
    offsets = offsets.expand(n, -1) if offsets.ndim == 1 else offsets
    k_count = offsets.shape[1]
    if offsets.shape[0] != n or k_count < 2:
        raise ValueError(f"offsets must be [{n}, K >= 2] or [K >= 2], got {tuple(offsets.shape)}")
    steps = offsets.diff(dim=1).abs()
    if bool((steps == 0).any()):
        raise ValueError("consecutive offsets must differ (eq. 5 divides by their difference)")
    base = generator.styles(w_plus)
    per_batch = max(1, batch_images // k_count)
    out = {name: torch.zeros(n, dtype=torch.float64) for name in masks}
    for start in range(0, n, per_batch):
        chunk = list(indices[start:start + per_batch])
        images = render_perturbed(generator, base, chunk, offsets[start:start + len(chunk)], stop_at)
        after, before = images[:, 1:].flatten(0, 1), images[:, :-1].flatten(0, 1)
        for name, mask in masks.items():
            lp = lpips_distance(lpips_module, after, before, mask.to(images)).double().view(len(chunk), k_count - 1)
            out[name][start:start + len(chunk)] = (lp / steps[start:start + len(chunk)]).mean(dim=1).cpu()
        if progress is not None:
            progress(len(chunk))
    return out


def render_perturbed(generator, base: Sequence[torch.Tensor], chunk: Sequence[tuple[int, int]],
                      offsets: torch.Tensor, stop_at: int | None) -> torch.Tensor:
    """Renders [len(chunk), K, 3, R, R]: row j perturbs only chunk[j], by each of offsets[j]."""
    m, k_count = offsets.shape
    batch = m * k_count
    alpha = torch.zeros(batch, m, dtype=base[0].dtype, device=base[0].device)
    rows = torch.arange(batch)
    alpha[rows, rows // k_count] = offsets.reshape(-1).to(alpha)
    styles = apply_offsets([s.expand(batch, -1) for s in base], chunk, alpha)
    images = generator.synthesize(styles, stop_at=stop_at)
    return images.view(m, k_count, *images.shape[1:])


# --- stage 1: screening every candidate in pixel space ---------------------------------------------------------

@torch.no_grad()
def screen_changes(
    generator,
    w_plus: torch.Tensor,
    indices: Sequence[tuple[int, int]],
    offsets: torch.Tensor,
    masks: Mapping[str, torch.Tensor],
    batch_images: int = 64,
    progress: Callable[[int], object] | None = None,
) -> dict[str, torch.Tensor]:
    """A cheap stand-in for eq. 5 to shortlist candidates: the summed absolute pixel change inside each mask
    between the renders at offsets[:, 0] and offsets[:, -1], per unit offset. Same arguments as
    `perturbation_gammas` (only the two end offsets are rendered). LPIPS of all 640 channels of even the tiny
    model costs minutes per identity on a CPU (its AlexNet runs once per mask); pixels cost nothing extra."""
    n = len(indices)
    offsets = torch.as_tensor(offsets, dtype=torch.float64)
    ends = (offsets.expand(n, -1) if offsets.ndim == 1 else offsets)[:, [0, -1]]
    span = (ends[:, 1] - ends[:, 0]).abs()
    base = generator.styles(w_plus)
    per_batch = max(1, batch_images // 2)
    out = {name: torch.zeros(n, dtype=torch.float64) for name in masks}
    for start in range(0, n, per_batch):
        chunk = list(indices[start:start + per_batch])
        images = render_perturbed(generator, base, chunk, ends[start:start + len(chunk)], None)
        change = (images[:, 1] - images[:, 0]).abs().sum(dim=1, keepdim=True)  # [m, 1, R, R]
        for name, mask in masks.items():
            total = (change * mask.to(change)).flatten(1).sum(1).double().cpu()
            out[name][start:start + len(chunk)] = total / span[start:start + len(chunk)]
        if progress is not None:
            progress(len(chunk))
    return out


def specificity(inside: torch.Tensor, leak: torch.Tensor) -> torch.Tensor:
    """Share of a channel's effect that lands in its region: inside / (inside + leakage), in [0, 1]."""
    total = inside + leak
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.zeros_like(total))


# --- the whole analysis ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SensitivitySettings:
    identities: int = 3
    seed: int = 0
    truncation: float = 0.7
    spread_samples: int = 2000
    # offsets in units of each channel's standard deviation: +-2 std spans ~95% of the channel's natural range
    steps_in_std: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)
    # leakage area = face minus the region dilated by this fraction of the image (2 px at 64, 32 px at 1024)
    leak_margin_fraction: float = 1 / 32
    # stage 1 thresholds, per identity, over all candidates (see select_shortlist)
    min_change_quantile: float = 0.5
    specificity_quantile: float = 0.9
    shortlist_factor: int = 3
    # channels per region. Mouth and jaw carry the most deformation modes (lips, jaw opening, cheeks), eyes and
    # brows fewer, gaze two (horizontal and vertical); the public config-f list splits 21 / 10 / 1.
    allocation: tuple[tuple[str, int], ...] = (("mouth_jaw", 20), ("eyes_brows", 10), ("pupils", 2))
    # the smallest region chooses first: a pupil channel is also an eye channel, not the other way round
    selection_order: tuple[str, ...] = ("pupils", "eyes_brows", "mouth_jaw")
    batch_images: int = 64

    def __post_init__(self) -> None:
        if sum(n for _, n in self.allocation) != TABLE_SIZE:
            raise ValueError(f"the allocation must add up to {TABLE_SIZE} channels")
        if sorted(r for r, _ in self.allocation) != sorted(REGIONS) or sorted(self.selection_order) != sorted(REGIONS):
            raise ValueError(f"allocation and selection order must name each of {REGIONS} once")

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["allocation"] = dict(self.allocation)
        d["steps_in_std"] = list(self.steps_in_std)
        d["selection_order"] = list(self.selection_order)
        return d


@dataclass(frozen=True)
class Choice:
    """One chosen channel with its scores (means over identities)."""
    layer: int
    channel: int
    region: str
    gamma_region: float
    gamma_face: float
    specificity: float  # LPIPS Gamma_f / (Gamma_f + leakage)
    appearances: int  # identities on which it passed the stage-1 thresholds
    channel_std: float


def select_shortlist(screens: Sequence[Mapping[str, torch.Tensor]], region: str, count: int,
                     min_change_quantile: float, specificity_quantile: float,
                     exclude: set[int] = frozenset()) -> tuple[list[int], torch.Tensor]:
    """Stage 1 over per-identity pixel screens: on each identity a candidate passes for `region` if its change
    inside the region is at least the `min_change_quantile` of all candidates' (a quarter of the channels barely
    move the picture at all: their share would be noise) and its specificity is in the top
    (1 - specificity_quantile) of all candidates'. Returns (`count` candidate positions ranked by the number of
    identities passed, then mean specificity; the per-candidate pass counts)."""
    passes, spec_sum = None, None
    for screen in screens:
        inside, leak = screen[region], screen[leak_name(region)]
        spec = specificity(inside, leak)
        ok = (inside >= torch.quantile(inside, min_change_quantile)) & (spec >= torch.quantile(spec, specificity_quantile))
        passes = ok.long() if passes is None else passes + ok.long()
        spec_sum = spec if spec_sum is None else spec_sum + spec
    order = sorted(range(len(passes)), key=lambda j: (-int(passes[j]), -float(spec_sum[j])))
    return [j for j in order if j not in exclude][:count], passes


def analyse(generator, lpips_module: torch.nn.Module, region_masks: Mapping[str, np.ndarray],
            settings: SensitivitySettings = SensitivitySettings(),
            progress_factory: Callable[[int, str], Callable[[int], object]] | None = None) -> list[Choice]:
    """The 32 channels for `generator`, in bitstream order (regions as REGIONS, best first within a region).
    `region_masks`: bool [R, R] arrays (REGIONS and 'face') at the generator's resolution.
    `progress_factory(total, label)` returns a callable told of the indices done (e.g. a tqdm's update)."""
    layout = generator.layout
    candidates = candidate_indices(layout)
    spread = channel_spread(generator, settings.spread_samples, settings.seed)
    offsets = offset_steps(spread, layout, candidates, settings.steps_in_std)
    masks = sensitivity_masks(region_masks, max(1, round(settings.leak_margin_fraction * generator.size)))
    identities = sample_identities(generator, settings.identities, settings.seed + 1, settings.truncation)

    def bar(total: int, label: str):
        return progress_factory(total, label) if progress_factory else None

    screens = [screen_changes(generator, identities[n:n + 1], candidates, offsets, masks, settings.batch_images,
                              bar(len(candidates), f"screen {n + 1}/{settings.identities}"))
               for n in range(settings.identities)]
    taken: set[int] = set()
    chosen: dict[str, list[Choice]] = {}
    allocation = dict(settings.allocation)
    for region in settings.selection_order:
        shortlist, passes = select_shortlist(screens, region, settings.shortlist_factor * allocation[region],
                                             settings.min_change_quantile, settings.specificity_quantile, taken)
        scores = _lpips_scores(generator, lpips_module, identities, [candidates[j] for j in shortlist],
                               offsets[shortlist], masks, region, settings, bar(len(shortlist) * settings.identities,
                                                                                  f"eq. 5 {region}"))
        ranked = sorted(range(len(shortlist)), key=lambda k: (-float(scores["specificity"][k]),
                                                              -float(scores[region][k])))
        picks = ranked[:allocation[region]]
        taken.update(shortlist[k] for k in picks)
        chosen[region] = [Choice(*candidates[shortlist[k]], region=region,
                                 gamma_region=float(scores[region][k]), gamma_face=float(scores[FACE][k]),
                                 specificity=float(scores["specificity"][k]),
                                 appearances=int(passes[shortlist[k]]),
                                 channel_std=float(spread[layout.flat_index(*candidates[shortlist[k]])]))
                          for k in picks]
    return [c for region in REGIONS for c in chosen[region]]


def _lpips_scores(generator, lpips_module, identities, indices, offsets, masks, region, settings, progress):
    """Stage 2: eq. 5 with LPIPS for the shortlist of `region`, averaged over identities: Gamma_f, Gamma over
    the face, and the specificity Gamma_f / (Gamma_f + leakage) (mean of the per-identity values)."""
    names = {region: masks[region], leak_name(region): masks[leak_name(region)], FACE: masks[FACE]}
    sums = {name: torch.zeros(len(indices), dtype=torch.float64) for name in (*names, "specificity")}
    for n in range(identities.shape[0]):
        g = perturbation_gammas(generator, lpips_module, identities[n:n + 1], indices, offsets, names,
                                batch_images=settings.batch_images, progress=progress)
        for name in names:
            sums[name] += g[name]
        sums["specificity"] += specificity(g[region], g[leak_name(region)])
    return {name: total / identities.shape[0] for name, total in sums.items()}


# --- eq. 8 -----------------------------------------------------------------------------------------------------

def index_learning_rates(gammas: Sequence[float], regions: Sequence[str]) -> np.ndarray:
    """eq. 8, per index: eta_f,i = exp(-1.5 Gamma_f,i / max over the indices of region f of Gamma_f,i), where
    `regions[k]` names index k's region. Values lie in [exp(-1.5), 1]: the most sensitive index of a region gets
    exactly exp(-1.5); a region whose indices all measure 0 keeps eta = 1."""
    gammas = np.asarray(gammas, dtype=np.float64)
    if gammas.shape != (len(regions),):
        raise ValueError(f"{gammas.shape[0] if gammas.ndim else 0} gammas for {len(regions)} regions")
    if not np.all(np.isfinite(gammas)) or np.any(gammas < 0):
        raise ValueError("sensitivities must be finite and non-negative")
    eta = np.ones_like(gammas)
    labels = np.asarray(regions)
    for region in dict.fromkeys(regions):
        members = labels == region
        peak = gammas[members].max()
        if peak > 0:
            eta[members] = np.exp(-1.5 * gammas[members] / peak)
    return eta


# --- the channel table -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChannelTable:
    """The 32 StyleSpace indices of a generator, with their regions, in bitstream order.
    `gammas` / `face_gammas`: Gamma_f,i and Gamma_i when measured (None for a list taken from elsewhere).
    `details`: any further per-entry fields of the file (kept on a round trip)."""
    generator: str
    generator_sha256: str | None
    indices: list[tuple[int, int]]
    regions: list[str]
    gammas: list[float | None]
    face_gammas: list[float | None]
    made_by: str
    settings: dict = field(default_factory=dict)
    details: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.indices)
        if n != TABLE_SIZE:
            raise StvError(f"a channel table holds exactly {TABLE_SIZE} indices, this one {n}")
        if len(set(self.indices)) != n:
            raise StvError("the channel table repeats an index")
        if len(self.regions) != n or len(self.gammas) != n or len(self.face_gammas) != n:
            raise StvError("the channel table's columns differ in length")
        unknown = sorted(set(self.regions) - set(REGIONS))
        if unknown:
            raise StvError(f"unknown region(s) {unknown} in the channel table (known: {', '.join(REGIONS)})")

    def channel_spread(self) -> np.ndarray:
        """[K] each index's typical spread (its standard deviation over generated faces, as the analysis recorded
        it; 1 where a table has none): the unit of the offsets' steps and of the synthetic tracks."""
        return np.array([float(d.get("channel_std", 1.0)) for d in self.details] if self.details
                        else [1.0] * len(self.indices))

    def check_layout(self, layout: StyleSpaceLayout) -> None:
        """ModelError unless every index exists in `layout` and none is a toRGB layer."""
        for layer, channel in self.indices:
            try:
                layout.flat_index(layer, channel)
            except IndexError as exc:
                raise ModelError(f"channel table index ({layer}, {channel}) does not fit the generator: {exc}") from exc
            if layout.layers[layer].is_torgb:
                raise ModelError(f"channel table index ({layer}, {channel}) is on a toRGB layer")


def table_from_choices(choices: Sequence[Choice], generator: str, generator_sha256: str | None, made_by: str,
                       settings: dict) -> ChannelTable:
    details = [{"specificity": c.specificity, "appearances": c.appearances, "channel_std": c.channel_std}
               for c in choices]
    return ChannelTable(generator, generator_sha256, [(c.layer, c.channel) for c in choices],
                        [c.region for c in choices], [c.gamma_region for c in choices],
                        [c.gamma_face for c in choices], made_by, dict(settings), details)


TABLE_KEYS = ("generator", "generator_sha256", "channels", "made_by", "settings")
ENTRY_KEYS = ("layer", "channel", "region", "gamma_region", "gamma_face")


def table_to_json(table: ChannelTable) -> dict:
    channels = []
    for k, ((layer, channel), region) in enumerate(zip(table.indices, table.regions)):
        entry = {"layer": layer, "channel": channel, "region": region,
                 "gamma_region": table.gammas[k], "gamma_face": table.face_gammas[k]}
        if k < len(table.details):
            entry.update({key: v for key, v in table.details[k].items() if key not in ENTRY_KEYS})
        channels.append(entry)
    return {"generator": table.generator, "generator_sha256": table.generator_sha256, "channels": channels,
            "made_by": table.made_by, "settings": table.settings, **table.extra}


def table_from_json(data: dict) -> ChannelTable:
    try:
        channels = data["channels"]
        indices = [(int(e["layer"]), int(e["channel"])) for e in channels]
        regions = [str(e["region"]) for e in channels]
        gammas = [_optional_float(e.get("gamma_region")) for e in channels]
        face = [_optional_float(e.get("gamma_face")) for e in channels]
        details = [{k: v for k, v in e.items() if k not in ENTRY_KEYS} for e in channels]
        return ChannelTable(str(data["generator"]), data.get("generator_sha256"), indices, regions, gammas, face,
                            str(data.get("made_by", "")), dict(data.get("settings") or {}), details,
                            {k: v for k, v in data.items() if k not in TABLE_KEYS})
    except (KeyError, TypeError, ValueError) as exc:
        reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise StvError(f"not a channel table: {reason}") from exc


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


def save_channel_table(table: ChannelTable, path: Path) -> None:
    """Write the table as JSON (deterministic: same table, same bytes)."""
    Path(path).write_text(json.dumps(table_to_json(table), indent=2, allow_nan=False) + "\n")


def load_channel_table(path: Path) -> ChannelTable:
    """A channel table file -> ChannelTable; StvError naming the file if it is missing or malformed."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise StvError(f"cannot read channel table {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise StvError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise StvError(f"{path}: not a channel table (top level is not an object)")
    try:
        return table_from_json(data)
    except StvError as exc:
        raise StvError(f"{path}: {exc}") from exc
