"""Keyed randomness: permutations and masks derived from a secret with SHAKE-256.

This is the only place where secret bytes become randomness. Everything is deterministic in
(secret, label), so the same key yields the same cipher on any machine; numpy's PRNG is never
used for key material.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import numpy as np

_CHUNK_BYTES = 4096
_FIRST_COUNTER = (0).to_bytes(8, "big")


class KeyStream:
    """An unbounded byte stream SHAKE-256(len(label) || label || secret || counter), counter mode.

    Chunk `counter` is the first 4096 bytes of SHAKE-256(prefix || counter). SHAKE is an
    extendable-output function (its first n bytes do not depend on how many more are asked for),
    so a stream read once for fewer bytes (a per-image draw) hashes only those; a chunk read in
    pieces is hashed whole at its second piece.
    """

    __slots__ = ("_chunk", "_counter", "_offset", "_prefix", "_xof")

    def __init__(self, secret: bytes, label: str) -> None:
        label_bytes = label.encode()
        self._prefix = len(label_bytes).to_bytes(2, "big") + label_bytes + secret
        self._rewind()

    def _rewind(self) -> None:
        """Back to the start of the stream (nothing read)."""
        self._counter = -1
        self._xof: Any = None  # the current chunk's hash (none before the first read)
        self._chunk = b""  # the part of the current chunk hashed so far
        self._offset = _CHUNK_BYTES  # bytes of the current chunk already read

    def head(self, count: int) -> bytes:
        """The first `count` bytes of the stream, whatever has been read: for a stream read once
        (a per-image draw), one hash without the bookkeeping of `read`."""
        if count > _CHUNK_BYTES:
            fresh = copy.copy(self)
            fresh._rewind()
            return fresh.read(count)
        return hashlib.shake_256(self._prefix + _FIRST_COUNTER).digest(count)

    def read(self, count: int) -> bytes:
        if self._offset == _CHUNK_BYTES and 0 < count <= _CHUNK_BYTES:
            # At a chunk boundary, for at most one chunk: one hash, no joining.
            self._counter += 1
            self._xof = hashlib.shake_256(self._prefix + self._counter.to_bytes(8, "big"))
            self._chunk = self._xof.digest(count)
            self._offset = count
            return self._chunk
        parts = []
        while count > 0:
            if self._offset == _CHUNK_BYTES:
                self._counter += 1
                self._xof = hashlib.shake_256(self._prefix + self._counter.to_bytes(8, "big"))
                self._chunk = b""
                self._offset = 0
            end = min(_CHUNK_BYTES, self._offset + count)
            if end > len(self._chunk):
                self._chunk = self._xof.digest(_CHUNK_BYTES if self._chunk else end)
            parts.append(self._chunk[self._offset : end])
            count -= end - self._offset
            self._offset = end
        return b"".join(parts)

    def below(self, bound: int) -> int:
        """A uniform integer in [0, bound), by rejection sampling (no modulo bias)."""
        if bound <= 0:
            raise ValueError(f"bound must be positive, got {bound}")
        if bound == 1:
            return 0
        nbytes = (bound.bit_length() + 7) // 8 + 1
        space = 1 << (8 * nbytes)
        limit = space - space % bound
        while True:
            value = int.from_bytes(self.read(nbytes), "big")
            if value < limit:
                return value % bound

    def __repr__(self) -> str:
        return "KeyStream(<secret>)"


def permutation(stream: KeyStream, size: int) -> np.ndarray:
    """An unbiased Fisher–Yates permutation of range(size)."""
    order = list(range(size))
    for i in range(size - 1, 0, -1):
        j = stream.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return np.asarray(order, dtype=np.int64)


def subset(stream: KeyStream, size: int, count: int) -> np.ndarray:
    """A uniformly random, sorted subset of `count` elements of range(size)."""
    if not 0 <= count <= size:
        raise ValueError(f"cannot choose {count} of {size} positions")
    return np.sort(permutation(stream, size)[:count])


def partial_permutation(stream: KeyStream, size: int, fraction: float) -> np.ndarray:
    """A permutation of range(size) that moves only a key-chosen `fraction` of the positions.

    The chosen positions are permuted among themselves (a uniform permutation of the chosen
    positions); every other position stays where it is, so images under different keys keep a
    shared structure (the "restricted" family).
    """
    chosen = subset(stream, size, round(fraction * size))
    order = np.arange(size, dtype=np.int64)
    order[chosen] = chosen[permutation(stream, len(chosen))]
    return order


def bits(stream: KeyStream, size: int) -> np.ndarray:
    """`size` uniform booleans."""
    raw = np.frombuffer(stream.read((size + 7) // 8), dtype=np.uint8)
    return np.unpackbits(raw)[:size].astype(bool)


def choices(stream: KeyStream, size: int, options: int) -> np.ndarray:
    """`size` uniform integers in [0, options)."""
    return np.asarray([stream.below(options) for _ in range(size)], dtype=np.int64)
