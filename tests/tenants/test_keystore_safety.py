"""The key store never loses a key: incomplete stores, destructive calls, bad settings, crashes.

Each case first reproduces the failure a user met (issue 17), then checks what must happen now.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from patchveil.errors import CipherConfigError, KeyStoreError
from patchveil.tenants.keys import CipherSpec, Key
from patchveil.tenants.keystore import (
    MAX_NONCES_PER_RESERVATION,
    PASSPHRASE_ENV,
    RESERVED_NONCE_BASE,
    KeyStore,
)

SPEC = CipherSpec("conventional", 4, 16)
DISPOSABLE = CipherSpec("disposable", 4, 16, (("group", "rf"),))
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def development_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (hidden ones too) and a digest of its bytes."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def secrets_of(root: Path) -> dict[tuple[str, int], str]:
    """key id of every readable active version, by (tenant, version), through a fresh store."""
    store = KeyStore(root)
    return {
        (tenant, version): store.load(tenant, version).key_id
        for tenant in store.tenants()
        for version in store.active_versions(tenant)
    }


# --- an incomplete store is refused, never re-created ---------------------------------------
def test_a_missing_header_destroys_nothing(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = KeyStore(root)
    keys = {tenant: store.create(tenant, SPEC) for tenant in ("bank", "clinic")}
    (root / "store.json").rename(tmp_path / "store.json.moved")
    before = snapshot(root)
    attempts = [
        lambda: KeyStore(root).load("bank"),
        lambda: KeyStore(root).create("newcomer", SPEC),
        lambda: KeyStore(root).rotate("bank"),
        lambda: KeyStore(root).retire("bank", 1, force=True),
        lambda: KeyStore(root).fingerprint_key(),
    ]
    for attempt in attempts:
        with pytest.raises(KeyStoreError, match=r"incomplete.*store\.json is missing") as error:
            attempt()
        assert "bank, clinic" in str(error.value) and "Nothing was written" in str(error.value)
        assert snapshot(root) == before  # master.key above all
    (tmp_path / "store.json.moved").rename(root / "store.json")
    for tenant, key in keys.items():
        assert KeyStore(root).load(tenant) == key


def test_reading_never_creates_a_store(tmp_path: Path) -> None:
    root = tmp_path / "typo"
    for attempt in (
        lambda: KeyStore(root).load("bank"),
        lambda: KeyStore(root).rotate("bank"),
    ):
        with pytest.raises(KeyStoreError, match="no key"):
            attempt()
    assert not root.exists()


def test_an_interrupted_creation_keeps_its_master_key(tmp_path: Path) -> None:
    """A master.key without a header and without keys is what a crash during creation leaves:
    the next keygen finishes the store with that master.key instead of replacing it."""
    root = tmp_path / "store"
    root.mkdir()
    master = os.urandom(32)
    (root / "master.key").write_bytes(master)
    os.chmod(root / "master.key", 0o600)
    key = KeyStore(root).create("bank", SPEC)
    assert (root / "master.key").read_bytes() == master
    assert KeyStore(root).load("bank") == key


def test_a_passphrase_does_not_adopt_a_development_master_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / "master.key").write_bytes(os.urandom(32))
    before = snapshot(root)
    monkeypatch.setenv(PASSPHRASE_ENV, "a passphrase")
    with pytest.raises(KeyStoreError, match=r"development master\.key but no store\.json"):
        KeyStore(root).create("bank", SPEC)
    assert snapshot(root) == before


# --- destructive calls prove the store first ------------------------------------------------
def test_retire_with_a_wrong_passphrase_destroys_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "store"
    monkeypatch.setenv(PASSPHRASE_ENV, "the right one")
    store = KeyStore(root)
    store.create("bank", SPEC)
    store.rotate("bank")
    before = snapshot(root)
    for wrong in ("not the right one", None):
        if wrong is None:
            monkeypatch.delenv(PASSPHRASE_ENV)
        else:
            monkeypatch.setenv(PASSPHRASE_ENV, wrong)
        with pytest.raises(KeyStoreError, match="passphrase"):
            KeyStore(root).retire("bank", 1)
        with pytest.raises(KeyStoreError, match="passphrase"):
            KeyStore(root).retire("bank", 1, force=True)
        assert snapshot(root) == before
    monkeypatch.setenv(PASSPHRASE_ENV, "the right one")
    assert KeyStore(root).retire("bank", 1) is True


def test_retire_with_a_replaced_master_key_destroys_nothing(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = KeyStore(root)
    store.create("bank", SPEC)
    store.rotate("bank")
    (root / "master.key").write_bytes(os.urandom(32))
    before = snapshot(root)
    with pytest.raises(KeyStoreError, match=r"wrong passphrase.*master\.key was replaced"):
        KeyStore(root).retire("bank", 1)
    assert snapshot(root) == before


def test_the_only_active_key_is_kept_unless_forced(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = KeyStore(root)
    store.create("bank", SPEC)
    before = snapshot(root)
    with pytest.raises(KeyStoreError, match=r"only active key.*keys rotate.*--force"):
        store.retire("bank", 1)
    assert snapshot(root) == before
    assert store.retire("bank", 1, force=True) is True
    assert store.retire("bank", 1, force=True) is False  # already retired: nothing to do
    # Not bricked: keygen says what to do, and rotate makes a new version from the old settings.
    with pytest.raises(KeyStoreError, match=r"only retired versions.*keys rotate"):
        store.create("bank", SPEC)
    fresh = store.rotate("bank")
    assert fresh.version == 2 and fresh.spec == SPEC
    assert store.load("bank") == fresh


# --- every setting is checked when the key is made ------------------------------------------
@pytest.mark.parametrize("group", ["xyz", "", "rf_np", "NP"])
def test_a_cipher_setting_that_can_never_encrypt_is_refused_at_keygen(
    tmp_path: Path, group: str
) -> None:
    root = tmp_path / "store"
    spec = CipherSpec("disposable", 4, 16, (("group", group),))
    with pytest.raises(CipherConfigError, match="unknown block group"):
        KeyStore(root).create("bank", spec)
    assert not root.exists()  # not even an empty store


def test_rotate_can_leave_a_bad_setting_behind(tmp_path: Path) -> None:
    """A key stored with a bad group (before settings were checked) is rotated to a good one."""
    root = tmp_path / "store"
    store = KeyStore(root)
    store.create("bank", DISPOSABLE)
    bad = Key.generate("bank", CipherSpec("disposable", 4, 16, (("group", "xyz"),)), version=2)
    store._save(bad, status="active")
    with pytest.raises(CipherConfigError, match="unknown block group 'xyz'"):
        store.rotate("bank")  # the newest setting is copied, and refused
    assert store.versions("bank") == [1, 2]
    fixed = store.rotate("bank", DISPOSABLE)
    assert fixed.version == 3 and fixed.spec.param_dict["group"] == "rf"


@pytest.mark.parametrize(
    ("block_size", "image_size", "message"),
    [(4, 100_000, "largest supported"), (4, 16.0, "integer"), (True, 16, "integer")],
)
def test_geometry_is_bounded(block_size: object, image_size: object, message: str) -> None:
    with pytest.raises(CipherConfigError, match=message):
        CipherSpec("conventional", block_size, image_size)  # type: ignore[arg-type]


# --- nonces ---------------------------------------------------------------------------------
def test_reserved_nonces_start_above_image_indices_and_never_repeat(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = KeyStore(root)
    store.create("bank", DISPOSABLE)
    # A counter written before the reserved range existed jumps to its start, never back.
    (root / "bank" / "nonces.json").write_text(json.dumps({"next": 12}))
    assert store.reserve_nonces("bank", 4) == RESERVED_NONCE_BASE
    assert store.reserve_nonces("bank", 1) == RESERVED_NONCE_BASE + 4
    for count in (-1, MAX_NONCES_PER_RESERVATION + 1, 2.5, True):
        with pytest.raises(KeyStoreError, match="cannot reserve"):
            store.reserve_nonces("bank", count)  # type: ignore[arg-type]


# --- crash safety: killed between a temporary write and its rename ---------------------------
_KILL_AT_STEP = """
import os, sys
from pathlib import Path
import patchveil.fsutil as fsutil
from patchveil.tenants.keys import CipherSpec
from patchveil.tenants.keystore import KeyStore

