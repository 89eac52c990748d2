"""The `arith` chunk profile (format 1.3, profile 2): context-adaptive entropy coding of the int16 records.

format_spec.md §7b is the normative description; this module is its executable form. In short:

- Each value r[t][k] is predicted from the chunk's previous records of the same parameter (integer arithmetic,
  `ParameterState.prediction`); the residual e = r - prediction (16-bit wrap-around) is coded as a *category* symbol (0, or the
  sign and bit length of |e|, 33 symbols) followed by the category's low bits as uniform symbols.
- The category symbol's frequency table is one of `N_CLASSES` fixed integer tables (`CATEGORY_TABLES`: a
  discretised Laplace distribution per scale class, frozen as integers summing to 2^24). The class comes from an
  integer running mean of the parameter's own |residual|, scaled by how surprising the residuals of the other
  parameters of its facial region were in this frame (`region_scaled`). Everything resets at every chunk, so a
  chunk decodes alone (random access, resynchronisation after damage).
- The symbols go through `constriction`'s rANS coder (`constriction.stream.stack.AnsCoder`: 32-bit words, 64-bit
  state, 24-bit probabilities). Its categorical model is built so that its fixed-point table is *exactly* our
  integer table (see `_exact_model`), so the bytes are defined by integers alone and are the same on every
  machine; tests/test_bitstream_arith.py checks them against a decoder written from the spec alone.

Payload: u8 G, G x u8 group sizes (the facial regions: consecutive parameters, sizes summing to 35), then the
coder's u32 words, little-endian.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codec.bitstream.schema import N_PARAMS
from codec.errors import BitstreamError

PRECISION = 24  # bits of every frequency table: frequencies sum to 2^24
TOTAL = 1 << PRECISION
N_CATEGORIES = 17  # category 0: e = 0; category j (1..16): 2^(j-1) <= |e| <= 2^j - 1
N_SYMBOLS = 2 * N_CATEGORIES - 1  # symbol 0: e = 0; 2j - 1: category j, e > 0; 2j: category j, e < 0
N_CLASSES = 24  # scale classes; class c models a Laplace residual of scale 2^((c - 8) / 2) quantiser steps
FIRST_FRAME_CLASS = N_CLASSES - 1  # the chunk's first record has no prediction: the widest table
MAX_UNIFORM_BITS = 8  # a category's low bits go in pieces of at most 8 bits
# A decodable chunk holds at most this many frames per payload byte (plus a constant): every table gives each
# symbol at most 2^24 - 2^20 of 2^24, so a frame's 35 symbols cost at least 3.26 bits (format_spec.md §7b): a
# reader's work stays within a few frames per byte (with 2^18 a 3 KB fuzz input took over 5 s to refuse).
FRAMES_PER_BYTE_BOUND = 4
FRAMES_BOUND_SLACK = 8

# The category tables: CATEGORY_TABLES[c][j] is the frequency of category j in either sign (j = 1..16) for scale
# class c; the frequency of symbol 0 is 2^24 - 2 * sum(row). Generated once by `_laplace_table_row` (floats),
# frozen here as integers: format_spec.md §7b lists the same numbers, and the coder only ever sees these.
CATEGORY_TABLES: tuple[tuple[int, ...], ...] = (
    (524048, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16),
    (524048, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16),
    (524012, 52, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16),
    (522332, 1732, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16),
    (1114481, 20786, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16),
    (1918870, 120120, 421, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16),
    (2668352, 409995, 7647, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16),
    (3130590, 946135, 59227, 208, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16),
    (3216196, 1618437, 248674, 4638, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16),
    (2986020, 2198264, 664365, 41589, 146, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16),
    (2570557, 2504776, 1260440, 193668, 3612, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16),
    (2093429, 2502186, 1842073, 556716, 34850, 122, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16),
    (1637520, 2268508, 2210457, 1112335, 170911, 3188, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16),
    (1244248, 1916336, 2290514, 1686243, 509621, 31902, 112, 16, 16, 16, 16, 16, 16, 16, 16, 16),
    (925968, 1538308, 2131066, 2076533, 1044942, 160556, 2995, 16, 16, 16, 16, 16, 16, 16, 16, 16),
    (678953, 1190457, 1833489, 2191491, 1613344, 487589, 30523, 107, 16, 16, 16, 16, 16, 16, 16, 16),
    (492603, 897479, 1490979, 2065500, 2012644, 1012792, 155616, 2902, 16, 16, 16, 16, 16, 16, 16, 16),
    (354729, 664115, 1164440, 1793419, 2143597, 1578085, 476933, 29856, 105, 16, 16, 16, 16, 16, 16, 16),
    (254089, 484966, 883564, 1467864, 2033478, 1981441, 997090, 153204, 2857, 16, 16, 16, 16, 16, 16, 16),
    (181316, 350832, 656818, 1151646, 1773713, 2120043, 1560745, 471692, 29528, 104, 16, 16, 16, 16, 16, 16),
    (129041, 252112, 481192, 876689, 1456441, 2017653, 1966021, 989331, 152012, 2835, 16, 16, 16, 16, 16, 16),
    (91664, 180318, 348899, 653199, 1145301, 1763942, 2108364, 1552147, 469094, 29365, 103, 16, 16, 16, 16, 16),
    (65026, 128538, 251129, 479316, 873271, 1450763, 2009787, 1958357, 985474, 151419, 2824, 16, 16, 16, 16, 16),
    (46086, 91411, 179820, 347936, 651397, 1142142, 1759076, 2102548, 1547866, 467800, 29284, 103, 16, 16, 16, 16),
)
# The reference writer's facial regions when it is told none: the 32 offsets as one region, the pose as another.
DEFAULT_GROUPS = (32, 3)
MAX_FREQUENCY = TOTAL - (1 << 20)  # no symbol may be near-certain: bounds the frames a payload byte can hold
MIN_FREQUENCY = 16


def _laplace_table_row(scale_class: int) -> tuple[int, ...]:
    """How CATEGORY_TABLES was made (kept to regenerate it; never used while coding: floats differ by machine).

    A residual of Laplace scale b = 2^((c - 8) / 2), integrated over [e - 1/2, e + 1/2]; category j's mass is
    its values' total; frequencies round(2^24 * mass) for one sign, at least MIN_FREQUENCY; symbol 0 takes the
    rest, at most MAX_FREQUENCY (any excess goes to category 1)."""
    import math

    b = 2.0 ** ((scale_class - 8) / 2)
    row = []
    for j in range(1, N_CATEGORIES):
        lo, hi = 2 ** (j - 1), 2**j - 1
        mass = 0.5 * (math.exp(-(lo - 0.5) / b) - math.exp(-(hi + 0.5) / b))
        row.append(max(MIN_FREQUENCY, round(TOTAL * mass)))
    zero = TOTAL - 2 * sum(row)
    if zero > MAX_FREQUENCY:
        row[0] += (zero - MAX_FREQUENCY) // 2
    return tuple(row)


def category_frequencies(scale_class: int) -> list[int]:
    """The 33 symbol frequencies of a scale class, in symbol order (they sum to 2^24)."""
    row = CATEGORY_TABLES[scale_class]
    freqs = [TOTAL - 2 * sum(row)]
    for f in row:
        freqs += [f, f]
    return freqs


# ----------------------------------------------------------------------------------------- the integer model

MAGNITUDE_ONE = 256  # running magnitudes count |residual| in 1/256 of a quantiser step
INITIAL_MAGNITUDE = 4 * MAGNITUDE_ONE  # A_k and both predictors' errors at the chunk's second record
MAGNITUDE_CAP = 4096  # |e| beyond this counts as 4096 (every product of the model then fits in 64 bits)
MAGNITUDE_SHIFT = 3  # A_k moves an eighth of the way to each new |e|: it follows a face that starts talking
PREDICTOR_SHIFT = 4  # the predictors' error averages move by 1/16: the choice between them changes slowly
# Class c is the first class whose threshold exceeds the magnitude: the thresholds are the geometric means of the
# mean |e| of neighbouring classes' tables (x 256), so a magnitude picks the table whose mean fits it best.
CLASS_THRESHOLDS = (0, 2, 8, 23, 48, 85, 135, 202, 295, 424, 604, 858, 1215, 1720, 2434, 3443, 4870, 6888, 9742,
                    13777, 19484, 27554, 38968)


def wrap16(x: int) -> int:
    """x mod 2^16 as a signed 16-bit value."""
    return ((x + 0x8000) & 0xFFFF) - 0x8000


def category_of(e: int) -> tuple[int, int, int]:
    """Residual (-32768..32767) -> (symbol, number of low bits, their value)."""
    if e == 0:
        return 0, 0, 0
    m = -e if e < 0 else e
    j = m.bit_length()
    return 2 * j - (0 if e < 0 else 1), j - 1, m - (1 << (j - 1))


def residual_of(symbol: int, low: int) -> int:
    j = (symbol + 1) >> 1
    if j == 0:
        return 0
    m = (1 << (j - 1)) + low
    return -m if symbol % 2 == 0 else m


def scale_class(magnitude: int) -> int:
    """The table for a magnitude: how many thresholds it reaches (0..23)."""
    return sum(1 for threshold in CLASS_THRESHOLDS if magnitude >= threshold) - 1


def follow(average: int, e: int, shift: int) -> int:
    """An integer exponential average of 256 |e| (|e| capped), moving by 1/2^shift (floor division)."""
    m = MAGNITUDE_CAP if abs(e) > MAGNITUDE_CAP else abs(e)
    return average + ((MAGNITUDE_ONE * m - average) >> shift)


@dataclass
class ParameterState:
    """What the model remembers of one parameter within a chunk."""

    previous: int = 0  # r[t-1]
    before: int = 0  # r[t-2]
    magnitude: int = INITIAL_MAGNITUDE  # A: 256 x the recent mean |residual|
    hold_error: int = INITIAL_MAGNITUDE  # 256 x the recent mean |r - r[t-1]|
    glide_error: int = INITIAL_MAGNITUDE  # 256 x the recent mean |r - glide prediction|

    def predictions(self, t: int) -> tuple[int, int]:
        """(hold, glide): r[t-1], and r[t-1] plus half its last step (smooth tracks); both 0 at t = 0."""
        if t == 0:
            return 0, 0
        if t == 1:
            return self.previous, self.previous
        return self.previous, self.previous + ((self.previous - self.before) >> 1)

    def prediction(self, t: int) -> int:
        hold, glide = self.predictions(t)
        return glide if self.glide_error < self.hold_error else hold

    def update(self, t: int, value: int, e: int) -> None:
        if t > 0:
            hold, glide = self.predictions(t)
            self.magnitude = follow(self.magnitude, e, MAGNITUDE_SHIFT)
            self.hold_error = follow(self.hold_error, wrap16(value - hold), PREDICTOR_SHIFT)
            self.glide_error = follow(self.glide_error, wrap16(value - glide), PREDICTOR_SHIFT)
        self.before, self.previous = self.previous, value


def region_scaled(magnitude: int, seen: int, expected: int) -> int:
    """A parameter's magnitude scaled by its region's surprise in this frame: `seen` sums 256 x |e| (capped) of
    the region's parameters already coded in this frame, `expected` their magnitudes before this frame. Halfway
    towards the ratio seen / expected (on the closed-loop encoder's records, halfway, a quarter and an eighth of
    the way cost 9.12, 9.16 and 9.21 bytes/frame; no region 9.28)."""
    if seen == 0 and expected == 0:
        return magnitude
    return magnitude * (seen + expected + 1) // (2 * expected + 1)


def check_groups(groups: tuple[int, ...]) -> tuple[int, ...]:
    groups = tuple(int(g) for g in groups)
    if not 1 <= len(groups) <= N_PARAMS or min(groups) < 1 or sum(groups) != N_PARAMS:
        raise BitstreamError(f"arith groups must be 1..{N_PARAMS} positive sizes summing to {N_PARAMS}, got {groups}")
    return groups


def model_walk(count: int, groups: tuple[int, ...], take) -> np.ndarray:
    """The model's pass over a chunk, the same for encoder and decoder: for each value in coding order (frame by
    frame, parameter by parameter) it computes the prediction and the scale class and calls
    `take(t, k, prediction, scale_class) -> residual` (the encoder returns the known residual after recording its
    symbols; the decoder decodes it). Returns the records rebuilt from prediction + residual."""
    out = np.zeros((count, N_PARAMS), np.int16)
    states = [ParameterState() for _ in range(N_PARAMS)]
    group_of = [g for g, size in enumerate(groups) for _ in range(size)]
    for t in range(count):
        seen = [0] * len(groups)
        expected = [0] * len(groups)
        row = out[t]
        for k, state in enumerate(states):
            g = group_of[k]
            if t == 0:
                table = FIRST_FRAME_CLASS
            else:
                table = scale_class(region_scaled(state.magnitude, seen[g], expected[g]))
            prediction = state.prediction(t)
            e = take(t, k, prediction, table)
            value = wrap16(prediction + e)
            row[k] = value
            if t > 0:
                expected[g] += state.magnitude
                seen[g] += MAGNITUDE_ONE * (MAGNITUDE_CAP if abs(e) > MAGNITUDE_CAP else abs(e))
            state.update(t, value, e)
    return out


# ----------------------------------------------------------------------------------------- the coder


def _exact_model(frequencies: list[int]):
    """A constriction categorical model whose 24-bit fixed-point table is exactly `frequencies` (each >= 1,
    summing to 2^24). constriction's fast quantisation gives symbol i the left cumulative
    floor(F_i * (2^24 - n) / S) + i, with F_i the float running sum of the n inputs and S their sum; inputs
    f_i - 1 (integers, so every sum is exact in float32 and float64) make S = 2^24 - n, the ratio exactly 1 and
    the cumulative exactly sum_{j<i} f_j."""
    import constriction

    weights = np.asarray(frequencies, dtype=np.float64) - 1.0
    return constriction.stream.model.Categorical(weights, perfect=False)


class _Models:
    """The coder's models, built once: one per scale class, one uniform per piece width."""

    _instance: "_Models | None" = None

    def __init__(self) -> None:
        self.category = [_exact_model(category_frequencies(c)) for c in range(N_CLASSES)]
        self.uniform = [None] + [_exact_model([TOTAL >> b] * (1 << b)) for b in range(1, MAX_UNIFORM_BITS + 1)]

    @classmethod
    def get(cls) -> "_Models":
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance


