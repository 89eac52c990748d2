"""The .stv header: `StvHeader` (what it says) and `encode_header` / `decode_header` (its bytes).

decode_header checks, in this order, so that each kind of damage gets its own message: length of the fixed
prefix, magic, major version, declared header size against the bytes that exist, CRC32, field layout, ranges.
Nothing is allocated beyond the bytes given (the ID latent is at most 64 x 4096 float16, 512 KiB).
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from fractions import Fraction

import construct
import numpy as np

from codec.bitstream.compress import compress, decompress_exact
from codec.bitstream.quant import QuantTable
from codec.bitstream.schema import (
    CRC_SIZE,
    FRAME_COUNT_UNKNOWN,
    HEADER_MIN_SIZE,
    HEADER_PREFIX_SIZE,
    MAGIC,
    MAJOR_VERSION,
    MAX_LATENT_DIM,
    MAX_LATENT_ROWS,
    MAX_STYLE_CHANNEL,
    MAX_STYLE_LAYER,
    MINOR_VERSION,
    N_ALPHA,
    HeaderBody,
    HeaderPrefix,
)
from codec.errors import BitstreamError

# Extension tags this reader knows; any other tag is skipped (and listed by stvinfo as unknown).
EXT_NOTE = b"note"  # free UTF-8 text (e.g. the encoder's command line)
EXT_POSE = b"pose"  # UTF-8 JSON naming the pose editor (format_spec.md, "Extension fields")
EXT_PLACEMENT = b"plac"  # 1.2: where each frame's face sits in the source picture (codec.bitstream.placement)
EXT_BACKGROUND = b"bgnd"  # 1.2: the scene behind the face, one still picture (codec.bitstream.background)
EXT_COMPACT_LATENT = b"idpc"  # 1.3: the ID latent in a shipped PCA basis (codec.bitstream.latent)
EXT_BACKGROUND_VIDEO = b"bgvd"  # 1.3: the scene behind the face as a low-rate video (background_video)
KNOWN_EXTENSIONS = {EXT_NOTE: "UTF-8 note", EXT_POSE: "pose editor (JSON)",
                    EXT_PLACEMENT: "face placement in the source picture (1.2)",
                    EXT_BACKGROUND: "background still picture (1.2)",
                    EXT_COMPACT_LATENT: "compact ID latent in a PCA basis of W (1.3)",
                    EXT_BACKGROUND_VIDEO: "background video (1.3)"}
# The lowest minor version that knows a file's parts (format_spec.md §14): 2 for `plac` or `bgnd`; 3 for an
# `arith` chunk, a compact ID latent (`idpc`) or a background video (`bgvd`)
MINOR_VERSION_1_2 = 2
MINOR_VERSION_1_3 = 3


@dataclass(frozen=True)
class StvHeader:
    width: int
    height: int
    fps_num: int
    fps_den: int
    generator_name: str
    generator_sha256: bytes  # 32 raw bytes: sha256 of the generator's weights file
    style_indices: tuple[tuple[int, int], ...]  # 32 (layer, channel), StyleSpace convention (format_spec.md)
    quant: QuantTable
    id_latent: np.ndarray  # (rows, dim) float16
    frame_count: int | None = None  # None: unknown (streaming)
    extensions: tuple[tuple[bytes, bytes], ...] = ()  # (4-byte tag, data), in file order
    version: tuple[int, int] = field(default=(MAJOR_VERSION, MINOR_VERSION))
    flags: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "id_latent", np.ascontiguousarray(self.id_latent, dtype=np.float16))
        object.__setattr__(self, "style_indices", tuple((int(l), int(c)) for l, c in self.style_indices))
        object.__setattr__(self, "extensions", tuple((bytes(t), bytes(d)) for t, d in self.extensions))
        _check_ranges(self)

    @property
    def fps(self) -> Fraction:
        return Fraction(self.fps_num, self.fps_den)

    @property
    def pose_editor(self) -> dict | None:
        """The first b"pose" extension's JSON object, or None (the generator's default editor).

        BitstreamError if it is malformed (format_spec.md "Extension fields"): the header still reads, but no
        picture can be decoded without knowing what yaw and pitch mean."""
        data = self.extension(EXT_POSE)
        if data is None:
            return None
        problem = pose_problem(data)
        if problem:
            raise BitstreamError(f"header extension 'pose' {problem}")
        return json.loads(data.decode("utf-8"))

    @property
    def placement(self):
        """The first `plac` extension as a codec.bitstream.placement.Placement, or None (no placement: the decoder
        shows the face crop). BitstreamError if it is malformed; the header and the frames still read."""
        from codec.bitstream.placement import decode_placement

        data = self.extension(EXT_PLACEMENT)
        if data is None:
            return None
        try:
            return decode_placement(data)
        except BitstreamError as exc:
            raise BitstreamError(f"header extension 'plac' {exc}") from None

    def extension(self, tag: bytes) -> bytes | None:
        """The data of the first extension with this tag (a repeated tag's later copies are ignored)."""
        return next((data for t, data in self.extensions if t == tag), None)

    @property
    def note(self) -> str | None:
        """The first b"note" extension as text; invalid UTF-8 sequences are shown as U+FFFD."""
        data = self.extension(EXT_NOTE)
        return None if data is None else data.decode("utf-8", errors="replace")


def extension_problems(h: "StvHeader") -> list[str]:
    """One line per malformed known extension (the first of each tag): 'header: extension TAG PROBLEM'."""
    from codec.bitstream.background import background_problem
    from codec.bitstream.background_video import background_video_problem
    from codec.bitstream.latent import compact_latent_problem
    from codec.bitstream.placement import decode_placement

    # `plac` is decoded once: its problem, and the source size the background checks need
    placement, placement_error, placement_data = None, None, h.extension(EXT_PLACEMENT)
    if placement_data is not None:
        try:
            placement = decode_placement(placement_data)
        except BitstreamError as exc:
            placement_error = str(exc)
    size = None if placement is None else (placement.width, placement.height)
    checks = {EXT_POSE: pose_problem, EXT_PLACEMENT: lambda data: placement_error,
              EXT_COMPACT_LATENT: compact_latent_problem,
              EXT_BACKGROUND: lambda data: background_problem(data, size),
              EXT_BACKGROUND_VIDEO: lambda data: background_video_problem(data, size, h.frame_count)}
    problems = []
    for tag, check in checks.items():
        data = h.extension(tag)
        problem = check(data) if data is not None else None
        if problem:
            problems.append(f"header: extension '{tag.decode()}' {problem}")
    return problems


def extension_text(tag: bytes, data: bytes) -> str | None:
    """How stvinfo shows a known extension: the text of 'note' and 'pose', a summary of 'plac'; None for an
    unknown tag."""
    if tag not in KNOWN_EXTENSIONS:
        return None
    if tag == EXT_BACKGROUND:
        from codec.bitstream.background import background_summary

        return background_summary(data)
    if tag == EXT_COMPACT_LATENT:
        from codec.bitstream.latent import compact_latent_summary

        return compact_latent_summary(data)
    if tag == EXT_BACKGROUND_VIDEO:
        from codec.bitstream.background_video import background_video_summary

        return background_video_summary(data)
    if tag != EXT_PLACEMENT:
        return data.decode("utf-8", errors="replace")
    from codec.bitstream.placement import decode_placement

    try:
        p = decode_placement(data)
    except BitstreamError as exc:
        return f"malformed: {exc}"
    placed = int((~np.isnan(p.side)).sum())
    return f"source {p.width}x{p.height}, {len(p)} frames, {placed} placed"


def pose_problem(data: bytes) -> str | None:
    """What is wrong with a b"pose" extension's data, or None: a UTF-8 JSON object whose "editor" and "model" are
    strings, plus, for the "styleflow" editor, a "condition" of 17 finite numbers. Other keys are ignored."""
    try:
        spec = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return "is not UTF-8"
    except ValueError:
        return "is not JSON"
    if not isinstance(spec, dict):
        return "is not a JSON object"
    if not isinstance(spec.get("editor"), str) or not isinstance(spec.get("model"), str):
        return 'lacks the strings "editor" and "model"'
    condition = spec.get("condition")
    if spec["editor"] == "styleflow" and not (
        isinstance(condition, list) and len(condition) == 17
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in condition)
    ):
        return 'needs a "condition" of 17 finite numbers for the styleflow editor'
    return None


