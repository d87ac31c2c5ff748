"""Tests for every registered cipher: exact round trips, determinism, structure, bad input."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchveil.errors import CipherConfigError, ImageFormatError, PatchveilError
from patchveil.groups import window_of_blocks
from patchveil.tenants.ciphers import (
    Cipher,
    available_ciphers,
    check_spec,
    cipher_class,
    create_cipher,
    key_space_bits,
    register_cipher,
)
from patchveil.tenants.ciphers.hazmat import block_index
from patchveil.tenants.keys import CipherSpec, Key
from patchveil.tenants.keystore import PASSPHRASE_ENV, KeyStore
from tests.helpers import assert_no_key_material

REPO_ROOT = Path(__file__).resolve().parents[2]
CIPHERS = available_ciphers()
KEYED = [name for name in CIPHERS if name != "plain"]
# Ciphers that draw a fresh transform for every image from (key, nonce).
PER_IMAGE = [name for name in CIPHERS if cipher_class(name).per_image]
# Block ciphers that are one fixed gather of bytes plus one XOR mask for every image.
BLOCK_GATHER = ["conventional", "etc", "invariant", "restricted"]
# Block ciphers that apply the same in-block operation to every block.
SHARED_IN_BLOCK = ["conventional", "invariant", "le", "restricted"]


def nonces_for(cipher: Cipher, count: int, start: int = 0) -> np.ndarray | None:
    """One nonce per image (a sample id) for per-image ciphers; None for the others."""
    return np.arange(start, start + count, dtype=np.int64) if cipher.per_image else None


def make_key(name: str, block_size: int = 4, image_size: int = 32, **params: float) -> Key:
    return Key.generate("hospital", CipherSpec(name, block_size, image_size, tuple(params.items())))


def make_cipher(name: str, block_size: int = 4, image_size: int = 32, **params: float) -> Cipher:
    return create_cipher(make_key(name, block_size, image_size, **params))


def random_images(count: int, image_size: int = 32, seed: int = 0) -> np.ndarray:
    """Test images; numpy's PRNG is fine here (content, not key material)."""
    generator = np.random.default_rng(seed)
    return generator.integers(0, 256, size=(count, image_size, image_size, 3), dtype=np.uint8)


def recover_gather(cipher: Cipher) -> tuple[np.ndarray, np.ndarray]:
    """(source, mask) with `encrypt(x).flat[d] == x.flat[source[d]] ^ mask[d]`, found by probing.

    Black-box: the all-zero image reveals the mask; two images holding the low and the high
    byte of each position's index reveal where each output byte came from.
    """
    size = cipher.spec.image_size
    positions = np.arange(size * size * 3, dtype=np.int64)
    assert positions.size < 2**16
    mask = cipher.encrypt(np.zeros((size, size, 3), dtype=np.uint8)).reshape(-1)
    probes = np.stack([(positions >> shift) & 0xFF for shift in (0, 8)]).astype(np.uint8)
    seen = cipher.encrypt(probes.reshape(2, size, size, 3)).reshape(2, -1) ^ mask
    source = seen[0].astype(np.int64) | (seen[1].astype(np.int64) << 8)
    assert sorted(source.tolist()) == positions.tolist()
    return source, mask