def low_bit_pieces(bits: int) -> list[int]:
    """Widths of the uniform pieces of a category's low bits, most significant first (each at most 8)."""
    pieces = []
    while bits > MAX_UNIFORM_BITS:
        pieces.append(MAX_UNIFORM_BITS)
        bits -= MAX_UNIFORM_BITS
    return ([bits] if bits else []) + pieces


class ResidualEncoder:
    """Collects residuals with their scale classes, then codes them all (rANS is a stack: the symbols are pushed
    last to first so that a decoder pops them first to last)."""

    def __init__(self) -> None:
        self._models = _Models.get()
        self._symbols: list[tuple[int, object]] = []

    def add(self, e: int, scale_class: int) -> None:
        symbol, bits, low = category_of(e)
        self._symbols.append((symbol, self._models.category[scale_class]))
        shift = bits
        for width in low_bit_pieces(bits):
            shift -= width
            self._symbols.append(((low >> shift) & ((1 << width) - 1), self._models.uniform[width]))

    def words(self) -> bytes:
        """The coder's u32 words, little-endian (format_spec.md §7b)."""
        import constriction

        coder = constriction.stream.stack.AnsCoder()
        for symbol, model in reversed(self._symbols):
            coder.encode_reverse(symbol, model)
        return coder.get_compressed().astype("<u4").tobytes()


