"""Tests for the tenant's front door, `Tenant`: encrypted batches, nonces, key versions."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

from patchveil.errors import ImageFormatError, KeyStoreError
from patchveil.tenants.ciphers import create_cipher
from patchveil.tenants.client import Tenant
from patchveil.tenants.encrypted_batch import CiphertextError, EncryptedBatch
from patchveil.tenants.keys import CipherSpec
from patchveil.tenants.keystore import PASSPHRASE_ENV, RESERVED_NONCE_BASE, KeyStore
from tests.helpers import assert_no_key_material

SPEC = CipherSpec("conventional", 4, 32)


@pytest.fixture(autouse=True)
def development_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)


def test_round_trip_through_the_front_door(tmp_path: Path, images: np.ndarray) -> None:
    tenant = Tenant("hospital", tmp_path / "store")
    key = tenant.create_key(SPEC)
    encrypted = tenant.encrypt(images)
    assert isinstance(encrypted, EncryptedBatch) and len(encrypted) == len(images)
    assert (encrypted.tenant_id, encrypted.key_id, encrypted.key_version) == (
        "hospital",
        key.key_id,
        1,
    )
    assert encrypted.images.shape == images.shape and encrypted.images.dtype == np.uint8
    assert encrypted.nonces is None  # a shared-key cipher needs none
    assert not np.array_equal(encrypted.images, images)
    assert np.array_equal(tenant.decrypt(encrypted), images)
    # The same as building the cipher by hand, and the same for a fresh `Tenant` on the store.
    assert np.array_equal(create_cipher(key).encrypt(images), encrypted.images)
    again = Tenant("hospital", str(tmp_path / "store"))
    assert np.array_equal(again.decrypt(encrypted), images)
    assert_no_key_material(key, [encrypted.images, encrypted.tags, repr(tenant), tmp_path])


def test_per_image_nonces_are_reserved_by_the_front_door(
    tmp_path: Path, images: np.ndarray
) -> None:
    tenant = Tenant("hospital", tmp_path / "store")
    tenant.create_key(CipherSpec("disposable", 4, 32, (("group", "rf"),)))
    first, second = tenant.encrypt(images), tenant.encrypt(images)
    assert first.nonces is not None and second.nonces is not None
    assert not set(first.nonces.tolist()) & set(second.nonces.tolist())
    assert first.nonces.min() >= RESERVED_NONCE_BASE
    assert not np.array_equal(first.images, second.images)
    assert np.array_equal(tenant.decrypt(first), images)
    assert np.array_equal(tenant.decrypt(second), images)
    lost = replace(first, nonces=None)
    with pytest.raises(CiphertextError, match="carry no nonces"):
        tenant.decrypt(lost)
    swapped = replace(first, nonces=second.nonces)
    with pytest.raises(CiphertextError, match="integrity check"):
        tenant.decrypt(swapped)


def test_a_shared_store_object(tmp_path: Path, images: np.ndarray) -> None:
    store = KeyStore(tmp_path / "store")
    hospital, bank = Tenant("hospital", store), Tenant("bank", store)
    hospital.create_key(SPEC)
    bank.create_key(SPEC)
    assert hospital.store is store
    assert not np.array_equal(hospital.encrypt(images).images, bank.encrypt(images).images)
    assert np.array_equal(bank.decrypt(bank.encrypt(images)), images)
    with pytest.raises(CiphertextError, match="encrypted by tenant 'hospital', not 'bank'"):
        bank.decrypt(hospital.encrypt(images))


def test_versions_after_rotation(tmp_path: Path, images: np.ndarray) -> None:
    tenant = Tenant("hospital", tmp_path / "store")
    first = tenant.create_key(SPEC)
    old = tenant.encrypt(images)
    second = tenant.rotate_key()
    assert (first.version, second.version) == (1, 2)
    assert tenant.key() == second and tenant.key(1) == first
    new = tenant.encrypt(images)
    assert (old.key_version, new.key_version) == (1, 2)
    assert not np.array_equal(new.images, old.images)
    assert tenant.cipher().key_version == 2
    # Each batch names its version: no version argument, no wrong key.
    assert np.array_equal(tenant.decrypt(new), images)
    assert np.array_equal(tenant.decrypt(old), images)
    assert np.array_equal(tenant.encrypt(images, version=1).images, old.images)
    # A fresh front door (another process, another day) reads both versions from the store.
    later = Tenant("hospital", tmp_path / "store")
    assert np.array_equal(later.decrypt(old), images)
    assert np.array_equal(later.decrypt(new), images)
    # Rows of the tenant actor's shards: version and nonces given explicitly.
    assert np.array_equal(tenant.decrypt_rows(old.images, 1, None), images)
    assert not np.array_equal(tenant.decrypt_rows(old.images, 2, None), images)


def test_rotation_to_another_cipher(tmp_path: Path, images: np.ndarray) -> None:
    tenant = Tenant("hospital", tmp_path / "store")
    tenant.create_key(SPEC)
    old = tenant.encrypt(images)
    tenant.rotate_key(CipherSpec("invariant", 8, 32))
    assert tenant.cipher().spec.name == "invariant"
    assert tenant.cipher().spec.block_size == 8
    assert np.array_equal(tenant.decrypt(tenant.encrypt(images)), images)
    assert np.array_equal(tenant.decrypt(old), images)


def test_a_retired_version_is_refused_even_after_use(tmp_path: Path, images: np.ndarray) -> None:
    tenant = Tenant("hospital", tmp_path / "store")
    tenant.create_key(SPEC)
    old = tenant.encrypt(images)
    tenant.rotate_key()
    assert np.array_equal(tenant.decrypt(old), images)  # cached now
    tenant.store.retire("hospital", 1)
    with pytest.raises(KeyStoreError, match="version 1 of tenant 'hospital' is retired"):
        tenant.decrypt(old)
    assert np.array_equal(tenant.decrypt(tenant.encrypt(images)), images)


def test_unknown_tenant_and_bad_images(tmp_path: Path, images: np.ndarray) -> None:
    tenant = Tenant("nobody", tmp_path / "store")
    with pytest.raises(KeyStoreError, match="no key for tenant 'nobody'"):
        tenant.encrypt(images)
    tenant.create_key(SPEC)
    with pytest.raises(ImageFormatError, match=r"\[N, 32, 32, 3\]"):
        tenant.encrypt(images.astype(np.float32))
    with pytest.raises(KeyStoreError, match="no key version 9"):
        tenant.decrypt(replace(tenant.encrypt(images), key_version=9))


def test_tenant_and_store_refuse_pickling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store holds the passphrase and the key-encryption key; neither may leave the tenant."""
    monkeypatch.setenv(PASSPHRASE_ENV, "a long passphrase")
    tenant = Tenant("hospital", tmp_path / "store")
    key = tenant.create_key(SPEC)
    for thing in (tenant.store, tenant, tenant.cipher()):
        with pytest.raises(TypeError, match="cannot be pickled") as caught:
            pickle.dumps(thing)
        assert "a long passphrase" not in str(caught.value)
        assert_no_key_material(key, str(caught.value))
        with pytest.raises(TypeError, match="cannot be pickled"):
            cloudpickle.dumps(thing)
    assert "a long passphrase" not in repr(tenant)
    assert_no_key_material(key, repr(tenant))