def block_tables(cipher: Cipher) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The block order (N,), element orders (N, L) and flips (N, L) of a byte-gather cipher."""
    spec = cipher.spec
    blocks = block_index(spec.image_size, spec.block_size)
    count, length = blocks.shape
    source, mask = recover_gather(cipher)
    block_of = np.empty(blocks.size, dtype=np.int64)
    block_of[blocks] = np.arange(count)[:, None]
    element_of = np.empty(blocks.size, dtype=np.int64)
    element_of[blocks] = np.arange(length)[None, :]
    source_block = block_of[source[blocks]]
    assert (source_block == source_block[:, :1]).all(), "an encrypted block mixes plain blocks"
    flips = mask[blocks]
    assert np.isin(flips, (0, 0xFF)).all()
    return source_block[:, 0], element_of[source[blocks]], flips == 0xFF


def split_blocks(images: np.ndarray, block_size: int) -> np.ndarray:
    """[N, H, W, 3] → [N, blocks, block_size² · 3] in raster order."""
    count, size = images.shape[0], images.shape[1]
    return images.reshape(count, -1)[:, block_index(size, block_size)]


# --- exact round trip ---------------------------------------------------------------------
@st.composite
def cipher_cases(draw: st.DrawFn, name: str) -> tuple[CipherSpec, np.ndarray]:
    image_size = draw(st.integers(8, 48))
    block_size = draw(st.sampled_from([d for d in range(1, image_size + 1) if image_size % d == 0]))
    params = {
        param: draw(st.floats(0.0, 1.0, allow_nan=False))
        for param in cipher_class(name).defaults
        if param.endswith("_fraction")
    }
    count = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    spec = CipherSpec(name, block_size, image_size, tuple(params.items()))
    return spec, random_images(count, image_size, seed)


@pytest.mark.parametrize("name", CIPHERS)
def test_round_trip_is_exact(name: str) -> None:
    @settings(max_examples=25, deadline=None)
    @given(case=cipher_cases(name))
    def check(case: tuple[CipherSpec, np.ndarray]) -> None:
        spec, images = case
        cipher = create_cipher(Key.generate("hospital", spec))
        nonces = nonces_for(cipher, len(images), start=spec.image_size)
        before = images.copy()
        encrypted = cipher.encrypt(images, nonces)
        assert encrypted.dtype == np.uint8
        assert encrypted.shape == images.shape
        assert np.array_equal(images, before), "encrypt changed its input"
        assert not np.shares_memory(encrypted, images)
        decrypted = cipher.decrypt(encrypted, nonces)
        assert decrypted.dtype == np.uint8
        assert np.array_equal(decrypted, images)
        assert np.array_equal(cipher.encrypt(cipher.decrypt(images, nonces), nonces), images)

    check()


@pytest.mark.parametrize("name", CIPHERS)
def test_single_image_and_empty_batch(name: str) -> None:
    cipher = make_cipher(name)
    images = random_images(3, seed=1)
    nonces = nonces_for(cipher, 3)
    one_nonce = None if nonces is None else nonces[1:2]
    batch = cipher.encrypt(images, nonces)
    single = cipher.encrypt(images[1], one_nonce)
    assert single.shape == (32, 32, 3)
    assert np.array_equal(single, batch[1])
    assert np.array_equal(cipher.decrypt(single, one_nonce), images[1])
    empty = np.zeros((0, 32, 32, 3), dtype=np.uint8)
    assert cipher.encrypt(empty, nonces_for(cipher, 0)).shape == (0, 32, 32, 3)
    assert cipher.decrypt(empty, nonces_for(cipher, 0)).shape == (0, 32, 32, 3)


@pytest.mark.parametrize("name", CIPHERS)
def test_a_batch_is_encrypted_as_its_images_one_by_one(name: str) -> None:
    """One key, one transform per image (per nonce, for a per-image cipher)."""
    cipher = make_cipher(name)
    images = random_images(4, seed=2)
    nonces = nonces_for(cipher, 4)
    batch = cipher.encrypt(images, nonces)
    for index in range(len(images)):
        one = None if nonces is None else nonces[index : index + 1]
        assert np.array_equal(batch[index], cipher.encrypt(images[index : index + 1], one)[0])


@pytest.mark.parametrize("name", sorted(set(CIPHERS) - set(PER_IMAGE)))
def test_every_image_gets_the_same_transform(name: str) -> None:
    cipher = make_cipher(name)
    same = np.repeat(random_images(1, seed=2), 3, axis=0)
    encrypted = cipher.encrypt(same)
    assert (encrypted == encrypted[0]).all()


@pytest.mark.parametrize("name", PER_IMAGE)
def test_per_image_ciphers_draw_a_transform_per_nonce(name: str) -> None:
    cipher = make_cipher(name)
    same = np.repeat(random_images(1, seed=2), 3, axis=0)
    encrypted = cipher.encrypt(same, np.array([7, 8, 7]))
    assert np.array_equal(encrypted[0], encrypted[2])
    assert not np.array_equal(encrypted[0], encrypted[1])
    assert not np.array_equal(cipher.decrypt(encrypted[:1], np.array([8])), same[:1])
    with pytest.raises(CipherConfigError, match="one nonce per image"):
        cipher.encrypt(same)
    with pytest.raises(CipherConfigError, match="nonces must be 3 integers"):
        cipher.encrypt(same, np.array([1, 2]))
    with pytest.raises(CipherConfigError, match="nonces must be 3 integers"):
        cipher.decrypt(same, np.array([1.0, 2.0, 3.0]))


@pytest.mark.parametrize("name", CIPHERS)
def test_non_contiguous_input(name: str) -> None:
    cipher = make_cipher(name)
    images = random_images(4, seed=3)
    view = images[::2, :, ::-1]
    nonces = nonces_for(cipher, len(view))
    assert np.array_equal(cipher.decrypt(cipher.encrypt(view, nonces), nonces), view)
    assert np.array_equal(cipher.encrypt(view, nonces), cipher.encrypt(view.copy(), nonces))


# --- what the ciphertext looks like ---------------------------------------------------------
@pytest.mark.parametrize("name", CIPHERS)
def test_encryption_changes_the_image(name: str) -> None:
    cipher = make_cipher(name)
    images = random_images(4, seed=4)
    encrypted = cipher.encrypt(images, nonces_for(cipher, 4))
    if name == "plain":
        assert np.array_equal(encrypted, images)
        return
    for plain_image, cipher_image in zip(images, encrypted, strict=True):
        assert not np.array_equal(plain_image, cipher_image)
        assert (plain_image != cipher_image).mean() > 0.2


@pytest.mark.parametrize("name", KEYED)
def test_two_tenants_get_different_ciphertexts(name: str) -> None:
    hospital = create_cipher(Key.generate("hospital", CipherSpec(name, 4, 32)))
    bank = create_cipher(Key.generate("bank", CipherSpec(name, 4, 32)))
    images = random_images(2, seed=5)
    nonces = nonces_for(hospital, 2)
    assert not np.array_equal(hospital.encrypt(images, nonces), bank.encrypt(images, nonces))
    assert not np.array_equal(bank.decrypt(hospital.encrypt(images, nonces), nonces), images)


@pytest.mark.parametrize("name", CIPHERS)
def test_same_key_same_ciphertext(name: str) -> None:
    key = make_key(name)
    images = random_images(2, seed=6)
    first, second = create_cipher(key), create_cipher(key)
    nonces = nonces_for(first, 2)
    assert np.array_equal(first.encrypt(images, nonces), second.encrypt(images, nonces))


def test_same_key_same_ciphertext_in_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys written here, loaded and used by a fresh interpreter: identical bytes."""
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    store = KeyStore(tmp_path / "store")
    keys = {
        name: store.create(name, CipherSpec(name, 4, 32, (("block_fraction", 0.5),)))
        if name == "restricted"
        else store.create(name, CipherSpec(name, 4, 32))
        for name in CIPHERS
    }
    images = random_images(3, seed=7)
    np.save(tmp_path / "plain.npy", images)
    script = (
        "import sys\n"
        "import numpy as np\n"
        "from patchveil.tenants.ciphers import create_cipher\n"
        "from patchveil.tenants.keystore import KeyStore\n"
        "store, images = KeyStore(sys.argv[1]), np.load(sys.argv[2])\n"
        "ciphers = {n: create_cipher(store.load(n)) for n in sys.argv[4:]}\n"
        "ids = np.arange(len(images))\n"
        "out = {n: c.encrypt(images, ids if c.per_image else None) for n, c in ciphers.items()}\n"
        "np.savez(sys.argv[3], **out)\n"
        "print('encrypted', sorted(out))\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != PASSPHRASE_ENV}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [environment.get("PYTHONPATH")])]
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(store.root),
            str(tmp_path / "plain.npy"),
            str(tmp_path / "cipher.npz"),
            *CIPHERS,
        ],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert_no_key_material(list(keys.values()), [result.stdout, result.stderr])
    with np.load(tmp_path / "cipher.npz") as theirs:
        assert sorted(theirs.files) == CIPHERS
        for name, key in keys.items():
            cipher = create_cipher(key)
            ours = cipher.encrypt(images, nonces_for(cipher, len(images)))
            assert theirs[name].tobytes() == ours.tobytes(), name
    assert_no_key_material(list(keys.values()), [tmp_path / "cipher.npz", tmp_path / "store"])