class ResidualDecoder:
    """Pops residuals from coder words; `check_finished` says whether the words ended exactly there."""

    def __init__(self, body: bytes, what: str):
        import constriction

        self.what = what
        if len(body) % 4:
            raise BitstreamError(f"{what}: {len(body)} bytes of coder words is not a multiple of 4")
        words = np.frombuffer(body, dtype="<u4").astype(np.uint32)
        if len(words) and words[-1] == 0:
            raise BitstreamError(f"{what}: the coder's last word is 0")
        self._coder = constriction.stream.stack.AnsCoder(words)
        self._models = _Models.get()

    def residual(self, scale_class: int) -> int:
        symbol = int(self._coder.decode(self._models.category[scale_class]))
        low = 0
        for width in low_bit_pieces(((symbol + 1) >> 1) - 1 if symbol else 0):
            low = (low << width) | int(self._coder.decode(self._models.uniform[width]))
        return residual_of(symbol, low)

    def check_finished(self, last: str) -> None:
        if self._coder.num_words() != 0:  # state 0 and every word read
            raise BitstreamError(f"{self.what}: the coder's words do not end with {last}")


def encode_arith(records: np.ndarray, groups: tuple[int, ...]) -> bytes:
    """int16 records (c, 35) -> the arith payload."""
    groups = check_groups(groups)
    coder = ResidualEncoder()

    def take(t: int, k: int, prediction: int, scale_class: int) -> int:
        e = wrap16(int(records[t, k]) - prediction)
        coder.add(e, scale_class)
        return e

    model_walk(len(records), groups, take)
    return bytes([len(groups), *groups]) + coder.words()


def decode_arith(payload: bytes, count: int) -> np.ndarray:
    """The arith payload of a chunk of `count` frames -> int16 records; BitstreamError when it is not one."""
    what = "arith payload"
    if len(payload) < 1 or not 1 <= payload[0] <= N_PARAMS or len(payload) < 1 + payload[0]:
        raise BitstreamError(f"{what}: no group map")
    groups = tuple(payload[1 : 1 + payload[0]])
    if min(groups) < 1 or sum(groups) != N_PARAMS:
        raise BitstreamError(f"{what}: group sizes {list(groups)} do not sum to {N_PARAMS}")
    body = payload[1 + len(groups) :]
    if count > FRAMES_PER_BYTE_BOUND * (len(payload) + FRAMES_BOUND_SLACK):
        raise BitstreamError(f"{what}: {len(payload)} bytes cannot hold {count} frames")
    coder = ResidualDecoder(body, what)
    records = model_walk(count, groups, lambda t, k, prediction, scale_class: coder.residual(scale_class))
    coder.check_finished("the chunk's last value")
    return records
