"""tools/fuzz_bitstream.py: a short seeded campaign finds no uncaught exception, hang or over-allocation; the
harness itself tells those outcomes apart and its mutations get past the checksums."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from codec.bitstream import StvReader
from codec.errors import BitstreamError

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fuzz_bitstream", ROOT / "tools" / "fuzz_bitstream.py")
fuzz = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fuzz  # its dataclasses look their module up
_spec.loader.exec_module(fuzz)


def assert_no_failures(campaign) -> None:
    found = {k: campaign.counts.get(k, 0) for k in fuzz.FAILURES}
    details = "\n".join(f"{s}: x{f['count']}, first input {f['index']}: {f['detail']}"
                        for s, f in sorted(campaign.failures.items()))
    assert found == {k: 0 for k in fuzz.FAILURES}, details
    assert campaign.counts["ok"] and campaign.counts["rejected"]  # both sides of the reader are reached


def test_short_seeded_campaign():
    """~400 inputs (a few seconds): 0 uncaught, 0 hangs, 0 over-allocations."""
    assert_no_failures(fuzz.run_campaign(400, seed=0, jobs=1))


@pytest.mark.slow
def test_long_campaign():
    assert_no_failures(fuzz.run_campaign(20_000, seed=1, jobs=2))


def test_inputs_are_a_function_of_seed_and_index():
    seeds = fuzz.load_seeds()
    assert [fuzz.make_input(seeds, 3, i) for i in range(20)] == [fuzz.make_input(seeds, 3, i) for i in range(20)]
    assert fuzz.make_input(seeds, 3, 0) != fuzz.make_input(seeds, 4, 0)


@pytest.mark.parametrize("mutator", ["header_field", "chunk_field", "reencode_chunk", "zstd_frame", "header_text"])
def test_structured_mutations_get_past_the_checksums(mutator):
    """The field-aware mutators keep the CRCs right, so what the reader reports is never a CRC mismatch."""
    import random

    seeds = fuzz.load_seeds()
    intact = [s for s in seeds if not StvReader(s.data).damage]  # some goldens are damaged on purpose
    reached = 0
    for k in range(60):
        rng = random.Random(k)
        data = bytearray(intact[k % len(intact)].data)
        fuzz.MUTATORS[mutator][0](rng, data, seeds)
        try:
            reader = StvReader(bytes(data))
        except BitstreamError as exc:
            assert "CRC32 mismatch" not in str(exc)
            reached += 1
            continue
        assert not [d for d in reader.damage if "CRC32 mismatch" in d.reason]
        reached += 1
    assert reached == 60


def test_fix_all_repairs_flipped_bits_in_crc_covered_bytes():
    golden = fuzz.load_seeds()[0]
    data = bytearray(golden.data)
    data[20] ^= 0x01  # fps numerator: covered by the header CRC
    chunk = golden.chunks[0][0]
    data[chunk + 20] ^= 0x01  # a payload byte: covered by the chunk CRC
    fuzz.fix_all(data)
    size = golden.header_size
    assert zlib.crc32(bytes(data[: size - 4])).to_bytes(4, "little") == bytes(data[size - 4 : size])
    StvReader(bytes(data))  # the header opens: its CRC matches again


def test_outcomes_are_told_apart(monkeypatch):
    golden = fuzz.load_seeds()[0].data
    assert fuzz.run_one(golden).outcome == "ok"
    assert fuzz.run_one(b"not a stream").outcome == "rejected"

    def boom(data, stage):
        raise KeyError("frame")

    monkeypatch.setattr(fuzz, "exercise", boom)
    result = fuzz.run_one(golden)
    assert result.outcome == "uncaught" and "KeyError" in result.detail

    def slow(data, stage):
        time.sleep(5)

    monkeypatch.setattr(fuzz, "exercise", slow)
    assert fuzz.run_one(golden, time_limit=0.2).outcome == "hang"

    def greedy(data, stage):
        block = bytearray(fuzz.FIXED_ALLOWANCE + 10 * len(data))
        stage("next")
        return bool(block)

    monkeypatch.setattr(fuzz, "exercise", greedy)
    result = fuzz.run_one(golden)
    assert result.outcome == "over_allocation" and "StvReader()" in result.detail


def test_tool_ends_with_one_json_line(capsys, tmp_path):
    status = fuzz.main(["--inputs", "30", "--seed", "5", "--jobs", "1", "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(out[-1])
    assert figures["inputs"] == 30 and sum(figures["outcomes"].values()) == 30
    assert figures["inputs_per_second"] > 0
    assert status == (1 if any(figures["outcomes"][k] for k in fuzz.FAILURES) else 0)


def test_a_stopped_campaign_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """--checkpoint: a campaign killed after some batches runs only the rest when started again, and its figures
    are those of one uninterrupted run (the same inputs, by index)."""
    whole = fuzz.run_campaign(120, seed=3, jobs=1, batch=40)
    checkpoint = tmp_path / "campaign.jsonl"
    ran: list[int] = []
    real_batch = fuzz._run_batch

    def killed_after_two(task):
        if len(ran) == 2:
            raise KeyboardInterrupt  # the machine went away
        ran.append(task[1])
        return real_batch(task)

    monkeypatch.setattr(fuzz, "_run_batch", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        fuzz.run_campaign(120, seed=3, jobs=1, batch=40, checkpoint=checkpoint)
    with open(checkpoint, "a") as f:
        f.write('{"seed": 3, "lo": 80, "hi"')  # a line cut short by the kill: ignored, that batch runs again
    ran.clear()
    monkeypatch.setattr(fuzz, "_run_batch", lambda task: (ran.append(task[1]), real_batch(task))[1])
    resumed = fuzz.run_campaign(120, seed=3, jobs=1, batch=40, checkpoint=checkpoint)
    assert ran == [80]
    assert resumed.counts == whole.counts and resumed.damaged == whole.damaged and resumed.inputs == 120
    assert resumed.seconds > 0
    with pytest.raises(SystemExit, match="another campaign"):
        fuzz.run_campaign(120, seed=4, jobs=1, batch=40, checkpoint=checkpoint)


@pytest.mark.slow
def test_atheris_engine_runs_and_reports(tmp_path):
    pytest.importorskip("atheris")
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "fuzz_bitstream.py"), "--engine", "atheris",
                             "--inputs", "300", "--json"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["engine"] == "atheris" and sum(figures["outcomes"].values()) == 300
    assert result.returncode == (1 if any(figures["outcomes"][k] for k in fuzz.FAILURES) else 0)
