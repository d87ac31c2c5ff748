"""Tests for the sealed key store: round trips, rotation, retirement, both modes, corruption."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchveil.errors import CipherConfigError, KeyStoreError
from patchveil.tenants.ciphers import check_spec
from patchveil.tenants.keys import CipherSpec, Key, _secret_of
from patchveil.tenants.keystore import (
    PASSPHRASE_ENV,
    RESERVED_NONCE_BASE,
    KeyStore,
    check_tenant_id,
)
from tests.helpers import assert_no_key_material

SPEC = CipherSpec("conventional", 4, 16)
RESTRICTED = CipherSpec("restricted", 4, 16, (("block_fraction", 0.5),))


@pytest.fixture(autouse=True)
def development_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts without a passphrase in the environment."""
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


def same_key(first: Key, second: Key) -> bool:
    return first == second and first.metadata() == second.metadata()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- round trips ----------------------------------------------------------------------------
def test_create_then_load_in_another_instance(root: Path) -> None:
    key = KeyStore(root).create("hospital", RESTRICTED)
    loaded = KeyStore(root).load("hospital")
    assert same_key(loaded, key)
    assert _secret_of(loaded) == _secret_of(key)
    assert loaded.spec == check_spec(RESTRICTED)  # defaults filled in at creation
    assert loaded.spec.param_dict["block_fraction"] == 0.5
    assert loaded.version == 1
    assert KeyStore(root).load("hospital", 1) == key


def test_several_tenants_in_one_store(root: Path) -> None:
    store = KeyStore(root)
    keys = {tenant: store.create(tenant, SPEC) for tenant in ("bank", "factory", "hospital")}
    assert store.tenants() == ["bank", "factory", "hospital"]
    again = KeyStore(root)
    for tenant, key in keys.items():
        assert same_key(again.load(tenant), key)
    assert len({_secret_of(key) for key in keys.values()}) == 3


def test_create_twice_is_refused(root: Path) -> None:
    store = KeyStore(root)
    store.create("hospital", SPEC)
    with pytest.raises(KeyStoreError, match=r"already has a key.*rotate"):
        store.create("hospital", SPEC)


def test_create_validates_the_spec_before_writing(root: Path) -> None:
    store = KeyStore(root)
    with pytest.raises(CipherConfigError, match="unknown cipher 'nope'"):
        store.create("hospital", CipherSpec("nope", 4, 16))
    with pytest.raises(CipherConfigError, match="no parameter colour"):
        store.create("hospital", CipherSpec("restricted", 4, 16, (("colour", 1.0),)))
    assert store.versions("hospital") == []


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(tenant_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True))
def test_round_trip_for_any_valid_tenant_id(tmp_path: Path, tenant_id: str) -> None:
    root = tmp_path / f"store-{tenant_id.encode().hex()[:16]}-{os.urandom(4).hex()}"
    key = KeyStore(root).create(tenant_id, SPEC)
    assert same_key(KeyStore(root).load(tenant_id), key)
    assert (root / tenant_id / "v1.json").is_file()


# --- rotation and retirement ----------------------------------------------------------------
def test_rotation_keeps_old_versions_readable(root: Path) -> None:
    store = KeyStore(root)
    first = store.create("hospital", SPEC)
    second = store.rotate("hospital")
    third = store.rotate("hospital", RESTRICTED)
    assert [first.version, second.version, third.version] == [1, 2, 3]
    assert second.spec == first.spec and third.spec == check_spec(RESTRICTED)
    reopened = KeyStore(root)
    assert reopened.versions("hospital") == [1, 2, 3]
    assert same_key(reopened.load("hospital"), third)
    assert same_key(reopened.load("hospital", 1), first)
    assert same_key(reopened.load("hospital", 2), second)
    assert len({_secret_of(first), _secret_of(second), _secret_of(third)}) == 3
    assert [row["status"] for row in reopened.describe("hospital")] == ["active"] * 3


def test_rotate_without_a_key_is_an_error(root: Path) -> None:
    with pytest.raises(KeyStoreError, match="no key for tenant 'hospital'"):
        KeyStore(root).rotate("hospital")


