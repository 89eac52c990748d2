"""Bad input gets a clear error and nothing is lost: every truncation, every single-bit flip, fuzzed mutations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec.bitstream import StvReader
from codec.bitstream.probe import probe
from codec.errors import BitstreamError
from test_bitstream_helpers import make_file, recrc_header

# A small file (~1 kB: 2x8 latent, 8 frames in chunks of 3, 3, 2) so that every cut and every bit flip can be parsed.
SMALL = {profile: make_file(8, profile, chunk_frames=3) for profile in ("raw", "entropy")}


@pytest.mark.parametrize("profile", ["raw", "entropy"])
def test_cut_at_every_byte_offset(profile):
    data, records, _ = SMALL[profile]
    chunks = StvReader(data).chunks
    header_size = chunks[0].offset
    for cut in range(len(data)):
        if cut < header_size:
            with pytest.raises(BitstreamError) as err:
                StvReader(data[:cut])
            message = str(err.value)
            assert "\n" not in message
            assert ("truncated at byte" in message or "empty file" in message), message
            continue
        reader = StvReader(data[:cut])
        whole = [c for c in chunks if c.end <= cut]
        assert reader.chunks == whole  # every whole chunk before the cut, nothing else
        n_whole = sum(c.count for c in whole)
        got = list(reader.iter_available())
        assert [i for i, _ in got] == list(range(n_whole))
        if n_whole:
            assert np.array_equal(reader.records(0, n_whole), records[:n_whole])
        # the frames after the cut give one clear error naming where the file ends
        with pytest.raises(BitstreamError, match=f"truncated at byte {cut}") as err:
            reader[n_whole]
        assert "\n" not in str(err.value)
        assert any(f"truncated at byte {cut}" in p for p in reader.validate())


@pytest.mark.parametrize("profile", ["raw", "entropy"])
def test_every_single_bit_flip_is_detected_or_harmless(profile):
    # ~1 kB x 8 bits = ~8000 parses, a few seconds: exhaustive, no sampling needed.
    data, records, _ = SMALL[profile]
    detected = identical = 0
    for byte in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[byte] ^= 1 << bit
            try:
                reader = StvReader(bytes(flipped))
            except BitstreamError:
                detected += 1
                continue
            if reader.validate():
                detected += 1
                continue
            assert np.array_equal(reader.records(), records), f"bit {bit} of byte {byte} changed the records unseen"
            identical += 1
    assert detected + identical == 8 * len(data)
    assert detected > 0


def exercise(data: bytes) -> None:
    """Everything a user can ask of a file; only BitstreamError (or IndexError for an index) may come out."""
    try:
        reader = StvReader(data)
    except BitstreamError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    reader.validate()
    probe(reader)
    for _ in reader.iter_available():
        pass
    try:
        list(reader)
    except BitstreamError as exc:
        assert "not available" in str(exc)


mutation = st.lists(
    st.tuples(st.sampled_from(["set", "insert", "delete"]), st.integers(0, 10**6), st.integers(0, 255)),
    min_size=1,
    max_size=8,
)


def mutate(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for kind, position, value in edits:
        at = position % (len(out) + 1)
        if kind == "set" and at < len(out):
            out[at] = value
        elif kind == "insert":
            out[at:at] = bytes([value])
        elif kind == "delete" and at < len(out):
            del out[at]
    return bytes(out)


def fuzz(profile: str, edits, fix_header_crc: bool) -> None:
    data = mutate(SMALL[profile][0], edits)
    if fix_header_crc:  # get past the header CRC so the field checks behind it are fuzzed too
        data = recrc_header(bytearray(data)) if 20 <= int.from_bytes(data[12:16], "little") <= len(data) else data
    exercise(bytes(data))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["raw", "entropy"]), mutation, st.booleans())
def test_fuzz_mutated_files(profile, edits, fix_header_crc):
    fuzz(profile, edits, fix_header_crc)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data):
    exercise(data)


@pytest.mark.slow
@settings(max_examples=20000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["raw", "entropy"]), mutation, st.booleans())
def test_fuzz_mutated_files_long(profile, edits, fix_header_crc):
    fuzz(profile, edits, fix_header_crc)
