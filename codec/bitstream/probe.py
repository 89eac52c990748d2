"""What `stvinfo` reports, as plain data: an ffprobe-shaped dict (`format`, `streams`, `frames`) and the figures
of the readable summary. Kept apart from the CLI so that services can probe a file without click."""

from __future__ import annotations

from collections import Counter

import numpy as np

from codec.bitstream.chunk import ChunkInfo

from codec.bitstream.header import EXT_BACKGROUND, EXT_BACKGROUND_VIDEO, KNOWN_EXTENSIONS, extension_text
from codec.bitstream.quant import dequantise
from codec.bitstream.reader import StvReader
from codec.bitstream.schema import N_ALPHA, PARAM_NAMES, PROFILE_RAW, RECORD_SIZE


def profile_summary(reader: StvReader) -> str:
    counts = Counter(c.profile_name for c in reader.chunks)
    if not counts:
        return "none (no chunks)"
    if len(counts) == 1:
        return next(iter(counts))
    return "mixed (" + ", ".join(f"{name} {n} chunks" for name, n in sorted(counts.items())) + ")"


def duration_seconds(reader: StvReader) -> float:
    return float(len(reader) * reader.header.fps_den / reader.header.fps_num)


def format_info(reader: StvReader) -> dict:
    h = reader.header
    duration = duration_seconds(reader)
    n = len(reader)
    return {
        "filename": reader.name,
        "format_name": "stv",
        "format_long_name": "stv talking-head parameters (StyleGAN2 ID latent + 35 numbers per frame)",
        "version": f"{h.version[0]}.{h.version[1]}",
        "flags": h.flags,
        "size": reader.file_size,
        "header_size": reader.header_size,
        "nb_streams": 1,
        "nb_frames": n,
        "frame_count_in_header": h.frame_count,  # null: unknown (written as a stream)
        "nb_chunks": len(reader.chunks),
        "profile": profile_summary(reader),
        "duration": duration,
        "bit_rate": round(reader.file_size * 8 / duration) if duration > 0 else None,
        "bytes_per_frame": (reader.file_size - reader.header_size) / n if n else None,
        **background_rate(reader, duration),
        "extensions": [
            {
                "tag": tag.decode("latin-1"),
                "size": len(data),
                "known": tag in KNOWN_EXTENSIONS,
                **({"text": extension_text(tag, data)} if tag in KNOWN_EXTENSIONS else {}),
            }
            for tag, data in h.extensions
        ],
        "damage": reader.validate(),
    }


def background_bytes(header) -> int | None:
    """Bytes of the scene behind the face (the first `bgnd` and `bgvd` extensions' data), None without either."""
    parts = [header.extension(tag) for tag in (EXT_BACKGROUND, EXT_BACKGROUND_VIDEO)]
    parts = [data for data in parts if data is not None]
    return sum(len(data) for data in parts) if parts else None


def background_rate(reader: StvReader, duration: float) -> dict:
    """(1.2) `background_bytes` and `bit_rate_without_background` for a file that carries a background; {}
    otherwise, so files without one print exactly what they did."""
    size = background_bytes(reader.header)
    if size is None:
        return {}
    rate = round((reader.file_size - size) * 8 / duration) if duration > 0 else None
    return {"background_bytes": size, "bit_rate_without_background": rate}


def stream_info(reader: StvReader) -> dict:
    h = reader.header
    rate = f"{h.fps_num}/{h.fps_den}"
    return {
        "index": 0,
        "codec_type": "video",
        "codec_name": "stv",
        "width": h.width,
        "height": h.height,
        "r_frame_rate": rate,
        "avg_frame_rate": rate,
        "time_base": f"{h.fps_den}/{h.fps_num}",
        "nb_frames": len(reader),
        "duration": duration_seconds(reader),
        "generator": {"name": h.generator_name, "sha256": h.generator_sha256.hex()},
        "id_latent": {"rows": int(h.id_latent.shape[0]), "dim": int(h.id_latent.shape[1]), "dtype": "float16"},
        "parameters": [
            {
                "name": name,
                **({"layer": h.style_indices[k][0], "channel": h.style_indices[k][1]} if k < N_ALPHA else {}),
                "scale": float(h.quant.scale[k]),
                "offset": float(h.quant.offset[k]),
            }
            for k, name in enumerate(PARAM_NAMES)
        ],
    }


def frames_info(reader: StvReader, start: int = 0, stop: int | None = None) -> list[dict]:
    """One entry per intact frame in [start, stop): where its bytes are and its 35 dequantised values.

    Raw chunks: `offset`/`size` are the record's own 70 bytes. Entropy chunks code their frames jointly, so
    `offset`/`size` give the chunk payload's bytes and `shared_by` the number of frames coded in them."""
    stop = len(reader) if stop is None else stop
    h = reader.header
    frames = []
    for chunk in reader.chunks:
        lo, hi = max(start, chunk.first_frame), min(stop, chunk.frames.stop)
        if lo >= hi:
            continue
        values = dequantise(reader.chunk_records(chunk)[lo - chunk.first_frame : hi - chunk.first_frame], h.quant)
        frames.extend(_frame_entry(reader, chunk, index, row) for index, row in zip(range(lo, hi), values))
    return frames


def _frame_entry(reader: StvReader, chunk: ChunkInfo, index: int, values: np.ndarray) -> dict:
    h = reader.header
    entry = {
        "index": index,
        "pts": index,
        "pts_time": float(index * h.fps_den / h.fps_num),
        "chunk_offset": chunk.offset,
        "profile": chunk.profile_name,
    }
    if chunk.profile == PROFILE_RAW:
        entry.update(offset=chunk.payload_offset + (index - chunk.first_frame) * RECORD_SIZE, size=RECORD_SIZE)
    else:
        entry.update(offset=chunk.payload_offset, size=chunk.payload_size, shared_by=chunk.count)
    entry["values"] = {name: float(v) for name, v in zip(PARAM_NAMES, values)}
    return entry


def probe(reader: StvReader, start: int = 0, stop: int | None = None) -> dict:
    return {
        "format": format_info(reader),
        "streams": [stream_info(reader)],
        "frames": frames_info(reader, start, stop),
    }