@pytest.mark.parametrize("name", CIPHERS)
def test_ciphertext_files_hold_no_key_material(name: str, tmp_path: Path) -> None:
    key = make_key(name)
    cipher = create_cipher(key)
    encrypted = cipher.encrypt(random_images(8, seed=8), nonces_for(cipher, 8))
    np.save(tmp_path / "encrypted.npy", encrypted)
    assert_no_key_material(key, [encrypted, tmp_path / "encrypted.npy"])


# --- bad input ------------------------------------------------------------------------------
BAD_IMAGES = {
    "float": np.zeros((2, 32, 32, 3), dtype=np.float32),
    "int64": np.zeros((2, 32, 32, 3), dtype=np.int64),
    "no channels": np.zeros((2, 32, 32), dtype=np.uint8),
    "four channels": np.zeros((2, 32, 32, 4), dtype=np.uint8),
    "channels first": np.zeros((2, 3, 32, 32), dtype=np.uint8),
    "wrong size": np.zeros((2, 16, 16, 3), dtype=np.uint8),
    "not square": np.zeros((2, 32, 16, 3), dtype=np.uint8),
    "five dims": np.zeros((1, 2, 32, 32, 3), dtype=np.uint8),
    "flat": np.zeros(32 * 32 * 3, dtype=np.uint8),
    "list": np.zeros((1, 32, 32, 3), dtype=np.uint8).tolist(),
    "scalar": 7,
}


