"""Write the golden .stv files of tests/data, their expected `stvinfo --json`, and the worked hex dump of
format_spec.md (between its `hexdump:begin` / `hexdump:end` markers).

    python tools/make_golden_files.py [--out tests/data] [--spec format_spec.md]

The parameter tracks are closed-form (sines and ramps, no random generator) so the files depend only on this
script and the zstd library. The golden files are committed: tests read them, they never regenerate them.

    golden_raw.stv       raw profile, 3 frames in chunks of 2 + 1, ID latent 2x8: the spec's worked example
    golden_entropy.stv   entropy-coded profile, 60 frames in chunks of 25, ID latent 4x16
    golden_ext.stv       two extension fields (a known 'note', an unknown 'zzz1' a reader must skip),
                         profiles mixed (raw then entropy), frame count left "unknown" (written as a stream)

Those three are format 1.0 and stay byte-identical. The 1.1 goldens (format_spec.md §13 "Conformance" says which
reader obligation each one exercises) name the shipped tiny-64 generator consistently (its digest, its 10x64
W+ latent, layers and channels it has):

    golden_v11.stv            minor 1, undefined flags set, 30000/1001 fps, 'pose' extension, int16 extremes,
                              zstd checksums (ID latent and one entropy chunk), raw and entropy chunks
    golden_ext11.stv          header only, frame count 0; extension edge cases (repeated 'note', invalid UTF-8,
                              a non-ASCII and an empty unknown tag)
    golden_bad_pose.stv       a 'pose' extension that is not JSON: readable, but no picture can be decoded
    golden_unknown_profile.stv  a chunk of a profile no reader knows (250, kept for tests), whose payload holds a
                              valid-looking chunk: stepped over by its length, never searched
    golden_damaged.stv        CRC damage, a gap without damaged bytes, overlapping and straddling chunks, stray
                              bytes, and a last chunk that the end of the file cuts
    golden_gap_bound.stv      frame count unknown: a first chunk at frame 2, a chunk too far ahead to believe,
                              a chunk whose frame indices overflow, a last chunk cut by the end of the file
    golden_count_beyond.stv   24 frames whose header promises 100000 (the file ends on a chunk boundary)
    golden_header_only.stv    a header alone that promises 3 frames
    golden_short.stv, golden_v2.stv, golden_header_crc.stv   unreadable: their expected error line

The 1.2 goldens (minor 2: a 'plac' extension, the face's placement in the source picture):

    golden_placement.stv      12 frames of a 1280x720 source, frame 5 without placement, an entropy chunk
    golden_bad_placement.stv  a 'plac' whose values' zstd frame declares the wrong size: frames read, no placement
    golden_background.stv     'plac' and a 'bgnd' still (a 1280x720 WebP gradient)
    golden_bad_background.stv a 'bgnd' whose picture is not the source's size: frames read, no background

The 1.3 goldens (minor 3: the `arith` chunk profile, format_spec.md §7b; the compact ID latent `idpc`; a
`bgvd` extension, the scene behind the face as a low-rate AV1 video in IVF):

    golden_arith.stv          40 frames: two arith chunks (regions 20, 10, 2, 3; one holds int16 extremes, so
                              residuals wrap and take the widest categories), then an entropy chunk
    golden_bad_arith.stv      arith chunks: intact; CRC-valid but its coder words do not end with its last value
                              (damage); a flipped bit (CRC mismatch, resync); intact
    golden_compact_latent.stv an `idpc` compact ID latent (10x64 in the shipped tiny basis) beside a 1x1 zero
                              latent field, 12 frames in one arith chunk
    golden_background_video.stv      'plac', the 'bgnd' still and a 12-frame 1280x720 'bgvd' (a square moving over
                                     the gradient)
    golden_bad_background_video.stv  a 'bgvd' that holds 9 frames for the 12 of the stream, whose frame 4's bytes
                                     are not AV1: --validate reports the count; a decoder conceals frames 4-11

Each readable golden has NAME.json (what `stvinfo --json` prints) and, when damaged, NAME.validate.txt (what
`stvinfo --validate` prints; it exits 1); each unreadable one has NAME.error.txt (the reader's message).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import zstandard

from codec.bitstream import N_PARAMS, QuantTable, StvHeader, StvReader, StvWriter, quantise
from codec.bitstream.chunk import chunk_bytes, encode_chunk, encode_payload
from codec.bitstream.compress import compress
from codec.bitstream.background import encode_background
from codec.bitstream.background_video import background_video_bytes, encode_background_video, ivf_file
from codec.bitstream.header import (EXT_BACKGROUND, EXT_BACKGROUND_VIDEO, EXT_COMPACT_LATENT, EXT_PLACEMENT,
                                    encode_header)
from codec.bitstream.layout import hexdump
from codec.bitstream.placement import Placement, encode_placement
from codec.bitstream.probe import probe
from codec.bitstream.schema import PROFILE_ARITH, PROFILE_ENTROPY, PROFILE_RAW
from codec.errors import BitstreamError

# StyleSpace indices of an unofficial re-implementation (DESIGN §7), in (layer, channel) form: a plausible table.
EXAMPLE_INDICES = (
    [(6, c) for c in (113, 202, 214, 259, 378, 501)] + [(11, c) for c in (6, 41, 78, 86, 313, 361, 365)]
    + [(8, 17), (8, 387), (14, 12), (15, 45), (5, 50), (5, 505), (6, 131), (8, 390), (9, 63), (11, 257),
       (12, 82), (12, 414), (14, 239), (17, 28), (8, 6), (8, 28), (9, 30), (11, 320), (9, 409)]
)
assert len(EXAMPLE_INDICES) == 32


def tracks(n: int, phase: float = 0.0) -> np.ndarray:
    """Smooth closed-form parameter tracks (n, 35): alphas as slow sines, yaw/pitch/roll as slower sweeps."""
    t = np.arange(n, dtype=np.float64)[:, None]
    k = np.arange(N_PARAMS, dtype=np.float64)[None, :]
    values = 0.8 * np.sin(2 * np.pi * t / (40 + 3 * k) + phase + k)
    values[:, 32:34] *= 10  # yaw, pitch in slider units
    values[:, 34] *= 5  # roll in degrees
    return values


def id_latent(rows: int, dim: int) -> np.ndarray:
    grid = np.arange(rows * dim, dtype=np.float64).reshape(rows, dim)
    return (np.sin(grid * 0.37) * 1.5).astype(np.float16)


def header(rows: int, dim: int, params: np.ndarray, extensions=()) -> StvHeader:
    """The 1.0 goldens' header: its digest is that of no real weights, so no decoder renders these files."""
    return StvHeader(
        version=(1, 0),
        width=256,
        height=256,
        fps_num=25,
        fps_den=1,
        generator_name="tiny-64",
        generator_sha256=hashlib.sha256(b"golden example weights").digest(),
        style_indices=EXAMPLE_INDICES,
        quant=QuantTable.from_data(params),
        id_latent=id_latent(rows, dim),
        extensions=extensions,
    )