def test_retire_destroys_the_secret(root: Path) -> None:
    store = KeyStore(root)
    first = store.create("hospital", SPEC)
    second = store.rotate("hospital")
    store.retire("hospital", 1)
    record = json.loads((root / "hospital" / "v1.json").read_text())
    assert record["status"] == "retired"
    assert "sealed" not in record and "nonce" not in record
    assert record["metadata"] == first.metadata()  # the metadata stays for the record
    assert_no_key_material(first, root)
    with pytest.raises(KeyStoreError, match="version 1 of tenant 'hospital' is retired"):
        KeyStore(root).load("hospital", 1)
    assert same_key(KeyStore(root).load("hospital"), second)
    store.retire("hospital", 1)  # retiring twice is harmless
    assert [row["status"] for row in store.describe("hospital")] == ["retired", "active"]


def test_retiring_the_newest_falls_back_to_the_previous(root: Path) -> None:
    store = KeyStore(root)
    first = store.create("hospital", SPEC)
    store.rotate("hospital")
    store.retire("hospital", 2)
    assert same_key(store.load("hospital"), first)
    store.retire("hospital", 1, force=True)
    with pytest.raises(KeyStoreError, match="every key of tenant 'hospital' is retired"):
        store.load("hospital")


def test_rotation_after_retiring_the_newest_takes_a_fresh_number(root: Path) -> None:
    """A retired version number is never given to a new secret (its record stays retired)."""
    store = KeyStore(root)
    store.create("hospital", SPEC)
    second = store.rotate("hospital")
    store.retire("hospital", 2)
    third = store.rotate("hospital")
    assert third.version == 3
    assert store.versions("hospital") == [1, 2, 3]
    assert store.describe("hospital")[1]["key_id"] == second.key_id
    assert store.describe("hospital")[1]["status"] == "retired"
    assert same_key(store.load("hospital"), third)


def test_retire_unknown_version(root: Path) -> None:
    store = KeyStore(root)
    store.create("hospital", SPEC)
    with pytest.raises(KeyStoreError, match="tenant 'hospital' has no key version 7"):
        store.retire("hospital", 7)
    with pytest.raises(KeyStoreError, match="has no key version 7"):
        store.load("hospital", 7)


