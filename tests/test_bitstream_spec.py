"""format_spec.md is enough to write a decoder: an independent one, written from the spec with struct, zlib and
zstandard only (no codec.bitstream), reads every golden file and finds what the golden JSON lists."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import zstandard

DATA = Path(__file__).resolve().parent / "data"


def spec_decode(data: bytes) -> dict:
    """Decode a whole intact .stv file following format_spec.md §3-§7, literally."""
    assert data[:8] == b"\x89STV\r\n\x1a\n"
    major, minor, flags, header_size = struct.unpack_from("<BBHI", data, 8)
    assert major == 1
    assert zlib.crc32(data[: header_size - 4]) == struct.unpack_from("<I", data, header_size - 4)[0]
    width, height, fps_num, fps_den, frame_count = struct.unpack_from("<HHIII", data, 16)
    n = data[32]
    name = data[33 : 33 + n].decode("utf-8")
    digest = data[33 + n : 65 + n]
    indices = [struct.unpack_from("<HH", data, 65 + n + 4 * k) for k in range(32)]
    quant = [struct.unpack_from("<ff", data, 193 + n + 8 * k) for k in range(35)]
    rows, dim, zsize = struct.unpack_from("<HHI", data, 473 + n)
    at = 481 + n
    latent_bytes = zstandard.ZstdDecompressor().decompress(data[at : at + zsize])
    assert len(latent_bytes) == rows * dim * 2
    at += zsize
    (n_ext,) = struct.unpack_from("<H", data, at)
    at += 2
    extensions = []
    for _ in range(n_ext):
        tag, length = data[at : at + 4], struct.unpack_from("<I", data, at + 4)[0]
        extensions.append((tag.decode("latin-1"), length))
        at += 8 + length
    assert at == header_size - 4
    frames = []
    at = header_size
    while at < len(data):
        assert data[at : at + 4] == b"\xc5STC"
        profile, _reserved, count, first, size = struct.unpack_from("<BBHII", data, at + 4)
        payload = data[at + 16 : at + 16 + size]
        assert zlib.crc32(data[at + 4 : at + 16 + size]) == struct.unpack_from("<I", data, at + 16 + size)[0]
        assert first == len(frames)
        if profile == 0:
            records = [list(struct.unpack_from("<35h", payload, 70 * t)) for t in range(count)]
        else:
            planes = zstandard.ZstdDecompressor().decompress(payload)
            assert len(planes) == 70 * count
            z = [planes[i] | (planes[35 * count + i] << 8) for i in range(35 * count)]
            d = [(v >> 1) ^ -(v & 1) for v in z]  # zigzag back to signed
            records = [[0] * 35 for _ in range(count)]
            for k in range(35):
                value = 0
                for t in range(count):
                    value = (value + d[k * count + t] + 32768) % 65536 - 32768  # 16-bit wrap-around
                    records[t][k] = value
        frames += records
        at += 20 + size
    values = [[o + s * q for (s, o), q in zip(quant, record)] for record in frames]
    return dict(size=(width, height), fps=(fps_num, fps_den), frame_count=frame_count, name=name,
                digest=digest.hex(), indices=indices, quant=quant, latent=np.frombuffer(latent_bytes, "<f2"),
                extensions=extensions, values=values, flags=flags, minor=minor)


@pytest.mark.parametrize("name", ["golden_raw.stv", "golden_entropy.stv", "golden_ext.stv", "golden_v11.stv"])
def test_a_decoder_written_from_the_spec_reads_the_golden_files(name):
    got = spec_decode((DATA / name).read_bytes())
    expected = json.loads((DATA / name).with_suffix(".json").read_text())
    stream = expected["streams"][0]
    assert got["size"] == (stream["width"], stream["height"])
    assert "%d/%d" % got["fps"] == stream["r_frame_rate"]
    assert got["name"] == stream["generator"]["name"] and got["digest"] == stream["generator"]["sha256"]
    assert got["latent"].size == stream["id_latent"]["rows"] * stream["id_latent"]["dim"]
    params = stream["parameters"]
    assert got["indices"][:32] == [(p["layer"], p["channel"]) for p in params[:32]]
    assert got["quant"] == [(p["scale"], p["offset"]) for p in params]
    assert [e[0] for e in got["extensions"]] == [e["tag"] for e in expected["format"]["extensions"]]
    count = expected["format"]["frame_count_in_header"]
    assert got["frame_count"] == (0xFFFFFFFF if count is None else count)
    # float32 scale/offset widened exactly, arithmetic in binary64: the very same numbers
    assert got["values"] == [list(f["values"].values()) for f in expected["frames"]]
