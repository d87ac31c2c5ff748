"""Ciphers stream a batch in chunks: the result does not depend on the chunk size, the key
stream is still exactly its counter-mode definition, and memory stays near one chunk."""

from __future__ import annotations

import hashlib
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchveil.tenants.ciphers import available_ciphers, base
from patchveil.tenants.ciphers.disposable import stable_argsort
from patchveil.tenants.ciphers.hazmat import (
    ALL_CHANNEL_PERMUTATIONS,
    channel_orders,
    transform_blocks,
)
from patchveil.tenants.keystream import KeyStream
from tests.tenants.test_cipher_pins import PINNED_SECRET, pinned_cipher

IMAGE_BYTES = 32 * 32 * 3


def reference_stream(secret: bytes, label: str, count: int) -> bytes:
    """The stream by its definition: whole 4096-byte chunks of SHAKE-256, concatenated."""
    label_bytes = label.encode()
    prefix = len(label_bytes).to_bytes(2, "big") + label_bytes + secret
    chunks = (count + 4095) // 4096
    return b"".join(
        hashlib.shake_256(prefix + counter.to_bytes(8, "big")).digest(4096)
        for counter in range(chunks)
    )[:count]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 9000), min_size=1, max_size=6))
def test_stream_read_in_any_pieces_is_its_definition(sizes: list[int]) -> None:
    stream = KeyStream(PINNED_SECRET, "pieces")
    joined = b"".join(stream.read(size) for size in sizes)
    assert joined == reference_stream(PINNED_SECRET, "pieces", sum(sizes))


@pytest.mark.parametrize(
    ("name", "params"),
    [(name, ()) for name in available_ciphers()]
    + [("disposable", (("group", "np_cs_rf"), ("window", 2)))],
)
def test_chunk_size_does_not_change_the_ciphertext(
    name: str, params: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    cipher = pinned_cipher(name, 4, 32, params)
    images = np.random.default_rng(1).integers(0, 256, (11, 32, 32, 3), dtype=np.uint8)
    nonces = np.arange(11, dtype=np.int64) + 2**61 if cipher.per_image else None
    whole = cipher.encrypt(images, nonces)
    # A chunk of a few images: 11 images in several chunks, the last one short.
    monkeypatch.setattr(base, "CHUNK_BYTES", 3 * cipher.working_copies * IMAGE_BYTES)
    assert cipher.chunk_images() == 3
    assert np.array_equal(cipher.encrypt(images, nonces), whole)
    assert np.array_equal(cipher.decrypt(whole, nonces), images)


@pytest.mark.parametrize(
    ("name", "params"),
    [(name, ()) for name in available_ciphers()]
    + [("disposable", (("group", "np_cs_rf"),)), ("disposable", (("group", "none"),))],
)
def test_peak_memory_is_input_output_and_about_one_chunk(
    name: str, params: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk_bytes = 2**20
    monkeypatch.setattr(base, "CHUNK_BYTES", chunk_bytes)
    cipher = pinned_cipher(name, 4, 32, params)
    count = 1024  # 3 MiB of images: three chunks or more
    images = np.random.default_rng(2).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    nonces = np.arange(count, dtype=np.int64) if cipher.per_image else None
    tracemalloc.start()
    try:
        encrypted = cipher.encrypt(images, nonces)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    beyond_output = peak - encrypted.nbytes
    assert beyond_output <= 2 * chunk_bytes, f"{beyond_output / chunk_bytes:.2f} chunks"


TORCH_DEVICES = [
    "cpu",  # the torch path itself, checkable on any machine
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not __import__("torch").cuda.is_available(), reason="needs a CUDA device"
        ),
    ),
]


@pytest.mark.parametrize("device", TORCH_DEVICES)
@pytest.mark.parametrize(
    ("name", "params"),
    [(name, ()) for name in available_ciphers()]
    + [
        ("disposable", (("group", "np_cs_rf"), ("window", 2))),
        ("disposable", (("group", "none"),)),
    ],
)
def test_torch_path_gives_the_numpy_result(
    name: str, params: tuple, device: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cipher = pinned_cipher(name, 4, 32, params)
    images = np.random.default_rng(3).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    nonces = np.arange(7, dtype=np.int64) if cipher.per_image else None
    expected = cipher.encrypt(images, nonces)
    monkeypatch.setattr(base, "CHUNK_BYTES", 3 * cipher.working_copies * IMAGE_BYTES)
    on_device = cipher.encrypt(images, nonces, device=device)
    assert on_device.dtype == np.uint8 and np.array_equal(on_device, expected)
    assert np.array_equal(cipher.decrypt(expected, nonces, device=device), images)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 9000), st.integers(0, 3))
def test_head_is_the_start_of_the_stream_whatever_was_read(count: int, read_before: int) -> None:
    stream = KeyStream(PINNED_SECRET, "head")
    stream.read(read_before * 1000)
    assert stream.head(count) == reference_stream(PINNED_SECRET, "head", count)


def test_fast_argsort_equals_the_stable_one_even_with_ties() -> None:
    values = np.random.default_rng(4).integers(0, 2**64, (50, 64), dtype=np.uint64)
    values[3, 10] = values[3, 40]  # ties: only the stable sort orders them by position
    values[7, :] = 5
    assert np.array_equal(stable_argsort(values), np.argsort(values, axis=1, kind="stable"))


@pytest.mark.parametrize("channels", [list(order) for order in ALL_CHANNEL_PERMUTATIONS])
@pytest.mark.parametrize("flip_value", [0, 0xFF])
def test_channel_shuffle_is_the_gather_it_replaces(channels: list[int], flip_value: int) -> None:
    blocks = np.random.default_rng(5).integers(0, 256, (9, 48), dtype=np.uint8)
    order = channel_orders(4, np.array([channels]))[0]
    target = np.empty_like(blocks)
    transform_blocks(blocks, target, order, flip_value)
    assert np.array_equal(target, blocks[:, order] ^ np.uint8(flip_value))