# --- passphrase mode ------------------------------------------------------------------------
def test_passphrase_mode_from_the_environment(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse battery staple")
    store = KeyStore(root)
    assert not store.development_mode
    key = store.create("hospital", SPEC)
    assert not (root / "master.key").exists()
    assert json.loads((root / "store.json").read_text())["mode"] == "passphrase"
    assert same_key(KeyStore(root).load("hospital"), key)
    assert same_key(KeyStore(root, passphrase="correct horse battery staple").load("hospital"), key)
    assert "correct horse" not in repr(store)

    monkeypatch.setenv(PASSPHRASE_ENV, "wrong horse")
    with pytest.raises(KeyStoreError, match="wrong passphrase") as caught:
        KeyStore(root).load("hospital")
    assert str(root) in str(caught.value)
    assert "horse" not in str(caught.value)
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        KeyStore(root).rotate("hospital")
    assert KeyStore(root, passphrase="correct horse battery staple").versions("hospital") == [1]

    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(KeyStoreError, match=f"sealed with a passphrase; set {PASSPHRASE_ENV}"):
        KeyStore(root).load("hospital")


def test_development_store_refuses_a_passphrase(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    KeyStore(root).create("hospital", SPEC)
    monkeypatch.setenv(PASSPHRASE_ENV, "anything")
    with pytest.raises(KeyStoreError, match=f"development mode.*unset {PASSPHRASE_ENV}"):
        KeyStore(root).load("hospital")


# --- development mode -----------------------------------------------------------------------
def test_development_mode_writes_private_files(root: Path) -> None:
    store = KeyStore(root)
    assert store.development_mode
    store.create("hospital", SPEC)
    assert mode_of(root / "master.key") == 0o600
    assert len((root / "master.key").read_bytes()) == 32
    assert mode_of(root / "store.json") == 0o600
    assert mode_of(root / "hospital" / "v1.json") == 0o600
    assert mode_of(root) == 0o700
    assert mode_of(root / "hospital") == 0o700
    assert json.loads((root / "store.json").read_text())["mode"] == "development"


@pytest.mark.parametrize("loose_mode", [0o644, 0o640, 0o604, 0o660])
def test_development_mode_refuses_a_readable_master_key(root: Path, loose_mode: int) -> None:
    KeyStore(root).create("hospital", SPEC)
    master = root / "master.key"
    master.chmod(loose_mode)
    with pytest.raises(KeyStoreError, match="readable by others") as caught:
        KeyStore(root).load("hospital")
    assert f"chmod 600 {master}" in str(caught.value)


def test_development_mode_lost_or_corrupt_master_key(root: Path) -> None:
    KeyStore(root).create("hospital", SPEC)
    master = root / "master.key"
    master.write_bytes(b"short")
    with pytest.raises(KeyStoreError, match=r"master\.key is corrupt"):
        KeyStore(root).load("hospital")
    master.write_bytes(os.urandom(32))
    with pytest.raises(KeyStoreError, match=r"master\.key was replaced"):
        KeyStore(root).load("hospital")
    master.unlink()
    with pytest.raises(KeyStoreError, match=r"lost its master\.key"):
        KeyStore(root).load("hospital")


# --- corrupt files --------------------------------------------------------------------------
def _edit(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        record = json.loads(path.read_text())
        change(record)
        path.write_text(json.dumps(record))

    return apply


def _flip_sealed_byte(record: dict[str, Any]) -> None:
    sealed = bytearray(base64.b64decode(record["sealed"]))
    sealed[5] ^= 0x01
    record["sealed"] = base64.b64encode(bytes(sealed)).decode()


def _set_metadata(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda record: record["metadata"].__setitem__(name, value)


def _set_cipher(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda record: record["metadata"]["cipher"].__setitem__(name, value)


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "truncated json": lambda path: path.write_bytes(path.read_bytes()[:40]),
    "empty file": lambda path: path.write_bytes(b""),
    "binary garbage": lambda path: path.write_bytes(b"\xff\xfe\x00garbage"),
    "json list": lambda path: path.write_text("[1, 2, 3]"),
    "flipped sealed byte": _edit(_flip_sealed_byte),
    "invalid base64": _edit(lambda r: r.__setitem__("sealed", "!!!" + r["sealed"][3:])),
    "sealed missing": _edit(lambda r: r.pop("sealed")),
    "sealed null": _edit(lambda r: r.__setitem__("sealed", None)),
    "nonce number": _edit(lambda r: r.__setitem__("nonce", 5)),
    "nonce empty": _edit(lambda r: r.__setitem__("nonce", "")),
    "nonce changed": _edit(lambda r: r.__setitem__("nonce", base64.b64encode(bytes(12)).decode())),
    "cipher name": _edit(_set_cipher("name", "plain")),
    "block size": _edit(_set_cipher("block_size", 8)),
    "cipher params": _edit(_set_cipher("params", {"pixel_fraction": 0.0})),
    "key id": _edit(_set_metadata("key_id", "0" * 16)),
    "created at": _edit(_set_metadata("created_at", "1970-01-01T00:00:00+00:00")),
    "metadata string": _edit(lambda r: r.__setitem__("metadata", "hello")),
    "metadata missing": _edit(lambda r: r.pop("metadata")),
    "status missing": _edit(lambda r: r.pop("status")),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_key_file_names_the_file(root: Path, corruption: str) -> None:
    key = KeyStore(root).create("hospital", SPEC)
    path = root / "hospital" / "v1.json"
    CORRUPTIONS[corruption](path)
    store = KeyStore(root)
    for version in (None, 1):
        with pytest.raises(KeyStoreError) as caught:
            store.load("hospital", version)
        assert str(path) in str(caught.value)
        assert_no_key_material(key, str(caught.value))


def test_key_file_moved_to_another_version_or_tenant(root: Path) -> None:
    """The seal authenticates the metadata; the store also checks the file sits where it says."""
    store = KeyStore(root)
    store.create("bank", SPEC)
    store.create("hospital", SPEC)
    store.rotate("hospital")
    bank_v1 = (root / "bank" / "v1.json").read_bytes()
    (root / "hospital" / "v2.json").write_bytes((root / "hospital" / "v1.json").read_bytes())
    with pytest.raises(KeyStoreError, match="holds version 1 of tenant 'hospital', not version 2"):
        KeyStore(root).load("hospital")
    (root / "hospital" / "v2.json").write_bytes(bank_v1)
    with pytest.raises(KeyStoreError, match="of tenant 'bank', not version 2 of 'hospital'"):
        KeyStore(root).load("hospital", 2)


HEADER_CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:30]),
    "salt not base64": _edit(lambda h: h.__setitem__("salt", "***")),
    "kdf n not a power of two": _edit(lambda h: h.__setitem__("kdf", {"n": 3, "r": 8, "p": 1})),
    "kdf n enormous": _edit(lambda h: h.__setitem__("kdf", {"n": 2**40, "r": 8, "p": 1})),
    "kdf text": _edit(lambda h: h.__setitem__("kdf", {"n": "many", "r": 8, "p": 1})),
    "kdf missing r": _edit(lambda h: h.__setitem__("kdf", {"n": 2**15, "p": 1})),
    "unknown mode": _edit(lambda h: h.__setitem__("mode", "sideways")),
}


@pytest.mark.parametrize("corruption", sorted(HEADER_CORRUPTIONS))
def test_corrupt_store_header_names_the_file(root: Path, corruption: str) -> None:
    KeyStore(root).create("hospital", SPEC)
    header = root / "store.json"
    HEADER_CORRUPTIONS[corruption](header)
    with pytest.raises(KeyStoreError, match="is corrupt") as caught:
        KeyStore(root).load("hospital")
    assert str(header) in str(caught.value)
    with pytest.raises(KeyStoreError, match="is corrupt"):
        KeyStore(root).rotate("hospital")  # writing paths open the store too


# --- tenants ----------------------------------------------------------------------------------
def test_unknown_tenant(root: Path) -> None:
    assert KeyStore(root).tenants() == []
    with pytest.raises(KeyStoreError, match="no key for tenant 'nobody'"):
        KeyStore(root).load("nobody")  # the store folder does not even exist yet
    KeyStore(root).create("hospital", SPEC)
    with pytest.raises(KeyStoreError, match=f"no key for tenant 'nobody' in key store {root}"):
        KeyStore(root).load("nobody")
    assert KeyStore(root).describe("nobody") == []


@pytest.mark.parametrize(
    "tenant_id",
    ["", "../escape", "a/b", ".hidden", "-dash", "with space", "x" * 65, "acme\n", "é", "a\\b"],
)
def test_invalid_tenant_ids_are_refused(root: Path, tenant_id: str) -> None:
    store = KeyStore(root)
    with pytest.raises(KeyStoreError, match="is not valid"):
        check_tenant_id(tenant_id)
    with pytest.raises(KeyStoreError, match="is not valid"):
        store.create(tenant_id, SPEC)
    with pytest.raises(KeyStoreError, match="is not valid"):
        store.load(tenant_id)
    assert not root.exists() or not any(root.rglob("v*.json"))
    assert not (root.parent / "escape").exists()


def test_longest_valid_tenant_id() -> None:
    assert check_tenant_id("x" * 64) == "x" * 64
    assert check_tenant_id("A1._-z") == "A1._-z"


# --- no secret on disk ------------------------------------------------------------------------
@pytest.mark.parametrize("passphrase", [None, "a passphrase"])
def test_no_secret_in_any_file_of_the_store(
    root: Path, monkeypatch: pytest.MonkeyPatch, passphrase: str | None
) -> None:
    if passphrase is not None:
        monkeypatch.setenv(PASSPHRASE_ENV, passphrase)
    store = KeyStore(root)
    keys = [store.create("hospital", SPEC), store.create("bank", RESTRICTED)]
    keys.append(store.rotate("hospital"))
    keys.append(store.rotate("hospital"))
    store.retire("hospital", 2)
    loaded = [KeyStore(root).load(key.tenant_id, key.version) for key in keys if key.version != 2]
    assert len(loaded) == 3
    assert_no_key_material(keys, root)
    # The sealed values are the only place the secrets live, and they are ciphertext.
    for path in root.glob("*/v*.json"):
        record = json.loads(path.read_text())
        if "sealed" in record:
            assert len(base64.b64decode(record["sealed"])) == 32 + 16  # secret + GCM tag
    # No temporary file is left behind by the atomic writes.
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]
    assert_no_key_material(keys, [repr(store), repr(keys), json.dumps(store.describe("hospital"))])


def test_the_helper_finds_a_planted_secret(tmp_path: Path) -> None:
    """`assert_no_key_material` itself: every encoding it promises is caught."""
    key = Key.generate("hospital", SPEC)
    secret = _secret_of(key)
    planted = {
        "raw.bin": b"xx" + secret + b"yy",
        "hex.txt": f"key={secret.hex()}".encode(),
        "upper.txt": secret.hex().upper().encode(),
        "b64.json": json.dumps({"k": base64.b64encode(b"a" + secret).decode()}).encode(),
        "urlsafe.txt": base64.urlsafe_b64encode(b"ab" + secret + b"c"),
    }
    for name, data in planted.items():
        folder = tmp_path / name.split(".")[0]
        (folder / "deep").mkdir(parents=True)
        (folder / "deep" / name).write_bytes(data)
        with pytest.raises(AssertionError, match="key material") as caught:
            assert_no_key_material(key, folder)
        assert secret.hex() not in str(caught.value)
        with pytest.raises(AssertionError):
            assert_no_key_material([Key.generate("other", SPEC), key], data)
    with pytest.raises(AssertionError, match="key material"):
        assert_no_key_material(secret, f"the key is {secret.hex()}")
    clean = tmp_path / "clean"
    (clean / "deep").mkdir(parents=True)
    (clean / "deep" / "other.bin").write_bytes(os.urandom(4096))
    assert_no_key_material(key, [b"", "nothing here", clean, np.zeros(64, dtype=np.uint8)])
    with pytest.raises(FileNotFoundError):
        assert_no_key_material(key, tmp_path / "missing")


def test_nonce_reservations_never_overlap(root: Path) -> None:
    store = KeyStore(root)
    store.create("acme", SPEC)
    first = store.reserve_nonces("acme", 5)
    second = KeyStore(root).reserve_nonces("acme", 3)
    # Reserved nonces live above every tenant-local image index the platform hands out.
    assert (first, second) == (RESERVED_NONCE_BASE, RESERVED_NONCE_BASE + 5)
    assert store.reserve_nonces("acme", 0) == RESERVED_NONCE_BASE + 8


def test_nonces_need_a_key_and_a_sound_counter(root: Path) -> None:
    store = KeyStore(root)
    with pytest.raises(KeyStoreError, match="no key"):
        store.reserve_nonces("acme", 1)
    store.create("acme", SPEC)
    (root / "acme" / "nonces.json").write_text("{broken")
    with pytest.raises(KeyStoreError, match="corrupt"):
        store.reserve_nonces("acme", 1)


def test_fingerprint_key_is_stable_per_store_and_differs_between_stores(
    tmp_path: Path,
) -> None:
    first = KeyStore(tmp_path / "one")
    first.create("acme", SPEC)
    secret = first.fingerprint_key()
    first.rotate("acme")
    assert KeyStore(tmp_path / "one").fingerprint_key() == secret  # survives rotation
    other = KeyStore(tmp_path / "two")
    other.create("acme", SPEC)
    assert other.fingerprint_key() != secret and len(secret) == 32
