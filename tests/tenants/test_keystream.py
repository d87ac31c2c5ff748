"""Tests for the SHAKE-256 key stream and the permutations and masks drawn from it."""

from __future__ import annotations

import hashlib
from collections import Counter
from itertools import permutations as all_orders

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchveil.tenants.keystream import (
    KeyStream,
    bits,
    choices,
    partial_permutation,
    permutation,
    subset,
)

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
secrets_32 = st.binary(min_size=32, max_size=32)


def chi_square(counts: np.ndarray) -> float:
    """Pearson's statistic against the uniform distribution over len(counts) cells."""
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


def chi_square_limit(cells: int) -> float:
    """A generous rejection threshold: the mean (df) plus eight standard deviations (sqrt 2df)."""
    df = cells - 1
    return df + 8 * (2 * df) ** 0.5


# --- the stream itself ----------------------------------------------------------------------
def test_stream_matches_its_definition() -> None:
    """SHAKE-256(len(label) || label || secret || counter): pinned so every machine agrees."""
    label = b"known-answer"
    prefix = len(label).to_bytes(2, "big") + label + SECRET
    expected = b"".join(
        hashlib.shake_256(prefix + counter.to_bytes(8, "big")).digest(4096) for counter in range(3)
    )
    assert KeyStream(SECRET, "known-answer").read(len(expected)) == expected


def test_known_answer_permutation() -> None:
    """A frozen vector: if this changes, every tenant's existing ciphertext becomes unreadable."""
    stream = KeyStream(SECRET, "known-answer")
    assert stream.read(16).hex() == "25822c48291743d1f47a8cdace6895c5"
    assert permutation(stream, 12).tolist() == [4, 7, 1, 0, 5, 6, 3, 10, 9, 2, 11, 8]
    assert stream.below(1000) == 328


@settings(max_examples=30, deadline=None)
@given(secret=secrets_32, label=st.text(max_size=20), sizes=st.lists(st.integers(0, 5000)))
def test_reads_in_pieces_equal_one_read(secret: bytes, label: str, sizes: list[int]) -> None:
    pieces = KeyStream(secret, label)
    joined = b"".join(pieces.read(size) for size in sizes)
    assert len(joined) == sum(sizes)
    assert joined == KeyStream(secret, label).read(sum(sizes))


@settings(max_examples=30, deadline=None)
@given(secret=secrets_32, label=st.text(max_size=20))
def test_deterministic_in_secret_and_label(secret: bytes, label: str) -> None:
    assert KeyStream(secret, label).read(100) == KeyStream(secret, label).read(100)
    assert (
        permutation(KeyStream(secret, label), 50).tolist()
        == permutation(KeyStream(secret, label), 50).tolist()
    )


@settings(max_examples=30, deadline=None)
@given(secret=secrets_32, other=secrets_32, label=st.text(max_size=20), suffix=st.text(min_size=1))
def test_different_secrets_or_labels_give_different_streams(
    secret: bytes, other: bytes, label: str, suffix: str
) -> None:
    stream = KeyStream(secret, label).read(64)
    assert KeyStream(secret, label + suffix).read(64) != stream
    if other != secret:
        assert KeyStream(other, label).read(64) != stream


def test_label_and_secret_are_separated() -> None:
    """The label length prefix keeps ("ab", secret) and ("a", "b" + secret) apart."""
    assert KeyStream(b"b" + SECRET, "a").read(64) != KeyStream(SECRET, "ab").read(64)


def test_repr_hides_the_secret() -> None:
    stream = KeyStream(SECRET, "label")
    assert repr(stream) == "KeyStream(<secret>)"
    assert SECRET.hex() not in repr(stream)


# --- uniform integers -----------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(secret=secrets_32, bound=st.integers(1, 2**70))
def test_below_is_in_range(secret: bytes, bound: int) -> None:
    stream = KeyStream(secret, "below")
    assert all(0 <= stream.below(bound) < bound for _ in range(20))


def test_below_one_is_zero_and_nonpositive_is_refused() -> None:
    stream = KeyStream(SECRET, "below")
    assert stream.below(1) == 0
    for bound in (0, -3):
        with pytest.raises(ValueError, match="bound must be positive"):
            stream.below(bound)