class _Pipe(io.BytesIO):
    """An in-memory stream that, like a pipe, cannot seek: the writer leaves the frame count "unknown"."""

    def seekable(self) -> bool:
        return False


# --- format 1.1 goldens ----------------------------------------------------------------------------------------

TINY_SHA256 = "846361d99531e5f7152802b1503d6488684a6644f491a4f65c6aa25bee91be37"  # weights/manifest.json "tiny"
TINY_CHANNELS = (96, 96, 96, 96, 96, 96, 64, 64, 64, 48, 48, 48, 32, 32)  # format_spec.md §8, layers 0..13
TINY_CONV_LAYERS = (0, 2, 3, 5, 6, 8, 9, 11, 12)  # the toRGB layers (1, 4, 7, 10, 13) are left out
TINY_INDICES = [(layer, (7 * k + 3) % TINY_CHANNELS[layer]) for k, layer in
                enumerate(TINY_CONV_LAYERS[k % len(TINY_CONV_LAYERS)] for k in range(32))]


def tiny_header(params: np.ndarray, count: int | None, extensions=(), flags: int = 0, fps=(25, 1)) -> StvHeader:
    return StvHeader(
        width=640, height=360, fps_num=fps[0], fps_den=fps[1], generator_name="tiny-64",
        generator_sha256=bytes.fromhex(TINY_SHA256), style_indices=TINY_INDICES, quant=QuantTable.from_data(params),
        id_latent=id_latent(10, 64), frame_count=count, extensions=extensions, flags=flags,
    )


def tiny_records(n: int, phase: float) -> tuple[StvHeader, np.ndarray]:
    params = tracks(n, phase)
    head = tiny_header(params, n)
    return head, quantise(params, head.quant)[0]


def extremes(n: int) -> np.ndarray:
    """int16 records at the ends of the range, jumping between them (the entropy deltas wrap around)."""
    records = np.zeros((n, N_PARAMS), np.int16)
    records[0::2, 0::2] = 32767
    records[0::2, 1::2] = -32768
    records[1::2, 0::2] = -32768
    records[1::2, 1::2] = 32767
    return records