@pytest.mark.parametrize("bad", sorted(BAD_IMAGES))
@pytest.mark.parametrize("name", CIPHERS)
def test_bad_images_are_refused_naming_the_expected_shape(name: str, bad: str) -> None:
    cipher = make_cipher(name)
    for operation in (cipher.encrypt, cipher.decrypt):
        with pytest.raises(ImageFormatError) as caught:
            operation(BAD_IMAGES[bad])
        message = str(caught.value)
        assert "[N, 32, 32, 3]" in message
        assert "uint8" in message
        assert isinstance(caught.value, PatchveilError)


def test_bad_image_messages_say_what_was_given() -> None:
    cipher = make_cipher("conventional")
    with pytest.raises(ImageFormatError, match="float32"):
        cipher.encrypt(BAD_IMAGES["float"])
    with pytest.raises(ImageFormatError, match=r"\[2, 16, 16, 3\]"):
        cipher.encrypt(BAD_IMAGES["wrong size"])
    with pytest.raises(ImageFormatError, match="list"):
        cipher.encrypt(BAD_IMAGES["list"])


def test_unknown_cipher_lists_the_choices() -> None:
    spec = CipherSpec("rot13", 4, 32)
    for attempt in (
        lambda: create_cipher(Key.generate("hospital", spec)),
        lambda: key_space_bits(spec),
        lambda: check_spec(spec),
        lambda: cipher_class("rot13"),
    ):
        with pytest.raises(CipherConfigError, match="unknown cipher 'rot13'") as caught:
            attempt()
        for name in CIPHERS:
            assert name in str(caught.value)


@pytest.mark.parametrize("name", CIPHERS)
def test_unknown_parameter_lists_the_parameters(name: str) -> None:
    spec = CipherSpec(name, 4, 32, (("strength", 0.5),))
    with pytest.raises(CipherConfigError, match=f"cipher '{name}' has no parameter strength") as e:
        create_cipher(Key.generate("hospital", spec))
    allowed = sorted(cipher_class(name).defaults)
    assert f"its parameters are: {', '.join(allowed) or 'none'}" in str(e.value)


def test_restricted_parameters_are_listed_and_checked() -> None:
    with pytest.raises(CipherConfigError, match="block_fraction, flip_fraction, pixel_fraction"):
        check_spec(CipherSpec("restricted", 4, 32, (("colour", 1.0),)))
    with pytest.raises(CipherConfigError, match="must be a float"):
        check_spec(CipherSpec("restricted", 4, 32, (("pixel_fraction", "lots"),)))
    for value in (-0.1, 1.5, "nan"):
        with pytest.raises(CipherConfigError, match="must lie in"):
            check_spec(CipherSpec("restricted", 4, 32, (("flip_fraction", value),)))
    # Text from the command line (`--param k=v`) is converted to the parameter's type.
    spec = check_spec(CipherSpec("restricted", 4, 32, (("block_fraction", "0.25"),)))
    assert spec.param_dict == {
        "block_fraction": 0.25,
        "pixel_fraction": 0.35,
        "flip_fraction": 0.35,
    }


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register_cipher("conventional")(type("Again", (Cipher,), {}))
    assert available_ciphers() == CIPHERS


