"""The decoder stage: a .stv stream -> RGB frames, rendered in batches and yielded one by one.

    generator = load_stream_generator(reader.header, device, dtype)     # refuses a mismatching digest
    editor = pose_editor_for(reader.header.pose_editor, reader.header.generator_name)
    for frame in decode(reader, generator, editor, settings=DecodeSettings(batch=8)):
        frame.image   # HxWx3 uint8 RGB; frame.concealed: True when damage lost its parameters

Every picture comes from `codec.decoder.render.render` + `apply_roll`, the same functions the encoder optimises
through, so a decoded frame is exactly what the encoder saw for those (dequantised) parameters.

Memory is flat in the clip's length: at most one batch of images is alive; the reader holds the file's bytes
(70 bytes per frame) and one decoded chunk.

Damage: a frame whose parameters were lost is concealed by repeating the last good picture, so the output keeps
its timing. The frames decoded are the reader's N (format_spec.md §9a), never more than the file's bytes back:
frames lost below N are concealed; frames the header promises past N are a truncation, warned about and not
decoded (a 3 kB file that claims 100,000 frames gives the frames it holds). Before any good frame (damage at the
very start) there is nothing to repeat; the concealment then shows the identity at rest: all 35 parameters zero
(for the linear pose editor that is the ID latent's own picture; for StyleFlow, the ID turned to yaw = pitch = 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from codec import zoo
from codec.bitstream import N_PARAMS, StvHeader, StvReader
from codec.bitstream.latent import EXT_COMPACT_LATENT, decode_compact_latent, reconstruct
from codec.decoder.pipeline import GraphedSynthesis, to_host
from codec.decoder.render import apply_roll, render
from codec.errors import BitstreamError, ModelError, StvError
from codec.models.pose import PoseEditor

N_ALPHA = 32
YAW, PITCH, ROLL = 32, 33, 34


@dataclass(frozen=True)
class DecodedFrame:
    index: int
    image: np.ndarray  # HxWx3 uint8 RGB
    concealed: bool


@dataclass(frozen=True)
class DecodeSettings:
    batch: int = 4
    size: tuple[int, int] | None = None  # (width, height) of the output; None: the header's
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    # on a GPU, replay the synthesis from a CUDA graph (codec.decoder.pipeline); no effect on the CPU
    cuda_graph: bool = True
    # put each face back into the source picture (format 1.2 `plac`); None: the face crop (size applies to it)
    paste: "PasteBack | None" = None  # noqa: F821 - codec.decoder.paste.PasteBack


# --- device, generator, pose editor ------------------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cpu', 'cuda', 'cuda:N' as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise StvError(f"--device: {name!r} is not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StvError(f"--device {name}: no CUDA device is available here (use --device cpu)")
    if device.type not in ("cpu", "cuda"):
        raise StvError(f"--device {name}: only cpu and cuda are supported")
    return device


def decode_dtype(device: torch.device) -> torch.dtype:
    """float16 on a GPU (twice the throughput, invisible after 8-bit output); float32 on the CPU, where half
    precision is slow and the bit-exact match with the encoder's renderer is promised."""
    return torch.float16 if device.type == "cuda" else torch.float32


