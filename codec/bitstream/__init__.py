"""The .stv bitstream: one ID latent in the header, then 35 int16 parameters per frame in CRC-checked chunks.

Public API (format_spec.md is the normative byte layout; no torch import anywhere in this package):
    PARAM_NAMES                      the 35 per-frame parameters in record order: alpha_00..alpha_31, yaw, pitch, roll
    StvHeader                        everything the header says (size, rate, generator, indices, quantisation, latent)
    QuantTable, quantise, dequantise float (n, 35) <-> int16 records, with a SaturationReport
    StvWriter                        streaming writer (context manager, atomic finalise)
    StvReader, Damage                random access, iteration, recovery after damage
    Placement, encode_placement      (1.2) where each frame's face sits in the source picture (`plac` extension)
"""

from codec.bitstream.chunk import ChunkInfo
from codec.bitstream.header import EXT_NOTE, EXT_PLACEMENT, KNOWN_EXTENSIONS, StvHeader
from codec.bitstream.placement import Placement, decode_placement, encode_placement
from codec.bitstream.quant import DEFAULT_STEPS, QuantTable, SaturationReport, dequantise, quantise
from codec.bitstream.reader import Damage, StvReader
from codec.bitstream.schema import (
    FRAME_COUNT_UNKNOWN,
    MAJOR_VERSION,
    MINOR_VERSION,
    N_PARAMS,
    PARAM_NAMES,
    PROFILE_NAMES,
    RECORD_SIZE,
)
from codec.bitstream.writer import StvWriter

__all__ = [
    "PARAM_NAMES", "N_PARAMS", "RECORD_SIZE", "FRAME_COUNT_UNKNOWN", "MAJOR_VERSION", "MINOR_VERSION",
    "PROFILE_NAMES", "EXT_NOTE", "KNOWN_EXTENSIONS", "StvHeader", "QuantTable", "SaturationReport",
    "DEFAULT_STEPS", "quantise", "dequantise", "StvWriter", "StvReader", "Damage", "ChunkInfo",
    "EXT_PLACEMENT", "Placement", "encode_placement", "decode_placement",
]