# --- key space ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CIPHERS)
@pytest.mark.parametrize(("block_size", "image_size"), [(4, 32), (16, 32), (2, 8), (8, 8)])
def test_key_space_bits(name: str, block_size: int, image_size: int) -> None:
    spec = CipherSpec(name, block_size, image_size)
    bits = key_space_bits(spec)
    assert bits == create_cipher(Key.generate("hospital", spec)).bits
    if name == "plain":
        assert bits == 0
    else:
        assert bits > 0


def test_key_space_orders_the_family() -> None:
    """Restricting permutations shrinks the key space; full block scrambling grows it again."""
    restricted, invariant, conventional = (
        key_space_bits(CipherSpec(name, 4, 32))
        for name in ("restricted", "invariant", "conventional")
    )
    assert 0 < restricted < invariant < conventional
    full = key_space_bits(CipherSpec("restricted", 4, 32, (("block_fraction", 1.0),)))
    assert restricted < full
    nothing = CipherSpec(
        "restricted",
        4,
        32,
        (("block_fraction", 0.0), ("pixel_fraction", 0.0), ("flip_fraction", 0.0)),
    )
    assert key_space_bits(nothing) == 0


def test_conventional_key_space_is_the_textbook_count() -> None:
    """N! block orders · L! element orders · 2^L flips, for N = 4, L = 12 (4×4 image, 2×2 blocks)."""
    expected = math.log2(math.factorial(4) * math.factorial(12) * 2**12)
    assert key_space_bits(CipherSpec("conventional", 2, 4)) == pytest.approx(expected)


# --- secrets stay inside --------------------------------------------------------------------
@pytest.mark.parametrize("name", CIPHERS)
def test_ciphers_refuse_pickling_and_hide_the_key(name: str) -> None:
    key = make_key(name)
    cipher = create_cipher(key)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(cipher, protocol=protocol)
    with pytest.raises(TypeError, match="cannot be pickled"):
        cloudpickle.dumps(cipher)
    with pytest.raises(TypeError):
        copy.deepcopy(cipher)
    assert repr(cipher).startswith(f"{type(cipher).__name__}(key={key.key_id}, version=1")
    assert_no_key_material(key, [repr(cipher), str(cipher)])


# --- structure of each cipher ---------------------------------------------------------------
@pytest.mark.parametrize("name", BLOCK_GATHER)
def test_each_encrypted_block_comes_from_one_plain_block(name: str) -> None:
    """Every block stays one ViT token: block_tables asserts that no encrypted block mixes two."""
    block_order, element_orders, _ = block_tables(make_cipher(name, 4, 32))
    assert sorted(block_order.tolist()) == list(range(64))
    for row in element_orders:
        assert sorted(row.tolist()) == list(range(48))


@pytest.mark.parametrize("name", ["le", "pixel"])
def test_changing_one_unit_changes_one_unit(name: str) -> None:
    """`le` keeps blocks in place; `pixel` keeps pixels in place."""
    cipher = make_cipher(name, 4, 32)
    images = random_images(1, seed=9)
    changed = images.copy()
    changed[0, 9, 13] ^= 0xFF  # pixel (9, 13), in block (2, 3)
    difference = np.any(cipher.encrypt(images) != cipher.encrypt(changed), axis=-1)[0]
    rows, columns = np.nonzero(difference)
    if name == "pixel":
        assert (rows.tolist(), columns.tolist()) == ([9], [13])
    else:
        assert set(rows.tolist()) <= {8, 9, 10, 11} and set(columns.tolist()) <= {12, 13, 14, 15}


def test_conventional_tables_match_its_documented_structure() -> None:
    """Encrypted block j, element e = plain block block_order[j], element element_order[e],
    negated where flip[e]: checked against the cipher's own tables and by a direct computation."""
    cipher = make_cipher("conventional", 4, 32)
    block_order, element_orders, flips = block_tables(cipher)
    assert np.array_equal(block_order, cipher.block_order)
    assert (element_orders == cipher.element_order).all()
    assert (flips == cipher.flip).all()
    images = random_images(2, seed=10)
    plain_blocks = split_blocks(images, 4)
    expected = plain_blocks[:, cipher.block_order][:, :, cipher.element_order]
    expected = np.where(cipher.flip, 255 - expected, expected)
    assert np.array_equal(split_blocks(cipher.encrypt(images), 4), expected)
    for table in (cipher.block_order, cipher.element_order, cipher.flip):
        assert not table.flags.writeable


