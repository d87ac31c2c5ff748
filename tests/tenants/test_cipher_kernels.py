"""The compiled loops (`kernels`, numba) give the bytes of the numpy reference in `hazmat`, for
every loop on random inputs, for every cipher both ways, in one thread and in several."""

from __future__ import annotations

import importlib.util
import threading

import numpy as np
import pytest

from patchveil.tenants.ciphers import available_ciphers, hazmat
from patchveil.tenants.ciphers.disposable import group_tables
from patchveil.tenants.ciphers.hazmat import (
    GatherMask,
    gather_nibble_halves,
    kernels_from_environment,
    move_and_transform_blocks,
    move_blocks,
    next_digit,
    pixel_draw_plan,
    pixel_orders,
    pixel_words_per_block,
    shuffle_block_pixels,
)
from patchveil.tenants.ciphers.le import nibble_halves
from tests.tenants.test_cipher_pins import pinned_cipher

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("numba") is None, reason="the compiled loops need numba"
)

# (image size, block size): rows of 12 bytes (uint32 words), 48 (uint64), 6 (uint16), 15 (bytes).
GEOMETRIES = [(32, 4), (64, 16), (8, 2), (15, 5)]


def both(operation, *arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`operation(out)` run by numpy and by the compiled loops into fresh outputs shaped like
    `arrays`, the outputs back."""
    results = []
    for implementation in ("numpy", "numba"):
        previous, hazmat.KERNELS = hazmat.KERNELS, implementation
        try:
            out = np.full_like(arrays[0], 0xA5)
            operation(out)
        finally:
            hazmat.KERNELS = previous
        results.append(out)
    return results[0], results[1]


@pytest.fixture(params=["serial", "parallel"])
def threads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every compiled loop is checked in the calling thread and split over two threads."""
    from patchveil.tenants.ciphers import kernels

    parallel = request.param == "parallel"
    monkeypatch.setattr(kernels, "THREADS", 2 if parallel else 1)
    monkeypatch.setattr(kernels, "PARALLEL_BYTES", 0)
    return request.param


def random_images(count: int, image_size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(
        0, 256, (count, 3 * image_size * image_size), dtype=np.uint8
    )


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("row_factor", [1, 2])  # 2: rows twice the table, as `le`'s nibbles
@pytest.mark.parametrize("image_size", [16, 5])  # rows of whole uint64 words, and not
def test_gather_and_mask_equals_numpy(
    masked: bool, row_factor: int, image_size: int, threads: str
) -> None:
    rng = np.random.default_rng(7)
    length = 3 * image_size * image_size
    source = rng.permutation(row_factor * length)[:length]
    mask = rng.integers(0, 256, length, dtype=np.uint8) if masked else np.zeros(length, np.uint8)
    table = GatherMask(source, mask)
    flat = random_images(9, image_size, 1)
    if row_factor == 2:
        flat = np.concatenate([flat, flat[:, ::-1]], axis=1)
    for step in (table, table.then(GatherMask(rng.permutation(length), mask[::-1].copy()))):
        numpy_out, numba_out = both(
            lambda out, step=step: step.apply(flat, out=out), flat[:, :length]
        )
        assert np.array_equal(numpy_out, numba_out)
    if row_factor == 1:
        encrypted = table.apply(flat)
        assert np.array_equal(table.inverse().apply(encrypted), flat)


@pytest.mark.parametrize("image_size", [32, 5])
def test_nibble_gathers_equal_their_definition_and_the_le_cipher(
    image_size: int, threads: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`gather_nibble_halves` is two gathers over [all high | all low] nibbles, joined; with
    `le`'s own tables it is `le`'s encryption and decryption."""
    rng = np.random.default_rng(10)
    length = 3 * image_size * image_size
    high, low = (
        GatherMask(
            rng.permutation(2 * length)[:length],
            rng.choice([0, 0x0F], length).astype(np.uint8),
        )
        for _ in range(2)
    )
    flat = random_images(9, image_size, 11)
    nibbles = np.concatenate([flat >> 4, flat & 0x0F], axis=1)
    expected = (np.take(nibbles, high.source, axis=1) ^ high.mask) << 4
    expected |= np.take(nibbles, low.source, axis=1) ^ low.mask
    numpy_out, numba_out = both(lambda out: gather_nibble_halves(high, low, flat, out), flat)
    assert np.array_equal(numpy_out, expected)
    assert np.array_equal(numba_out, expected)
    if image_size != 32:
        return
    cipher = pinned_cipher("le", 4, 32, ())
    images = flat.reshape(9, 32, 32, 3)
    monkeypatch.setattr(hazmat, "KERNELS", "numba")
    for table, transform in ((cipher._forward, cipher.encrypt), (cipher._inverse, cipher.decrypt)):
        out = np.empty_like(flat)
        gather_nibble_halves(*nibble_halves(table), flat, out)
        assert np.array_equal(out, transform(images).reshape(9, -1))


@pytest.mark.parametrize(("image_size", "block_size"), GEOMETRIES)
def test_moving_whole_blocks_equals_numpy(image_size: int, block_size: int, threads: str) -> None:
    flat = random_images(6, image_size, 2)
    blocks = (image_size // block_size) ** 2
    order = np.argsort(np.random.default_rng(3).random((6, blocks)), axis=1)
    numpy_out, numba_out = both(
        lambda out: move_blocks(flat, out, order, image_size, block_size), flat
    )
    assert np.array_equal(numpy_out, numba_out)
    inverse = np.argsort(order, axis=1)
    back = np.empty_like(flat)
    move_blocks(numba_out, back, inverse, image_size, block_size)
    assert np.array_equal(back, flat)


@pytest.mark.parametrize(("image_size", "block_size"), GEOMETRIES)
@pytest.mark.parametrize("group", ["none", "np", "cs", "rf", "np_cs_rf"])
@pytest.mark.parametrize("inverse", [False, True])
def test_moving_and_transforming_blocks_equals_numpy(
    image_size: int, block_size: int, group: str, inverse: bool, threads: str
) -> None:
    rng = np.random.default_rng(4)
    count, blocks = 7, (image_size // block_size) ** 2
    flat = random_images(count, image_size, 5)
    orders, flip_masks = group_tables(group, block_size)
    moves, move_of = np.unique(orders, axis=0, return_inverse=True)
    if inverse:
        moves = np.argsort(moves, axis=1)
    element = rng.integers(0, len(orders), (count, blocks))
    block_order = np.argsort(rng.random((count, blocks)), axis=1)
    flips = flip_masks[:, 0][element] if flip_masks.any() else None
    move_index = move_of.reshape(-1)[element] if len(moves) > 1 else None
    numpy_out, numba_out = both(
        lambda out: move_and_transform_blocks(
            flat, out, block_order, flips, move_index, moves, image_size, block_size
        ),
        flat,
    )
    assert np.array_equal(numpy_out, numba_out)


def test_any_flip_byte_and_unaligned_arrays_equal_numpy() -> None:
    """Flip values other than 0xFF, and arrays one byte off word alignment (bytes, not words)."""
    rng = np.random.default_rng(6)
    image_size, block_size, count = 32, 4, 5
    blocks, length = 64, 48
    buffer = np.zeros(count * 3 * image_size**2 + 1, dtype=np.uint8)
    flat = buffer[1:].reshape(count, -1)
    flat[...] = random_images(count, image_size, 8)
    assert flat.__array_interface__["data"][0] % 2 == 1
    orders = np.stack([np.arange(length), rng.permutation(length), rng.permutation(length)])
    block_order = np.argsort(rng.random((count, blocks)), axis=1)
    flips = rng.integers(0, 256, (count, blocks), dtype=np.uint8)
    move_index = rng.integers(0, 3, (count, blocks))
    numpy_out, numba_out = both(
        lambda out: move_and_transform_blocks(
            flat, out, block_order, flips, move_index, orders, image_size, block_size
        ),
        flat,
    )
    assert np.array_equal(numpy_out, numba_out)


CIPHER_SETTINGS = [(name, ()) for name in available_ciphers()] + [
    ("disposable", (("group", "none"), ("window", 2))),
    ("disposable", (("group", "np_cs_rf"),)),
    ("disposable", (("group", "np_cs_rf"), ("window", 4))),
    ("disposable", (("group", "px"),)),
    ("disposable", (("group", "np_cs_px"), ("window", 2))),
]


@pytest.mark.parametrize(("name", "params"), CIPHER_SETTINGS)
@pytest.mark.parametrize(("image_size", "block_size"), [(32, 4), (64, 16)])
def test_every_cipher_gives_the_numpy_bytes_both_ways(
    name: str, params: tuple, image_size: int, block_size: int, threads: str
) -> None:
    cipher = pinned_cipher(name, block_size, image_size, params)
    images = np.random.default_rng(9).integers(
        0, 256, (11, image_size, image_size, 3), dtype=np.uint8
    )
    nonces = np.arange(11, dtype=np.int64) * 7919 + 2**62 if cipher.per_image else None
    encrypted, decrypted = [], []
    for implementation in ("numpy", "numba"):
        previous, hazmat.KERNELS = hazmat.KERNELS, implementation
        try:
            encrypted.append(cipher.encrypt(images, nonces))
            decrypted.append(cipher.decrypt(images, nonces))
        finally:
            hazmat.KERNELS = previous
    assert np.array_equal(encrypted[0], encrypted[1])
    assert np.array_equal(decrypted[0], decrypted[1])
    assert np.array_equal(cipher.decrypt(encrypted[1], nonces), images)


@pytest.mark.parametrize(("image_size", "block_size"), [*GEOMETRIES, (6, 1), (64, 32)])
@pytest.mark.parametrize("inverse", [False, True])
def test_shuffling_pixels_inside_blocks_equals_numpy(
    image_size: int, block_size: int, inverse: bool, threads: str
) -> None:
    images = random_images(5, image_size, seed=block_size)
    side = image_size // block_size
    words = np.random.default_rng(7).integers(
        0, 2**64, (5, side * side * pixel_words_per_block(block_size**2)), dtype=np.uint64
    )

    def shuffled(out: np.ndarray) -> None:
        out[...] = images
        shuffle_block_pixels(out, words, image_size, block_size, inverse)

    reference, compiled = both(shuffled, images)
    assert np.array_equal(reference, compiled)
    # Each block keeps its pixels (as whole pixels), and the other direction undoes it.
    blocks = reference.reshape(5, side, block_size, side, block_size, 3).transpose(0, 1, 3, 2, 4, 5)
    before = images.reshape(5, side, block_size, side, block_size, 3).transpose(0, 1, 3, 2, 4, 5)
    as_pixels = (5, side * side, block_size * block_size, 3)
    assert np.array_equal(
        np.sort(blocks.reshape(as_pixels).view("V3"), axis=2),
        np.sort(before.reshape(as_pixels).view("V3"), axis=2),
    )
    shuffle_block_pixels(compiled, words, image_size, block_size, not inverse)
    assert np.array_equal(compiled, images)


def test_pixel_orders_are_permutations_drawn_near_uniformly() -> None:
    """Every word draws ranges whose product is at most 2^48 (a 4×4 block's 16! < 2^45 in one
    word); each digit is the exact ⌊x·r / 2^64⌋; the orders of 4-pixel blocks from random words
    cover the 24 permutations about equally (chi-square, 23 degrees of freedom)."""
    for pixels in (4, 16, 256, 1024):
        plan = pixel_draw_plan(pixels)
        for word in range(int(plan[-1]) + 1):
            ranges = [pixels - step for step in np.flatnonzero(plan == word)]
            assert 1 < np.prod(ranges, dtype=object) <= 2**48
    assert pixel_words_per_block(16) == 1
    fractions = np.random.default_rng(5).integers(0, 2**64, 1000, dtype=np.uint64)
    for choices in (2, 16, 255, 2**16):
        digits, rest = next_digit(fractions, choices)
        for fraction, digit, left in zip(fractions[:50], digits[:50], rest[:50], strict=True):
            assert divmod(int(fraction) * choices, 2**64) == (int(digit), int(left))
    draws = 48_000
    words = np.random.default_rng(3).integers(0, 2**64, (draws, 1), dtype=np.uint64)
    orders = pixel_orders(words, 4)
    assert (np.sort(orders, axis=1) == np.arange(4)).all()
    _, counts = np.unique(orders, axis=0, return_counts=True)
    assert len(counts) == 24
    expected = draws / 24
    assert ((counts - expected) ** 2 / expected).sum() < 60  # p ≈ 4e-5 under uniformity


def test_threads_calling_at_once_each_get_their_own_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """numba's threads take one threaded loop at a time; a caller that finds them busy runs its
    loop in its own thread, with the same result."""
    from patchveil.tenants.ciphers import kernels

    monkeypatch.setattr(hazmat, "KERNELS", "numba")
    monkeypatch.setattr(kernels, "THREADS", 2)
    monkeypatch.setattr(kernels, "PARALLEL_BYTES", 0)
    cipher = pinned_cipher("conventional", 4, 32, ())
    batches = [random_images(64, 32, seed).reshape(64, 32, 32, 3) for seed in range(8)]
    expected = [cipher.encrypt(batch) for batch in batches]
    results: dict[int, np.ndarray] = {}

    def encrypt(index: int) -> None:
        for _ in range(20):
            results[index] = cipher.encrypt(batches[index])

    workers = [threading.Thread(target=encrypt, args=(index,)) for index in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert all(np.array_equal(results[index], expected[index]) for index in range(8))


def test_indices_out_of_range_are_refused_before_any_loop_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hazmat, "KERNELS", "numba")
    flat = random_images(2, 32, 0)
    order = np.tile(np.arange(64), (2, 1))
    order[1, 5] = 64
    with pytest.raises(ValueError, match=r"block_order must lie in \[0, 64\)"):
        move_blocks(flat, np.empty_like(flat), order, 32, 4)
    with pytest.raises(ValueError, match=r"block_order must be \(2, 64\)"):
        move_blocks(flat, np.empty_like(flat), order[:1], 32, 4)
    table = GatherMask(np.arange(3072), np.zeros(3072, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\(N, 3072\)"):
        table.apply(flat[:, :3000])


def test_an_output_over_its_input_is_left_to_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop would read bytes it has already overwritten: in place, numpy (which buffers) runs."""
    monkeypatch.setattr(hazmat, "KERNELS", "numba")
    flat = random_images(3, 32, 12)
    table = GatherMask(np.random.default_rng(13).permutation(3072), np.full(3072, 7, np.uint8))
    expected = table.apply(flat)
    assert np.array_equal(table.apply(flat, out=flat), expected)


@pytest.mark.parametrize(
    ("value", "expected"), [("numpy", "numpy"), ("numba", "numba"), (" NUMBA ", "numba")]
)
def test_the_environment_chooses_the_implementation(
    value: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATCHVEIL_KERNELS", value)
    assert kernels_from_environment() == expected


def test_kernel_threads_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from patchveil.tenants.ciphers import kernels

    monkeypatch.delenv("PATCHVEIL_KERNEL_THREADS", raising=False)
    assert kernels.threads_from_environment() == 1
    monkeypatch.setenv("PATCHVEIL_KERNEL_THREADS", "2")
    assert kernels.threads_from_environment() == min(2, kernels.numba.config.NUMBA_NUM_THREADS)
    monkeypatch.setenv("PATCHVEIL_KERNEL_THREADS", "0")
    with pytest.raises(ValueError, match="PATCHVEIL_KERNEL_THREADS must be a whole number"):
        kernels.threads_from_environment()


def test_an_unknown_implementation_is_refused_naming_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATCHVEIL_KERNELS", "cuda")
    with pytest.raises(ValueError, match="one of numba, numpy"):
        kernels_from_environment()
    monkeypatch.delenv("PATCHVEIL_KERNELS")
    assert kernels_from_environment() == "numba"