def _check_ranges(h: StvHeader) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise BitstreamError(f"header: {message}")

    need(1 <= h.width <= 0xFFFF and 1 <= h.height <= 0xFFFF, f"output size {h.width}x{h.height} out of 1..65535")
    need(1 <= h.fps_num <= 0xFFFF_FFFF and 1 <= h.fps_den <= 0xFFFF_FFFF, f"frame rate {h.fps_num}/{h.fps_den} invalid")
    need(h.frame_count is None or 0 <= h.frame_count < FRAME_COUNT_UNKNOWN, f"frame count {h.frame_count} invalid")
    need(1 <= len(h.generator_name.encode("utf-8")) <= 255, "generator name must be 1..255 UTF-8 bytes")
    need(len(h.generator_sha256) == 32, "generator digest must be 32 bytes")
    need(len(h.style_indices) == N_ALPHA, f"need {N_ALPHA} StyleSpace indices, got {len(h.style_indices)}")
    for k, (layer, channel) in enumerate(h.style_indices):
        need(0 <= layer <= MAX_STYLE_LAYER and 0 <= channel <= MAX_STYLE_CHANNEL,
             f"StyleSpace index {k} = ({layer}, {channel}) outside layer 0..{MAX_STYLE_LAYER}, "
             f"channel 0..{MAX_STYLE_CHANNEL}")
    rows, dim = h.id_latent.shape if h.id_latent.ndim == 2 else (0, 0)
    need(1 <= rows <= MAX_LATENT_ROWS and 1 <= dim <= MAX_LATENT_DIM,
         f"ID latent shape {h.id_latent.shape} outside rows 1..{MAX_LATENT_ROWS}, dim 1..{MAX_LATENT_DIM}")
    need(bool(np.isfinite(h.id_latent).all()), "ID latent holds non-finite values")
    need(len(h.extensions) <= 0xFFFF, "too many extension fields")
    for tag, _ in h.extensions:
        need(len(tag) == 4, f"extension tag {tag!r} must be 4 bytes")
    need(0 <= h.flags <= 0xFFFF, "flags must fit in 16 bits")