def test_conventional_colour_shuffle_moves_whole_pixels_channelwise() -> None:
    """PS ∘ CS is one in-block permutation; for a 1×1 block it can only permute R, G, B."""
    cipher = make_cipher("conventional", 1, 8)
    assert sorted(cipher.element_order.tolist()) == [0, 1, 2]


@pytest.mark.parametrize("name", SHARED_IN_BLOCK)
def test_identical_blocks_stay_identical(name: str) -> None:
    """One in-block operation for every block: a tiled image encrypts to a tiled image."""
    cipher = make_cipher(name, 4, 32)
    tile = random_images(1, 4, seed=11)[0]
    images = np.tile(tile, (1, 8, 8, 1))
    blocks = split_blocks(cipher.encrypt(images), 4)[0]
    assert (blocks == blocks[0]).all()
    assert not np.array_equal(blocks[0], split_blocks(images, 4)[0, 0])


@pytest.mark.parametrize("name", ["etc", "pixel"])
def test_per_position_ciphers_break_tiling(name: str) -> None:
    cipher = make_cipher(name, 4, 32)
    images = np.tile(random_images(1, 4, seed=12)[0], (1, 8, 8, 1))
    blocks = split_blocks(cipher.encrypt(images), 4)[0]
    assert len({block.tobytes() for block in blocks}) > 8


def test_etc_keeps_each_block_up_to_rotation_colour_and_negation() -> None:
    cipher = make_cipher("etc", 4, 32)
    images = random_images(1, seed=13)
    block_order, _, flips = block_tables(cipher)
    assert (flips == flips[:, :1]).all(), "negative–positive acts on whole blocks"
    plain_blocks = split_blocks(images, 4)[0]
    cipher_blocks = split_blocks(cipher.encrypt(images), 4)[0]
    for j, source in enumerate(block_order):
        values = np.where(flips[j], 255 - plain_blocks[source], plain_blocks[source])
        assert sorted(cipher_blocks[j].tolist()) == sorted(values.tolist())
    assert 0 < flips[:, 0].sum() < 64


@pytest.mark.parametrize("block_fraction", [0.0, 0.25, 0.4, 0.75, 1.0])
def test_restricted_leaves_the_rest_of_the_blocks_in_place(block_fraction: float) -> None:
    cipher = make_cipher("restricted", 4, 48, block_fraction=block_fraction)
    block_order, _, _ = block_tables(cipher)
    count = len(block_order)  # 144 blocks
    moved = int((block_order != np.arange(count)).sum())
    chosen = round(block_fraction * count)
    assert chosen - 8 <= moved <= chosen
    assert (count - moved) / count == pytest.approx(1 - block_fraction, abs=8 / count)


@pytest.mark.parametrize("name", ["restricted", "invariant"])
@pytest.mark.parametrize(("pixel_fraction", "flip_fraction"), [(0.35, 0.35), (0.1, 0.9), (1, 0)])
def test_restricted_in_block_operations_touch_the_fraction(
    name: str, pixel_fraction: float, flip_fraction: float
) -> None:
    cipher = make_cipher(name, 4, 48, pixel_fraction=pixel_fraction, flip_fraction=flip_fraction)
    _, element_orders, flips = block_tables(cipher)
    length = element_orders.shape[1]  # 48 values per block
    assert (element_orders == element_orders[0]).all(), "one element order for every block"
    assert (flips == flips[0]).all(), "one flip pattern for every block"
    moved = int((element_orders[0] != np.arange(length)).sum())
    assert round(pixel_fraction * length) - 8 <= moved <= round(pixel_fraction * length)
    assert int(flips[0].sum()) == round(flip_fraction * length)


def test_invariant_scrambles_every_block_with_the_same_in_block_structure() -> None:
    """Full block scrambling; the in-block tables have the same shape for every key, so images
    under different keys share the structure a position-free ViT relies on."""
    tables = [block_tables(make_cipher("invariant", 4, 48)) for _ in range(2)]
    for block_order, element_orders, flips in tables:
        assert int((block_order == np.arange(len(block_order))).sum()) <= 8  # about one fixed
        assert (element_orders == element_orders[0]).all()
        assert (flips == flips[0]).all()
    (order_a, elements_a, flips_a), (order_b, elements_b, flips_b) = tables
    assert not np.array_equal(order_a, order_b)
    assert not np.array_equal(elements_a[0], elements_b[0])
    assert int(flips_a[0].sum()) == int(flips_b[0].sum()) == round(0.35 * 48)
    moved_a = int((elements_a[0] != np.arange(48)).sum())
    moved_b = int((elements_b[0] != np.arange(48)).sum())
    assert abs(moved_a - moved_b) <= 8