step, operation, root = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
seen = 0
real_replace, real_link = os.replace, os.link

def die_at_step(real):
    def call(*args, **kwargs):
        global seen
        seen += 1
        if seen == step:
            os._exit(137)  # as a kill -9: no cleanup, the temporary file stays
        return real(*args, **kwargs)
    return call

fsutil.os.replace = die_at_step(real_replace)
fsutil.os.link = die_at_step(real_link)
store = KeyStore(root)
spec = CipherSpec("disposable", 4, 16, (("group", "rf"),))
if operation == "create":
    store.create("bank", spec)
elif operation == "create_second":
    store.create("clinic", spec)
elif operation == "rotate":
    store.rotate("bank")
elif operation == "retire":
    store.retire("bank", 1)
elif operation == "reserve":
    store.reserve_nonces("bank", 10)
print("STEPS", seen)
"""


def _run_until_step(step: int, operation: str, root: Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != PASSPHRASE_ENV}
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])
    )
    return subprocess.run(
        [sys.executable, "-c", _KILL_AT_STEP, str(step), operation, str(root)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


def _prepare(root: Path, operation: str) -> None:
    """The store as it is before `operation` runs."""
    if operation == "create":
        return
    store = KeyStore(root)
    store.create("bank", DISPOSABLE)
    if operation in ("retire", "reserve"):
        store.rotate("bank")
        store.reserve_nonces("bank", 3)


@pytest.mark.parametrize("operation", ["create", "create_second", "rotate", "retire", "reserve"])
def test_a_kill_at_any_write_step_loses_no_key(tmp_path: Path, operation: str) -> None:
    # Count the steps (file renames or links) of an uninterrupted run.
    dry = tmp_path / "dry"
    _prepare(dry, operation)
    completed = _run_until_step(0, operation, dry)
    assert completed.returncode == 0, completed.stderr
    steps = int(completed.stdout.split("STEPS")[1])
    assert steps >= 1
    for step in range(1, steps + 1):
        root = tmp_path / f"killed-{step}"
        _prepare(root, operation)
        keys_before = secrets_of(root) if (root / "store.json").exists() else {}
        counter = root / "bank" / "nonces.json"
        next_before = json.loads(counter.read_text())["next"] if counter.exists() else 0
        killed = _run_until_step(step, operation, root)
        assert killed.returncode == 137, (step, killed.stderr)
        # Every key that was readable before is readable now, through a fresh store.
        keys_after = secrets_of(root) if (root / "store.json").exists() else {}
        if operation == "retire":  # version 1 is either still whole or properly retired
            keys_before.pop(("bank", 1))
            keys_after.pop(("bank", 1), None)
        assert {k: v for k, v in keys_after.items() if k in keys_before} == keys_before
        # And the interrupted operation can simply be run again.
        again = _run_until_step(0, operation, root)
        assert again.returncode == 0, (step, again.stderr)
        store = KeyStore(root)
        if operation == "reserve":
            assert store.reserve_nonces("bank", 1) >= max(next_before, RESERVED_NONCE_BASE) + 10
        for tenant in store.tenants():
            for version in store.active_versions(tenant):
                store.load(tenant, version)