def encode_header(h: StvHeader, zstd_checksum: bool = False) -> bytes:
    """The header's bytes; `zstd_checksum` adds zstd's optional checksum to the ID latent's frame (the reference
    writer leaves it out; the goldens carry one to show that a reader checks it)."""
    body = HeaderBody.build(
        dict(
            width=h.width,
            height=h.height,
            fps_num=h.fps_num,
            fps_den=h.fps_den,
            frame_count=FRAME_COUNT_UNKNOWN if h.frame_count is None else h.frame_count,
            generator_name=h.generator_name,
            generator_sha256=h.generator_sha256,
            style_indices=[dict(layer=l, channel=c) for l, c in h.style_indices],
            quant=[dict(scale=float(s), offset=float(o)) for s, o in zip(h.quant.scale, h.quant.offset)],
            latent_rows=h.id_latent.shape[0],
            latent_dim=h.id_latent.shape[1],
            latent_zstd=compress(h.id_latent.astype("<f2").tobytes(), checksum=zstd_checksum),
            extensions=[dict(tag=t, data=d) for t, d in h.extensions],
        )
    )
    size = HEADER_PREFIX_SIZE + len(body) + CRC_SIZE
    minor = max(h.version[1], _minor_version_needed(h.extensions))
    prefix = HeaderPrefix.build(
        dict(magic=MAGIC, major=h.version[0], minor=minor, flags=h.flags, header_size=size)
    )
    head = prefix + body
    return head + zlib.crc32(head).to_bytes(4, "little")


