"""zstd as the format uses it: one frame, content size declared, no zstd checksum (our CRC32 covers it), and a
decompressor that refuses any frame whose declared size is not exactly the size the header fields imply."""

from __future__ import annotations

import zstandard

from codec.errors import BitstreamError

ZSTD_LEVEL = 19  # small inputs: the strongest level is cheap, and a fixed level keeps output deterministic


def compress(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=False, write_content_size=True).compress(data)


def decompress_exact(frame: bytes, size: int, what: str) -> bytes:
    """Decompress one zstd frame that must declare and produce exactly `size` bytes, with nothing after it.

    The declared size is checked before decompressing, so no allocation ever exceeds `size` (which callers
    bound by the format's limits)."""
    try:
        declared = zstandard.frame_content_size(frame)
    except zstandard.ZstdError:
        raise BitstreamError(f"{what}: not a zstd frame") from None
    if declared != size:
        raise BitstreamError(f"{what}: zstd frame declares {declared} bytes, expected exactly {size}")
    decoder = zstandard.ZstdDecompressor().decompressobj()
    try:
        out = decoder.decompress(frame)
    except zstandard.ZstdError as exc:
        raise BitstreamError(f"{what}: corrupt zstd data ({exc})") from None
    if len(out) != size or not decoder.eof or decoder.unused_data:
        raise BitstreamError(f"{what}: zstd frame is incomplete or followed by stray bytes")
    return out
