"""Write tests/data/decoder_golden.png: frames the decoder test stream decodes to, for the portable decoder golden
of tests/test_decoder.py (which compares within the tolerance stated there, not bit for bit).

    python tools/make_decoder_golden.py [--out tests/data/decoder_golden.png]

The stream is the decoder tests' own (tests/test_decoder_helpers.py: write_stream(latent_seed=1, track_seed=0),
seeded_editor(seed=0), the shipped tiny generator), decoded in batches of 4 on the CPU's default path (the fused
kernel when it builds). Frames GOLDEN_FRAMES of it are stored side by side in one lossless RGB PNG (64 x 64*N),
so a person can look at the golden too. Re-run it only when
rendering is meant to change (roll, quantisation, the tiny weights), and say so in the commit.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "data" / "decoder_golden.png"


def golden_frames(batch: int = 4) -> list[np.ndarray]:
    """Frames GOLDEN_FRAMES of the decoder tests' stream, decoded with their settings: HxWx3 uint8 RGB."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_decoder_helpers import GOLDEN_FRAMES, seeded_editor, write_stream

    from codec import zoo
    from codec.bitstream import StvReader
    from codec.decoder.decode import DecodeSettings, decode

    generator = zoo.load_generator("tiny")
    with tempfile.TemporaryDirectory() as folder:
        path, _ = write_stream(Path(folder) / "golden.stv", generator)
        frames = decode(StvReader(path), generator, seeded_editor(generator), settings=DecodeSettings(batch=batch))
        return [f.image for f in frames if f.index in GOLDEN_FRAMES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    strip = np.concatenate(golden_frames(), axis=1)
    if not cv2.imwrite(str(args.out), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise SystemExit(f"cannot write {args.out}")
    print(f"{args.out}: {strip.shape[1] // strip.shape[0]} frames, {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
