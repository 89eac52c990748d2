"""zstd as the format uses it: one frame, content size declared, no dictionary, a window of at most 8 MiB, an
optional zstd checksum (the writer omits it: our CRC32 covers the bytes; a reader checks it when present), and a
decompressor that refuses any frame whose declared size is not exactly the size the header fields imply."""

from __future__ import annotations

import zstandard

from codec.bitstream.schema import MAX_ZSTD_WINDOW
from codec.errors import BitstreamError

ZSTD_LEVEL = 19  # small inputs: the strongest level is cheap, and a fixed level keeps output deterministic
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # a Zstandard frame; skippable frames (0x184D2A5?) are not one


def compress(data: bytes, checksum: bool = False) -> bytes:
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=checksum, write_content_size=True).compress(data)


def decompress_exact(frame: bytes, size: int, what: str) -> bytes:
    """Decompress one zstd frame that must declare and produce exactly `size` bytes, with nothing after it.

    The frame header is checked before decompressing (declared size, dictionary, window), so no allocation ever
    exceeds `size` (which callers bound by the format's limits). Messages do not quote the zstd library, so they
    are the same with every version of it."""
    if bytes(frame[:4]) != ZSTD_MAGIC:
        raise BitstreamError(f"{what}: not a zstd frame")
    try:
        params = zstandard.get_frame_parameters(frame)
    except zstandard.ZstdError:
        raise BitstreamError(f"{what}: not a zstd frame (unreadable frame header)") from None
    if params.content_size == zstandard.CONTENTSIZE_UNKNOWN:
        raise BitstreamError(f"{what}: zstd frame does not declare its size, expected exactly {size}")
    if params.content_size != size:
        raise BitstreamError(f"{what}: zstd frame declares {params.content_size} bytes, expected exactly {size}")
    if params.dict_id:
        raise BitstreamError(f"{what}: zstd frame needs dictionary {params.dict_id}; the format uses none")
    if params.window_size > MAX_ZSTD_WINDOW:
        raise BitstreamError(f"{what}: zstd window of {params.window_size} bytes exceeds {MAX_ZSTD_WINDOW}")
    decoder = zstandard.ZstdDecompressor().decompressobj()
    try:
        out = decoder.decompress(frame)
    except zstandard.ZstdError:
        checksum = " or fails its zstd checksum" if params.has_checksum else ""
        raise BitstreamError(f"{what}: zstd data does not decode{checksum}") from None
    if len(out) != size or not decoder.eof or decoder.unused_data:
        raise BitstreamError(f"{what}: zstd frame is incomplete or followed by stray bytes")
    return out
