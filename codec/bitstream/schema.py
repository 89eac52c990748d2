"""Byte layout of the .stv format as `construct` schemas, plus the constants and limits every part shares.

format_spec.md is the normative description; this module is its executable form. All integers and floats are
little-endian. Nothing here imports torch.
"""

from __future__ import annotations

from construct import (
    Array,
    Bytes,
    Float32l,
    Int8ul,
    Int16ul,
    Int32ul,
    PascalString,
    Prefixed,
    PrefixedArray,
    GreedyBytes,
    Struct,
    Tell,
)

MAGIC = b"\x89STV\r\n\x1a\n"  # PNG-style: a high bit, CR LF and ^Z catch text-mode and 7-bit mangling
MAJOR_VERSION = 1
MINOR_VERSION = 1  # 1.1: the reader rules of format_spec.md 1.1; the bytes of 1.0 are unchanged (a 1.0 file reads as before)
SYNC = b"\xc5STC"  # starts every chunk; a reader scans for it to resync after damage

N_ALPHA = 32
PARAM_NAMES: tuple[str, ...] = tuple(f"alpha_{k:02d}" for k in range(N_ALPHA)) + ("yaw", "pitch", "roll")
N_PARAMS = len(PARAM_NAMES)  # 35
RECORD_SIZE = 2 * N_PARAMS  # 70 bytes: 35 little-endian int16

FRAME_COUNT_UNKNOWN = 0xFFFF_FFFF  # header frame count while streaming (never patched by the writer)

PROFILE_RAW = 0
PROFILE_ENTROPY = 1
PROFILE_ARITH = 2  # 1.3: context-adaptive rANS over predicted residuals (codec.bitstream.arith)
PROFILE_NAMES = {PROFILE_RAW: "raw", PROFILE_ENTROPY: "entropy", PROFILE_ARITH: "arith"}
PROFILE_CODES = {name: code for code, name in PROFILE_NAMES.items()}
PROFILES_FOR_TESTS = range(240, 256)  # never given a meaning: the "unknown profile" a reader must step over

# Limits a reader enforces before allocating anything (format_spec.md "Limits").
MAX_LATENT_ROWS = 64
MAX_LATENT_DIM = 4096
MAX_CHUNK_FRAMES = 0xFFFF
MAX_FRAME_COUNT = FRAME_COUNT_UNKNOWN - 1  # frames 0 .. 0xFFFFFFFD; a chunk's f + c may not exceed this
MAX_ZSTD_WINDOW = 8 << 20  # RFC 8878's recommended decoder minimum; every field here decodes to less
MAX_STYLE_LAYER = 25  # 26 style layers in a 1024x1024 StyleGAN2 (StyleSpace convention, format_spec.md)
MAX_STYLE_CHANNEL = 511

# The fixed prefix: enough to know the version and how many bytes the whole header takes.
HeaderPrefix = Struct(
    "magic" / Bytes(8),
    "major" / Int8ul,
    "minor" / Int8ul,
    "flags" / Int16ul,
    "header_size" / Int32ul,
)
HEADER_PREFIX_SIZE = HeaderPrefix.sizeof()  # 16

StyleIndex = Struct("layer" / Int16ul, "channel" / Int16ul)
QuantEntry = Struct("scale" / Float32l, "offset" / Float32l)
Extension = Struct("tag" / Bytes(4), "data" / Prefixed(Int32ul, GreedyBytes))

# The header body: everything after the prefix and before the trailing CRC32.
HeaderBody = Struct(
    "width" / Int16ul,
    "height" / Int16ul,
    "fps_num" / Int32ul,
    "fps_den" / Int32ul,
    "frame_count" / Int32ul,
    "generator_name" / PascalString(Int8ul, "utf8"),
    "generator_sha256" / Bytes(32),
    "style_indices" / Array(N_ALPHA, StyleIndex),
    "quant" / Array(N_PARAMS, QuantEntry),
    "latent_rows" / Int16ul,
    "latent_dim" / Int16ul,
    "latent_zstd" / Prefixed(Int32ul, GreedyBytes),
    "extensions" / PrefixedArray(Int16ul, Extension),
    "body_end" / Tell,  # bytes the fields took: must equal the declared header size (no slack, no overlap)
)
FRAME_COUNT_OFFSET = HEADER_PREFIX_SIZE + 12  # byte offset of frame_count in the file (the writer patches it)

ChunkHead = Struct(
    "sync" / Bytes(4),
    "profile" / Int8ul,
    "reserved" / Int8ul,
    "count" / Int16ul,
    "first_frame" / Int32ul,
    "payload_size" / Int32ul,
)
CHUNK_HEAD_SIZE = ChunkHead.sizeof()  # 16
CRC_SIZE = 4
CHUNK_OVERHEAD = CHUNK_HEAD_SIZE + CRC_SIZE  # 20 bytes around every payload

# The smallest possible header: every fixed field, a 1-byte generator name, an empty ID latent field and no
# extensions (a real header is larger: the latent's zstd frame takes at least 10 bytes).
HEADER_MIN_SIZE = HEADER_PREFIX_SIZE + 16 + 1 + 1 + 32 + 4 * N_ALPHA + 8 * N_PARAMS + 8 + 2 + CRC_SIZE  # 488
