"""CRC32 of any slice of one buffer, in time bounded by a constant, not by the slice's length.

Resynchronising after damage tries every sync word in the damaged bytes, and each candidate claims a payload
whose CRC32 must be checked. A crafted run of sync words, each claiming a payload that ends inside the run,
made a reader that hashes each candidate's payload afresh quadratic in the file's size (a 1 MB file took 10 s).

Instead the reader keeps crc32(data[:k]) at every block boundary k (one pass) and gets a slice's CRC from them.
zlib's CRC32 register is linear over GF(2): appending n bytes to a message multiplies the register of its
prefix by x^(8n) modulo the CRC polynomial before the new bytes are folded in, so
    crc(data[a:m2]) = crc(data[:m2]) xor crc(data[:a]) * x^(8 (m2 - a))        (zlib's crc32_combine, solved)
for a block boundary m2; the rest of the slice is at most one block, hashed directly. x^(8 (m2 - a)) splits into
x^(8 (m - a)), done by hashing fewer than BLOCK zero bytes, and x^(8 BLOCK j) for the j whole blocks between,
kept in a table grown one multiplication at a time. Polynomials are in zlib's reflected bit order.
"""

from __future__ import annotations

import zlib

POLY = 0xEDB88320  # the CRC-32 polynomial, reflected (bit 31 is x^0)
X0 = 1 << 31  # the polynomial 1


def multiply(a: int, b: int) -> int:
    """a * b modulo the CRC polynomial (reflected order)."""
    product = 0
    m = X0
    while a:
        if a & m:
            product ^= b
            a ^= m
        m >>= 1
        b = (b >> 1) ^ POLY if b & 1 else b >> 1
    return product


def shift(register: int, n: int) -> int:
    """register * x^(8 n): what the CRC register becomes after n zero bytes (cost: hashing n bytes).

    zlib.crc32(zeros, c) is affine in c (it complements the register on the way in and out), so the
    difference of two such calls is the linear part alone."""
    zeros = bytes(n)
    return zlib.crc32(zeros, register) ^ zlib.crc32(zeros, 0)


class SliceCrc:
    """crc32(data[start:stop]) for any slice, from prefix CRCs kept every BLOCK bytes."""

    BLOCK = 1024

    def __init__(self, data: memoryview):
        self.data = data
        self.prefix_at_block = [0]  # crc32(data[:BLOCK * i])
        crc = 0
        for start in range(0, len(data) - self.BLOCK + 1, self.BLOCK):
            crc = zlib.crc32(data[start : start + self.BLOCK], crc)
            self.prefix_at_block.append(crc)
        self.block_powers = [X0, shift(X0, self.BLOCK)]  # x^(8 BLOCK j), grown on demand

    def block_power(self, j: int) -> int:
        while len(self.block_powers) <= j:
            self.block_powers.append(multiply(self.block_powers[-1], self.block_powers[1]))
        return self.block_powers[j]

    def __call__(self, start: int, stop: int) -> int:
        if stop - start <= 2 * self.BLOCK:
            return zlib.crc32(self.data[start:stop])
        first = -(-start // self.BLOCK)  # the first block boundary at or after start ...
        last = stop // self.BLOCK  # ... and the last one at or before stop (first < last here)
        block = start // self.BLOCK
        prefix_start = zlib.crc32(self.data[block * self.BLOCK : start], self.prefix_at_block[block])
        moved = multiply(self.block_power(last - first), shift(prefix_start, first * self.BLOCK - start))
        head = self.prefix_at_block[last] ^ moved  # crc32(data[start : last * BLOCK])
        return zlib.crc32(self.data[last * self.BLOCK : stop], head)