def load_stream_generator(header: StvHeader, device: torch.device | str = "cpu",
                          dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The generator the stream names, after checking that the installed weights are the ones it was encoded
    with (a W+ latent means nothing with other weights). ModelError naming what to fetch otherwise."""
    name = header.generator_name
    wanted = header.generator_sha256.hex()
    try:
        file = zoo.path(name)
    except ModelError as exc:
        # the digest identifies the generator, the name is a label (format_spec.md §8): a registry entry with
        # that digest serves under another name (e.g. a stream naming 'tiny-64' and the shipped 'tiny')
        same = _generator_with_digest(wanted)
        if same is None:
            raise ModelError(f"this stream needs generator {name!r} (sha256 {wanted}): {exc}") from None
        name, file = same, zoo.path(same)
    installed = zoo.verify(name, file)
    if installed != wanted:
        raise ModelError(f"this stream was encoded with generator {name!r} sha256 {wanted}, but the installed "
                         f"{name!r} ({file}) has sha256 {installed}; install the matching weights "
                         f"(`stv-weights fetch {name}` or `stv-weights convert`)")
    return zoo.load_generator_file(file, device, dtype)


def _generator_with_digest(sha256: str) -> str | None:
    """An installed (or shipped) generator of the model registry whose published digest is `sha256`."""
    for name, entry in zoo.manifest().items():
        if entry.role == "generator" and entry.sha256 == sha256 and zoo.location(name).is_file():
            return name
    return None


def pose_editor_for(spec: dict | None, generator_name: str, device: torch.device | str = "cpu") -> PoseEditor:
    """The pose editor a stream's pose spec (`StvHeader.pose_editor`) names (None: the generator's default),
    from the model zoo."""
    editor = zoo.load_pose_editor(spec, generator_name)
    if getattr(editor, "condition", True) is None:  # StyleFlow with no condition: only the stream can give it
        raise BitstreamError(f"this {generator_name!r} stream has no 'pose' header extension, which must carry the "
                             "StyleFlow condition its pose edits were encoded under; it cannot be decoded")
    return _editor_on(editor, device)


def _editor_on(editor: PoseEditor, device: torch.device | str) -> PoseEditor:
    to = getattr(editor, "to", None)
    return to(device) if callable(to) else editor


def stream_id_latent(header: StvHeader) -> np.ndarray:
    """The ID latent the stream's pictures use: the compact one (format 1.3 `idpc`, rebuilt in the shipped basis its
    digest names) when present, else the header's float16 latent."""
    data = header.extension(EXT_COMPACT_LATENT)
    if data is None:
        return header.id_latent
    fields = decode_compact_latent(data)
    basis = zoo.latent_basis_with_digest(fields.basis_sha256)
    return reconstruct(decode_compact_latent(data, basis.log_scales), basis)


def check_compatible(generator: torch.nn.Module, id_latent: np.ndarray | torch.Tensor,
                     style_indices: Sequence[tuple[int, int]]) -> None:
    """The ID latent's shape and the 32 StyleSpace indices must fit the generator; BitstreamError otherwise."""
    rows, dim = tuple(id_latent.shape)
    if (rows, dim) != (generator.n_latent, generator.style_dim):
        raise BitstreamError(f"ID latent is {rows}x{dim}, the generator needs {generator.n_latent}x"
                             f"{generator.style_dim}")
    for k, (layer, channel) in enumerate(style_indices):
        try:
            generator.layout.flat_index(layer, channel)
        except IndexError as exc:
            raise BitstreamError(f"StyleSpace index {k} = ({layer}, {channel}) does not exist in this "
                                 f"generator: {exc}") from None


# --- rendering -----------------------------------------------------------------------------------------------

def to_uint8(images: torch.Tensor, size: tuple[int, int] | None = None) -> np.ndarray:
    """[B, 3, R, R] in [-1, 1] -> [B, H, W, 3] uint8 (resized first to size = (width, height) if given)."""
    return to_host(quantised(images, size)).numpy()  # from a GPU: a pinned copy, 1 byte a value