def test_le_ciphertext_is_uint8_of_the_same_shape_and_works_on_nibbles() -> None:
    cipher = make_cipher("le", 4, 32)
    images = random_images(3, seed=14)
    encrypted = cipher.encrypt(images)
    assert encrypted.dtype == np.uint8 and encrypted.shape == images.shape
    # A block of one repeated nibble keeps its nibble histogram up to inversion (v → 15 − v).
    flat = np.full((1, 32, 32, 3), 0x33, dtype=np.uint8)
    nibbles = np.concatenate([cipher.encrypt(flat) >> 4, cipher.encrypt(flat) & 0xF], axis=None)
    assert set(np.unique(nibbles).tolist()) <= {0x3, 0xC}


def test_pixel_negates_and_shuffles_each_pixel_on_its_own() -> None:
    cipher = make_cipher("pixel", 4, 16)
    images = random_images(2, 16, seed=15)
    source, mask = recover_gather(cipher)
    assert (source // 3 == np.arange(source.size) // 3).all(), "values stay in their pixel"
    assert np.isin(mask, (0, 0xFF)).all() and 0 < (mask == 0xFF).mean() < 1
    encrypted = cipher.encrypt(images).reshape(2, -1, 3)
    unmasked = encrypted ^ mask.reshape(-1, 3)
    assert np.array_equal(np.sort(unmasked, axis=-1), np.sort(images.reshape(2, -1, 3), axis=-1))


# --- disposable with a window: blocks move only inside their own window --------------------


@pytest.mark.parametrize("window", [1, 2, 4])
def test_disposable_window_keeps_every_block_inside_its_window(window: int) -> None:
    cipher = make_cipher("disposable", group="none", window=window)
    images = random_images(3, seed=5)
    nonces = np.arange(3)
    encrypted = cipher.encrypt(images, nonces)
    assert np.array_equal(cipher.decrypt(encrypted, nonces), images)
    side = 8
    windows = window_of_blocks(side, window)
    plain_blocks, cipher_blocks = split_blocks(images, 4), split_blocks(encrypted, 4)
    for n in range(3):
        for position in range(side * side):
            (source,) = np.flatnonzero((plain_blocks[n] == cipher_blocks[n, position]).all(axis=1))
            assert windows[source] == windows[position]
    moved = (plain_blocks != cipher_blocks).any(axis=2)
    assert moved.any() if window > 1 else not moved.any()


def test_disposable_window_zero_and_whole_image_are_the_default() -> None:
    key = make_key("disposable", group="none")
    images, nonces = random_images(2, seed=6), np.arange(2)
    default = create_cipher(key).encrypt(images, nonces)
    for window in (0, 8):
        spec = CipherSpec("disposable", 4, 32, (("group", "none"), ("window", window)))
        same_secret = dataclasses.replace(key, spec=spec)
        assert np.array_equal(create_cipher(same_secret).encrypt(images, nonces), default)


@pytest.mark.parametrize(("window", "message"), [(3, "does not divide"), (-1, "window must be")])
def test_disposable_window_is_checked(window: int, message: str) -> None:
    with pytest.raises(CipherConfigError, match=message):
        make_cipher("disposable", group="none", window=window)


def test_disposable_window_key_space_counts_orders_inside_windows() -> None:
    whole = key_space_bits(CipherSpec("disposable", 4, 32, (("group", "none"),)))
    quadrants = key_space_bits(CipherSpec("disposable", 4, 32, (("group", "none"), ("window", 4))))
    assert whole == pytest.approx(math.log2(math.factorial(64)))
    assert quadrants == pytest.approx(4 * math.log2(math.factorial(16)))


def test_a_window_that_does_not_fit_is_refused_before_any_key_is_made() -> None:
    # check_spec is what keygen, onboarding and the key store call on a new spec.
    with pytest.raises(CipherConfigError, match="does not divide the 8 blocks"):
        check_spec(CipherSpec("disposable", 4, 32, (("window", "3"),)))
    assert check_spec(CipherSpec("disposable", 4, 32, (("window", "4"),))).param_dict["window"] == 4