@pytest.mark.parametrize(
    ("bound", "draws"),
    [(7, 7000), (10, 5000), (192, 9600)],  # 192: one byte mod 192 would favour 0..63 twice over
)
@pytest.mark.parametrize("secret", [SECRET, OTHER_SECRET], ids=["secret-a", "secret-b"])
def test_below_is_unbiased(secret: bytes, bound: int, draws: int) -> None:
    stream = KeyStream(secret, f"chi-square/{bound}")
    counts = np.bincount([stream.below(bound) for _ in range(draws)], minlength=bound)
    assert chi_square(counts) < chi_square_limit(bound)


# --- permutations ---------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(secret=secrets_32, size=st.integers(0, 300))
def test_permutation_is_a_permutation(secret: bytes, size: int) -> None:
    order = permutation(KeyStream(secret, "perm"), size)
    assert order.dtype == np.int64
    assert sorted(order.tolist()) == list(range(size))


def test_fisher_yates_is_uniform_over_all_orders() -> None:
    """Each of the 24 orders of 4 elements appears about equally often (naive shuffles fail)."""
    stream = KeyStream(SECRET, "uniform-orders")
    counts = Counter(tuple(permutation(stream, 4).tolist()) for _ in range(4800))
    assert set(counts) == set(all_orders(range(4)))
    assert chi_square(np.array(list(counts.values()))) < chi_square_limit(24)


def test_different_keys_give_different_permutations() -> None:
    assert (
        permutation(KeyStream(SECRET, "p"), 64).tolist()
        != permutation(KeyStream(OTHER_SECRET, "p"), 64).tolist()
    )


@settings(max_examples=40, deadline=None)
@given(
    secret=secrets_32,
    size=st.integers(1, 400),
    fraction=st.floats(0.0, 1.0, allow_nan=False),
)
def test_partial_permutation_moves_about_the_fraction(
    secret: bytes, size: int, fraction: float
) -> None:
    order = partial_permutation(KeyStream(secret, "partial"), size, fraction)
    assert sorted(order.tolist()) == list(range(size))
    moved = int((order != np.arange(size)).sum())
    chosen = round(fraction * size)
    # Only the chosen positions may move; a uniform permutation of them fixes about one.
    assert moved <= chosen
    assert moved >= chosen - 8


def test_partial_permutation_extremes() -> None:
    stream = KeyStream(SECRET, "extremes")
    assert partial_permutation(stream, 30, 0.0).tolist() == list(range(30))
    full = partial_permutation(stream, 100, 1.0)
    assert int((full != np.arange(100)).sum()) >= 92


def test_partial_permutation_moves_key_chosen_positions() -> None:
    def moved(secret: bytes) -> set[int]:
        order = partial_permutation(KeyStream(secret, "which"), 200, 0.3)
        return set(np.flatnonzero(order != np.arange(200)).tolist())

    assert moved(SECRET) != moved(OTHER_SECRET)


# --- subsets, bits, choices -----------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(secret=secrets_32, size=st.integers(0, 300), data=st.data())
def test_subset_sizes(secret: bytes, size: int, data: st.DataObject) -> None:
    count = data.draw(st.integers(0, size))
    chosen = subset(KeyStream(secret, "subset"), size, count)
    assert len(chosen) == count
    assert len(set(chosen.tolist())) == count
    assert chosen.tolist() == sorted(chosen.tolist())
    assert all(0 <= index < size for index in chosen.tolist())


@pytest.mark.parametrize(("size", "count"), [(5, 6), (5, -1), (0, 1)])
def test_subset_refuses_impossible_counts(size: int, count: int) -> None:
    with pytest.raises(ValueError, match=f"cannot choose {count} of {size}"):
        subset(KeyStream(SECRET, "subset"), size, count)


@settings(max_examples=30, deadline=None)
@given(secret=secrets_32, size=st.integers(0, 2000))
def test_bits_have_the_requested_length(secret: bytes, size: int) -> None:
    drawn = bits(KeyStream(secret, "bits"), size)
    assert drawn.dtype == bool
    assert drawn.shape == (size,)


def test_bits_are_balanced() -> None:
    drawn = bits(KeyStream(SECRET, "balance"), 20000)
    assert abs(int(drawn.sum()) - 10000) < 8 * 71  # 8 standard deviations


def test_choices_are_in_range_and_cover_every_option() -> None:
    drawn = choices(KeyStream(SECRET, "choices"), 3000, 6)
    assert drawn.dtype == np.int64
    counts = np.bincount(drawn, minlength=6)
    assert len(counts) == 6
    assert chi_square(counts) < chi_square_limit(6)