def _minor_version_needed(extensions) -> int:
    """The lowest minor version that knows every part of a file with these extensions."""
    tags = {tag for tag, _ in extensions}
    if tags & {EXT_BACKGROUND_VIDEO, EXT_COMPACT_LATENT}:
        return MINOR_VERSION_1_3
    return MINOR_VERSION_1_2 if tags & {EXT_PLACEMENT, EXT_BACKGROUND} else 0


def header_crc(head_without_crc: bytes) -> bytes:
    return zlib.crc32(head_without_crc).to_bytes(4, "little")


def decode_header(data: bytes | memoryview) -> tuple[StvHeader, int]:
    """Parse the header at the start of `data` (the whole file or at least its header). Returns (header, size)."""
    data = memoryview(data)
    # format_spec.md §10 fixes this order, short files included: each check reads only bytes that exist.
    if len(data) == 0:
        raise BitstreamError("empty file (0 bytes), not a .stv file")
    if bytes(data[: len(MAGIC)]) != MAGIC[: len(data)]:
        raise BitstreamError("not a .stv file (bad magic at byte 0)")
    if len(data) >= 10 and data[8] != MAJOR_VERSION:
        raise BitstreamError(f"unsupported .stv version {data[8]}.{data[9]} (this reader reads {MAJOR_VERSION}.x)")
    if len(data) < HEADER_PREFIX_SIZE:
        raise BitstreamError(f"truncated at byte {len(data)}: the header prefix needs {HEADER_PREFIX_SIZE} bytes")
    prefix = HeaderPrefix.parse(data[:HEADER_PREFIX_SIZE])
    size = prefix.header_size
    if size < HEADER_MIN_SIZE:
        raise BitstreamError(
            f"header damaged: header size field (byte 12) says {size} bytes, below the minimum {HEADER_MIN_SIZE}"
        )
    if size > len(data):
        raise BitstreamError(
            f"truncated at byte {len(data)}: the header needs {size} bytes (header size field at byte 12)"
        )
    head = bytes(data[: size - CRC_SIZE])
    if header_crc(head) != bytes(data[size - CRC_SIZE : size]):
        raise BitstreamError(f"header damaged: CRC32 mismatch over bytes 0-{size - CRC_SIZE - 1}")
    return _parse_body(head[HEADER_PREFIX_SIZE:], prefix), size


def _parse_body(body: bytes, prefix) -> StvHeader:
    try:
        fields = HeaderBody.parse(body)
    except (UnicodeDecodeError, construct.StringError):  # construct wraps the first in the second
        raise BitstreamError("header damaged: generator name (byte 33) is not UTF-8") from None
    except (construct.ConstructError, ValueError) as exc:
        raise BitstreamError(f"header damaged: unreadable fields ({_first_line(exc)})") from None
    if fields.body_end != len(body):
        raise BitstreamError(
            f"header damaged: fields end at byte {HEADER_PREFIX_SIZE + fields.body_end} but the header declares "
            f"{HEADER_PREFIX_SIZE + len(body) + CRC_SIZE} bytes"
        )
    rows, dim = fields.latent_rows, fields.latent_dim
    if not (1 <= rows <= MAX_LATENT_ROWS and 1 <= dim <= MAX_LATENT_DIM):
        raise BitstreamError(f"header: ID latent shape {rows}x{dim} outside the format's limits")
    raw = decompress_exact(fields.latent_zstd, rows * dim * 2, "header: ID latent")
    latent = np.frombuffer(raw, dtype="<f2").reshape(rows, dim).astype(np.float16)
    return StvHeader(
        width=fields.width,
        height=fields.height,
        fps_num=fields.fps_num,
        fps_den=fields.fps_den,
        frame_count=None if fields.frame_count == FRAME_COUNT_UNKNOWN else fields.frame_count,
        generator_name=fields.generator_name,
        generator_sha256=fields.generator_sha256,
        style_indices=tuple((e.layer, e.channel) for e in fields.style_indices),
        quant=QuantTable(
            np.array([e.scale for e in fields.quant], np.float32),
            np.array([e.offset for e in fields.quant], np.float32),
        ),
        id_latent=latent,
        extensions=tuple((e.tag, e.data) for e in fields.extensions),
        version=(prefix.major, prefix.minor),
        flags=prefix.flags,
    )


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
