"""A decoder of the `arith` chunk payload written from format_spec.md §7b alone: plain Python integers, no
constriction, nothing imported from codec.bitstream.arith. Tests compare it with the reference implementation, so
a change of either (or of constriction's coder) that alters a byte's meaning fails."""

from __future__ import annotations

# format_spec.md §7b "Tables": one row per scale class, frequencies of categories 1..16 (either sign).
SPEC_SECTION = "## 7b."


def spec_tables(spec_text: str) -> tuple[list[list[int]], list[int]]:
    """The category tables and class thresholds as format_spec.md lists them (between its arith-tables markers)."""
    start = spec_text.index("<!-- arith-tables:begin -->")
    end = spec_text.index("<!-- arith-tables:end -->")
    rows, thresholds = [], []
    for line in spec_text[start:end].splitlines():
        if line.startswith("| ") and line[2:3].isdigit():
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.append([int(v) for v in cells[1].split()])
        if line.startswith("thresholds:"):
            thresholds = [int(v) for v in line.split(":")[1].split()]
    return rows, thresholds


def _frequencies(row: list[int]) -> list[int]:
    freqs = [(1 << 24) - 2 * sum(row)]
    for f in row:
        freqs += [f, f]
    return freqs


class _Ans:
    def __init__(self, words: list[int]):
        self.words = words
        self.pos = len(words)
        self.x = 0
        if self.pos:
            self.x = words[self.pos - 1]
            self.pos -= 1
            if self.pos:
                self.x = (self.x << 32) | words[self.pos - 1]
                self.pos -= 1

    def decode(self, freqs: list[int]) -> int:
        q = self.x & 0xFFFFFF
        cumulative = 0
        for s, f in enumerate(freqs):
            if q < cumulative + f:
                break
            cumulative += f
        self.x = (self.x >> 24) * f + q - cumulative
        if self.x < (1 << 32) and self.pos:
            self.pos -= 1
            self.x = (self.x << 32) | self.words[self.pos]
        return s


def _wrap(v: int) -> int:
    return ((v + 32768) % 65536) - 32768


def decode(payload: bytes, count: int, rows: list[list[int]], thresholds: list[int]) -> list[list[int]] | None:
    """The records (count x 35), or None where §7b says the chunk is damaged."""
    if not payload or not 1 <= payload[0] <= 35 or len(payload) < 1 + payload[0]:
        return None
    sizes = list(payload[1 : 1 + payload[0]])
    if min(sizes) < 1 or sum(sizes) != 35:
        return None
    body = payload[1 + len(sizes) :]
    if len(body) % 4 or count > 4 * (len(payload) + 8):
        return None
    words = [int.from_bytes(body[i : i + 4], "little") for i in range(0, len(body), 4)]
    if words and words[-1] == 0:
        return None
    region = [g for g, n in enumerate(sizes) for _ in range(n)]
    tables = [_frequencies(r) for r in rows]
    ans = _Ans(words)
    prev, before = [0] * 35, [0] * 35
    a, h, g = [1024] * 35, [1024] * 35, [1024] * 35
    out = []
    for t in range(count):
        seen, expected = [0] * len(sizes), [0] * len(sizes)
        row = []
        for k in range(35):
            r = region[k]
            hold = prev[k] if t else 0
            glide = hold if t < 2 else prev[k] + ((prev[k] - before[k]) >> 1)
            if t == 0:
                cls, p = 23, 0
            else:
                m = a[k] if seen[r] == 0 and expected[r] == 0 else a[k] * (seen[r] + expected[r] + 1) // (2 * expected[r] + 1)
                cls = sum(1 for th in thresholds if m >= th) - 1
                p = glide if g[k] < h[k] else hold
            e = _residual(ans, tables[cls])
            value = _wrap(p + e)
            if t:
                cap = lambda v: 256 * min(abs(v), 4096)  # noqa: E731
                expected[r] += a[k]
                seen[r] += cap(e)
                a[k] += (cap(e) - a[k]) >> 3
                h[k] += (cap(_wrap(value - hold)) - h[k]) >> 4
                g[k] += (cap(_wrap(value - glide)) - g[k]) >> 4
            before[k], prev[k] = prev[k], value
            row.append(value)
        out.append(row)
    if ans.x != 0 or ans.pos != 0:
        return None
    return out


def decode_latent(data: bytes, log_scales: list[int], rows: list[list[int]], thresholds: list[int]):
    """format_spec.md §3 `idpc`: (basis digest, steps, coefficients R x D), or None where it is malformed."""
    import struct

    if len(data) < 36:
        return None
    digest, r_count, d_count = struct.unpack_from("<32sHH", data)
    if not (1 <= r_count <= 64 and 1 <= d_count <= 4096) or len(data) < 36 + 5 * r_count:
        return None
    steps = list(struct.unpack_from(f"<{r_count}f", data, 36))
    exponents = list(struct.unpack_from(f"<{r_count}b", data, 36 + 4 * r_count))
    body = data[36 + 5 * r_count :]
    if r_count * d_count > 128 * (len(data) + 8) or len(body) % 4:
        return None
    words = [int.from_bytes(body[i : i + 4], "little") for i in range(0, len(body), 4)]
    if words and words[-1] == 0:
        return None
    tables = [_frequencies(r) for r in rows]
    ans = _Ans(words)
    out = []
    for r in range(r_count):
        row = []
        for j in range(d_count):
            cls = max(0, min(23, (log_scales[j] - exponents[r]) // 2 + 7))
            row.append(_residual(ans, tables[cls]))
        out.append(row)
    if ans.x != 0 or ans.pos != 0:
        return None
    return digest, steps, out


def _residual(ans: "_Ans", table: list[int]) -> int:
    s = ans.decode(table)
    j = (s + 1) >> 1
    if not j:
        return 0
    bits, low = j - 1, 0
    if bits > 8:
        low = ans.decode([1 << (24 - (bits - 8))] * (1 << (bits - 8)))
        bits = 8
    if bits:
        low = (low << bits) | ans.decode([1 << (24 - bits)] * (1 << bits))
    mag = (1 << (j - 1)) + low
    return mag if s % 2 else -mag