def quantised(images: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """[B, 3, R, R] in [-1, 1] -> [B, H, W, 3] uint8 on the same device (resized first to size if given)."""
    images = images.float()
    if size is not None and (size[1], size[0]) != tuple(images.shape[-2:]):
        images = F.interpolate(images, size=(size[1], size[0]), mode="bilinear", antialias=True,
                               align_corners=False)
    pixels = ((images + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous()


@torch.no_grad()
def render_params(generator: torch.nn.Module, editor: PoseEditor, id_latent: torch.Tensor,
                  style_indices: Sequence[tuple[int, int]], values: np.ndarray,
                  size: tuple[int, int] | None = None,
                  synthesize: Callable[[list[torch.Tensor]], torch.Tensor] | None = None) -> np.ndarray:
    """Dequantised parameters (n, 35) -> n frames [n, H, W, 3] uint8: render, restore roll, resize, quantise."""
    return to_uint8(_rendered(generator, editor, id_latent, style_indices, values, synthesize), size)


@torch.no_grad()
def render_upright(generator: torch.nn.Module, editor: PoseEditor, id_latent: torch.Tensor,
                   style_indices: Sequence[tuple[int, int]], values: np.ndarray,
                   synthesize: Callable[[list[torch.Tensor]], torch.Tensor] | None = None) -> torch.Tensor:
    """Dequantised parameters (n, 35) -> n upright faces [n, S, S, 3] uint8, left on the generator's device (the
    paste-back turns them by their roll as it places them)."""
    upright = np.concatenate([values[:, :ROLL], np.zeros_like(values[:, ROLL:])], axis=1)  # roll 0: untouched
    return quantised(_rendered(generator, editor, id_latent, style_indices, upright, synthesize))


def _rendered(generator, editor, id_latent, style_indices, values, synthesize) -> torch.Tensor:
    params = torch.as_tensor(np.asarray(values, np.float32), device=id_latent.device).to(id_latent.dtype)
    images = render(generator, editor, id_latent, style_indices, params[:, :N_ALPHA], params[:, YAW],
                    params[:, PITCH], synthesize=synthesize)
    return apply_roll(images, params[:, ROLL])


def output_size(header: StvHeader, generator: torch.nn.Module, size: tuple[int, int] | None) -> tuple[int, int] | None:
    """(width, height) to resize to, or None when the generator's own square output is what is wanted."""
    wanted = size or (header.width, header.height)
    return None if wanted == (generator.size, generator.size) else wanted


# --- the stage -----------------------------------------------------------------------------------------------

def available_frames(reader: StvReader, start: int, stop: int) -> np.ndarray:
    """Boolean mask over frames [start, stop): True where an intact chunk holds the frame's parameters."""
    mask = np.zeros(stop - start, bool)
    for chunk in reader.chunks:
        lo, hi = max(chunk.frames.start, start), min(chunk.frames.stop, stop)
        if lo < hi:
            mask[lo - start : hi - start] = True
    return mask


def last_available_before(reader: StvReader, frame: int) -> int | None:
    best = None
    for chunk in reader.chunks:
        if chunk.frames.start < frame:
            best = min(chunk.frames.stop, frame) - 1
    return best


def lost_frame_ranges(reader: StvReader, start: int, stop: int) -> list[range]:
    """Maximal runs of frames in [start, stop) that damage has lost (what concealment fills)."""
    mask = available_frames(reader, start, stop)
    runs, k = [], 0
    while k < len(mask):
        if mask[k]:
            k += 1
            continue
        j = k
        while j < len(mask) and not mask[j]:
            j += 1
        runs.append(range(start + k, start + j))
        k = j
    return runs


def damage_warnings(reader: StvReader, start: int, stop: int, name: str) -> list[str]:
    """The warnings of a decode of frames [start, stop) (format_spec.md §10, "Decoders"): each damaged place, how
    many frames are concealed, and, when the decode reaches N, the frames promised past it that are not decoded."""
    lost = lost_frame_ranges(reader, start, stop)
    past = reader.truncated if stop == len(reader) else range(0)
    if not lost and not past:
        return []
    lines = [f"{name}: damaged: {damage}" for damage in reader.damage]
    if lost:
        n_lost = sum(len(r) for r in lost)
        lines.append(f"{n_lost} of {stop - start} frames lost to damage are concealed (last good frame repeated)")
    if past:
        lines.append(f"{name}: truncated: the header promises {past.stop} frames; frames {past.start}-{past.stop - 1} "
                     f"lie past the end of the file's data and are not decoded")
    return lines


def decode(reader: StvReader, generator: torch.nn.Module, editor: PoseEditor, start: int = 0,
           stop: int | None = None, settings: DecodeSettings = DecodeSettings(),
           id_latent: np.ndarray | torch.Tensor | None = None) -> Iterator[DecodedFrame]:
    """Frames [start, stop) of the stream, in order, one at a time (rendered `settings.batch` at a time).

    `id_latent` replaces the stream's own (puppeteering); the parameter tracks are used unchanged."""
    header = reader.header
    stop = len(reader) if stop is None else stop
    if not 0 <= start <= stop <= len(reader):
        raise StvError(f"frame range {start}:{stop} outside the stream's 0:{len(reader)}")
    if settings.batch < 1:
        raise StvError("batch must be at least 1")
    latent = stream_id_latent(header) if id_latent is None else id_latent
    check_compatible(generator, latent, header.style_indices)
    latent = torch.as_tensor(np.asarray(latent, np.float32) if not torch.is_tensor(latent) else latent)
    latent = latent.to(settings.device, settings.dtype)
    size = output_size(header, generator, settings.size)
    graphed = GraphedSynthesis(generator) if settings.cuda_graph and settings.device.type == "cuda" else None
    if settings.paste is None:
        def draw(values: np.ndarray, first: int) -> np.ndarray:
            return render_params(generator, editor, latent, header.style_indices, values, size, graphed)
    else:
        draw = _draw_with_paste(settings.paste, generator, editor, latent, header.style_indices, graphed)
    picture = _BatchedPictures(reader, draw, settings.batch)
    last_good: np.ndarray | None = None
    for i in range(start, stop):
        if picture.available(i):
            last_good = picture(i)
            yield DecodedFrame(i, last_good, False)
            continue
        if last_good is None:  # the last intact frame before it, as a whole decode shows; else the identity at rest
            before = last_available_before(reader, i)
            last_good = picture(before) if before is not None else picture.at_rest()
        yield DecodedFrame(i, last_good, True)


def _draw_with_paste(paste, generator, editor, latent, style_indices, graphed):
    """draw(values, first) for a paste-back decode: each face rendered upright at the generator's size, then
    turned, placed and blended into the source picture: on the decoder's device when the paste-back has one (a
    GPU: the rendering never leaves it), else with OpenCV on the host."""
    def draw(values: np.ndarray, first: int) -> np.ndarray:
        upright = render_upright(generator, editor, latent, style_indices, values, graphed)
        if paste.device is not None:
            return paste.frames_on_device(first, upright, values[:, ROLL])
        upright = to_host(upright).numpy()
        return np.stack([paste.frame(first + k, upright[k], float(values[k, ROLL])) for k in range(len(values))])

    return draw


class _BatchedPictures:
    """Frame i is always rendered in the same batch, of exactly B rows: the frames [i // B * B, i // B * B + B),
    a lost frame's or a frame past the end's row holding zeros (the identity at rest).

    Float convolutions and matrix products pick their kernels and summation orders by batch size, so a frame
    rendered in a batch of another size can differ in the last bit, and then by one grey level; at one batch
    size each row's result does not depend on the other rows (checked by tests/test_decoder.py). So a frame's
    pixels depend only on the stream and B: a seek, a sub-range or a concealment seed gives the bytes a whole
    decode gives (with the linear pose editor, on a damaged copy as well; StyleFlow's adaptive ODE steps see
    the whole batch). The cost: a decode that starts or ends inside a batch renders the rest of it (at most
    B - 1 frames at each end). One batch is held at a time."""

    def __init__(self, reader: StvReader, draw, batch: int):
        self.reader, self.draw, self.batch = reader, draw, batch
        self.group, self.mask, self.images = -1, np.zeros(0, bool), None

    def available(self, frame: int) -> bool:
        row = self._row(frame)  # first: it may replace self.mask
        return bool(self.mask[row])

    def __call__(self, frame: int) -> np.ndarray:
        row = self._row(frame)
        if self.images is None:  # rendered only when a picture is asked for: a wholly lost batch costs nothing
            lo = self.group * self.batch
            values = np.zeros((self.batch, N_PARAMS), np.float32)
            for k in np.flatnonzero(self.mask):
                values[k] = self.reader.values(lo + k, lo + k + 1)[0]
            self.images = self.draw(values, lo)
        return self.images[row]

    def at_rest(self) -> np.ndarray:
        return self.draw(np.zeros((self.batch, N_PARAMS), np.float32), 0)[0]

    def _row(self, frame: int) -> int:
        """The frame's row in its batch, after making that batch the current one."""
        group = frame // self.batch
        if group != self.group:
            lo = group * self.batch
            hi = max(lo, min(len(self.reader), lo + self.batch))
            self.mask = np.zeros(self.batch, bool)
            self.mask[: hi - lo] = available_frames(self.reader, lo, hi)
            self.group, self.images = group, None
        return frame - group * self.batch