def raw(records: np.ndarray, first: int) -> bytes:
    return encode_chunk(records, first, PROFILE_RAW)


def entropy(records: np.ndarray, first: int, checksum: bool = False) -> bytes:
    if not checksum:
        return encode_chunk(records, first, PROFILE_ENTROPY)
    planes = zstandard.ZstdDecompressor().decompress(encode_payload(records, PROFILE_ENTROPY))
    return chunk_bytes(PROFILE_ENTROPY, len(records), first, compress(planes, checksum=True))


def v11_files() -> dict[str, bytes]:
    files = {}
    params = tracks(12, phase=1.5)
    pose = b'{"editor": "linear", "model": "tiny-pose"}'
    head = tiny_header(params, 12, [(b"pose", pose), (b"note", "1.1 golden: \u00e9 in UTF-8".encode())],
                       flags=0x0005, fps=(30000, 1001))
    records = quantise(params, head.quant)[0]
    records[:4] = extremes(4)
    records[4:10:2] = extremes(6)[0::2]
    files["golden_v11.stv"] = (encode_header(head, zstd_checksum=True) + raw(records[:4], 0)
                               + entropy(records[4:10], 4, checksum=True) + entropy(records[10:], 10))

    extensions = [(b"note", b"first note, bad UTF-8: \xff\xfe"), (b"\xe9t\xe9!", b"non-ASCII tag"),
                  (b"zzz2", b""), (b"note", b"a repeated note: ignored")]
    files["golden_ext11.stv"] = encode_header(tiny_header(params, 0, extensions))
    bad_pose = tiny_header(params, 12, [(b"pose", b"{editor: linear}")])
    files["golden_bad_pose.stv"] = encode_header(bad_pose) + raw(quantise(params, bad_pose.quant)[0], 0)

    head, records = tiny_records(12, 0.2)
    inner = raw(records[4:8][::-1].copy(), 4)  # a valid chunk hidden in the payload: a reader never looks inside
    files["golden_unknown_profile.stv"] = (encode_header(head) + raw(records[:4], 0)
                                           + chunk_bytes(250, 4, 4, b"future profile " + inner) + raw(records[8:], 8))

    head, records = tiny_records(40, 0.4)
    crc_hit = bytearray(raw(records[4:8], 4))
    crc_hit[30] ^= 0x01
    cut = raw(records[32:36], 32)
    files["golden_damaged.stv"] = (
        encode_header(head) + raw(records[0:4], 0) + bytes(crc_hit) + raw(records[8:12], 8)
        + raw(records[16:20], 16)  # frames 12-15: no chunk, no bytes
        + raw(records[14:18], 14)  # overlaps frames already read
        + entropy(records[20:24], 20) + raw(records[22:26], 22)  # a partial overlap
        + raw(records[24:28], 24) + b"stray" + raw(records[28:32], 28)
        + encode_chunk(np.zeros((4, N_PARAMS), np.int16), 38, PROFILE_RAW)  # frames 38-41 straddle the count 40
        + cut[: len(cut) // 2]
    )

    head, records = tiny_records(14, 0.6)
    stream = tiny_header(tracks(14, 0.6), None)
    files["golden_gap_bound.stv"] = (
        encode_header(stream) + raw(records[2:6], 2) + raw(records[:4], 70000) + raw(records[6:10], 6)
        + raw(records[:4], 0xFFFF_FFFD - 2) + raw(records[10:14], 10)
        + raw(records[:4], 14)[:30]  # a last chunk cut by the end of the file: how many frames it held is unknown
    )

    head, records = tiny_records(24, 0.8)
    files["golden_count_beyond.stv"] = encode_header(tiny_header(tracks(24, 0.8), 100_000)) + entropy(records, 0)
    files["golden_header_only.stv"] = encode_header(tiny_header(tracks(3), 3))

    intact = files["golden_v11.stv"]
    size = int.from_bytes(intact[12:16], "little")
    crc = bytearray(intact)
    crc[100] ^= 0x40
    files["golden_short.stv"] = intact[:12]
    files["golden_v2.stv"] = intact[:8] + b"\x02\x00"
    files["golden_header_crc.stv"] = bytes(crc[: size + 40])
    return files


def v12_files() -> dict[str, bytes]:
    n = 12
    t = np.arange(n, dtype=np.float64)
    centre = np.stack([640 + 40 * np.sin(t / 3), 330 + 12 * np.cos(t / 4)], axis=1)
    side = 420 + 6 * np.sin(t / 5)
    centre[5], side[5] = np.nan, np.nan  # a frame whose face was not found: no placement
    plac = encode_placement(Placement(1280, 720, centre, side))
    params = tracks(n, phase=2.5)
    head = tiny_header(params, n, [(EXT_PLACEMENT, plac)])
    files = {"golden_placement.stv": encode_header(head) + entropy(quantise(params, head.quant)[0], 0)}
    width, height, count, size = struct.unpack_from("<HHII", plac)
    lying = struct.pack("<HHII", width, height, count + 1, size) + plac[12:]  # claims 13 frames; its values hold 12
    head = tiny_header(params, n, [(EXT_PLACEMENT, lying)])
    files["golden_bad_placement.stv"] = encode_header(head) + entropy(quantise(params, head.quant)[0], 0)
    y, x = np.mgrid[0:720, 0:1280]
    gradient = np.stack([x * 255 // 1279, y * 255 // 719, np.full_like(x, 96)], axis=-1).astype(np.uint8)
    for name, picture in (("golden_background.stv", gradient), ("golden_bad_background.stv", gradient[::2, ::2])):
        head = tiny_header(params, n, [(EXT_PLACEMENT, plac), (EXT_BACKGROUND, encode_background(picture, 50))])
        files[name] = encode_header(head) + entropy(quantise(params, head.quant)[0], 0)
    return files


REGIONS = (20, 10, 2, 3)  # the tiny channel table's regions: mouth and jaw, eyes and brows, pupils; then pose


def arith(records: np.ndarray, first: int) -> bytes:
    return encode_chunk(records, first, PROFILE_ARITH, REGIONS)


def v13_files() -> dict[str, bytes]:
    return {**arith_files(), **background_video_files()}


def arith_files() -> dict[str, bytes]:
    head, records = tiny_records(40, 3.0)
    head = replace_version(head, 3)
    records[20:24] = extremes(4)
    files = {"golden_arith.stv": encode_header(head) + arith(records[:16], 0) + arith(records[16:32], 16)
             + entropy(records[32:], 32)}
    head, records = tiny_records(32, 3.5)
    head = replace_version(head, 3)
    good = arith(records[8:16], 8)
    words_end = bytearray(good[16:-4])
    words_end[-4] ^= 0x01  # the coder's last word: still not zero, but the values no longer end there
    crc_hit = bytearray(arith(records[16:24], 16))
    crc_hit[40] ^= 0x10
    files["golden_bad_arith.stv"] = (encode_header(head) + arith(records[:8], 0)
                                     + chunk_bytes(PROFILE_ARITH, 8, 8, bytes(words_end)) + bytes(crc_hit)
                                     + arith(records[24:], 24))
    head, records = tiny_records(12, 4.0)
    files["golden_compact_latent.stv"] = encode_header(compact_header(head)) + arith(records, 0)
    return files


def compact_header(head: StvHeader) -> StvHeader:
    """`head` with an `idpc` compact ID latent in the shipped tiny basis instead of its own latent: closed-form
    integer coefficients (no float projection, so the bytes are the same on every machine), row steps 2^-5..2^-3."""
    from dataclasses import replace

    from codec.bitstream.latent import CompactLatent, encode_compact_latent, read_basis, step_exponent

    basis_file = Path(__file__).resolve().parents[1] / "weights" / "tiny-64-latent-basis.safetensors"
    basis = read_basis(basis_file)
    r, j = np.mgrid[0:10, 0:64]
    coefficients = np.where(j < 24, (r * 7 + j * 3) % 17 - 8, 0) * (24 - np.minimum(j, 24)) // 3
    coefficients[0, 0] = -700  # a wide category: low bits in two pieces
    steps = (2.0 ** -(5 - np.arange(10) // 4)).astype(np.float32)
    compact = CompactLatent(hashlib.sha256(basis_file.read_bytes()).digest(), coefficients.astype(np.int32), steps,
                            np.array([step_exponent(s) for s in steps], np.int8))
    data = encode_compact_latent(compact, basis)
    return replace(head, id_latent=np.zeros((1, 1), np.float16), extensions=((EXT_COMPACT_LATENT, data),))


def replace_version(head: StvHeader, minor: int) -> StvHeader:
    from dataclasses import replace

    return replace(head, version=(1, minor))


def background_video_files() -> dict[str, bytes]:
    """The background video goldens, over golden_background.stv's placement, still and tracks."""
    still = StvReader(v12_files()["golden_background.stv"]).header
    params = tracks(12, phase=2.5)
    video = encode_background_video(moving_square(12), Fraction(25), 100)
    head = tiny_header(params, 12, [*still.extensions, (EXT_BACKGROUND_VIDEO, video)])
    files = {"golden_background_video.stv": encode_header(head) + entropy(quantise(params, head.quant)[0], 0)}
    frames = list(background_video_bytes(video))[:9]
    frames[4] = bytes(len(frames[4]))  # zeros: not an AV1 temporal unit
    short = ivf_file(frames, 1280, 720, Fraction(25))
    head = tiny_header(params, 12, [*still.extensions, (EXT_BACKGROUND_VIDEO, short)])
    files["golden_bad_background_video.stv"] = encode_header(head) + entropy(quantise(params, head.quant)[0], 0)
    return files


def moving_square(n: int) -> list[np.ndarray]:
    """n 1280x720 frames: golden_background.stv's gradient with a grey square sliding across (a moving hand)."""
    y, x = np.mgrid[0:720, 0:1280]
    gradient = np.stack([x * 255 // 1279, y * 255 // 719, np.full_like(x, 96)], axis=-1).astype(np.uint8)
    frames = []
    for t in range(n):
        frame = gradient.copy()
        frame[500:640, 100 + 60 * t : 240 + 60 * t] = 200
        frames.append(frame)
    return frames


def write_golden(out: Path) -> dict[str, bytes]:
    files = {}
    params = tracks(3)
    with StvWriter(out / "golden_raw.stv", header(2, 8, params), profile="raw", chunk_frames=2) as w:
        w.append(params)
    params = tracks(60, phase=0.5)
    with StvWriter(out / "golden_entropy.stv", header(4, 16, params), profile="entropy", chunk_frames=25) as w:
        w.append(params)
    params = tracks(10, phase=1.0)
    extensions = [(b"note", "made by tools/make_golden_files.py".encode()), (b"zzz1", bytes(range(7)))]
    stream = _Pipe()
    writer = StvWriter(stream, header(2, 8, params, extensions), profile="raw", chunk_frames=4)
    writer.append(params[:4])
    writer.profile = "entropy"
    writer.append(params[4:])
    writer.close()
    (out / "golden_ext.stv").write_bytes(stream.getvalue())
    for name in ("golden_raw.stv", "golden_entropy.stv", "golden_ext.stv"):
        files[name] = (out / name).read_bytes()
    for name, data in {**v11_files(), **v12_files(), **v13_files()}.items():
        (out / name).write_bytes(data)
        files[name] = data
    return files


def expected_json(path: Path) -> str:
    """What `stvinfo --json` prints for the file, with the filename reduced to its base name."""
    data = probe(StvReader(path))
    data["format"]["filename"] = path.name
    return json.dumps(data, indent=2) + "\n"


def expected_outputs(path: Path) -> dict[str, str]:
    """The expected-output files of one golden: suffix -> text (see the module doc)."""
    try:
        reader = StvReader(path.read_bytes())
    except BitstreamError as exc:
        return {".error.txt": str(exc).removeprefix("<bytes>: ") + "\n"}
    outputs = {".json": expected_json(path)}
    if reader.validate():
        outputs[".validate.txt"] = "".join(f"{path.name}: damaged: {p}\n" for p in reader.validate())
    return outputs


def update_spec(spec: Path, dump: str) -> None:
    text = spec.read_text()
    block = f"<!-- hexdump:begin -->\n```\n{dump}\n```\n<!-- hexdump:end -->"
    new, n = re.subn(r"<!-- hexdump:begin -->.*?<!-- hexdump:end -->", lambda _: block, text, flags=re.S)
    if n != 1:
        raise SystemExit(f"{spec}: expected one hexdump:begin/end marker pair, found {n}")
    spec.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("tests/data"))
    parser.add_argument("--spec", type=Path, default=Path("format_spec.md"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    files = write_golden(args.out)
    for name in files:
        for suffix, text in expected_outputs(args.out / name).items():
            (args.out / name).with_suffix(suffix).write_text(text)
        print(f"{args.out / name}: {len(files[name])} bytes")
    dump = hexdump(files["golden_raw.stv"])
    (args.out / "golden_raw.hexdump.txt").write_text(dump + "\n")
    if args.spec.exists():
        update_spec(args.spec, dump)
        print(f"{args.spec}: worked example updated")


if __name__ == "__main__":
    main()
