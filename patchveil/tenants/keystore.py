"""The tenant's key store: a folder it owns, where each key version is sealed with AES-GCM.

Layout::

    <store>/store.json                    salt, KDF parameters, a sealed check value
    <store>/master.key                    (development mode only) random 32-byte KEK, mode 0600
    <store>/<tenant_id>/v<version>.json   key metadata in clear + the secret sealed under the KEK

The key-encryption key (KEK) comes from scrypt over `PATCHVEIL_KEYSTORE_PASSPHRASE`, or, when
that variable is unset, from a generated `master.key` file (development mode: whoever can read
that file can read every key). The metadata is the AES-GCM associated data, so editing it makes
the key unreadable instead of silently changing the cipher.

Safety rules, each tested: a store is created only by the first `create` (keygen) in an empty
folder, and creation never overwrites a file; a store that is incomplete (key files without
`store.json`) is refused with what is missing, and nothing is written; every write is a temporary
file renamed (or linked) into place, so a crash at any step leaves every key readable; a
destructive call (`retire`) first proves the passphrase by opening the version it destroys, and
refuses to leave a tenant without an active key unless forced.

Per-image nonces reserved here start at `RESERVED_NONCE_BASE`: below it lie the tenant-local
image indices the platform hands out for onboarding (and their augmented variants), above
`2**62` the random nonces of queries, so the three never meet under one key.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from patchveil.config import check_tenant_id as check_platform_tenant_id
from patchveil.errors import KeyStoreError, PatchveilError
from patchveil.fsutil import write_bytes_atomic, write_bytes_exclusive
from patchveil.tenants.keys import CipherSpec, Key, _secret_of

PASSPHRASE_ENV = "PATCHVEIL_KEYSTORE_PASSPHRASE"
_FORMAT = 1
_CHECK_PLAINTEXT = b"patchveil key store"
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}
# Nonces the store reserves for the tenant's own files (see the module docstring).
RESERVED_NONCE_BASE = 2**61
# One reservation at most (a batch of images); far below the 2**61 nonces of the range.
MAX_NONCES_PER_RESERVATION = 2**32


def check_tenant_id(tenant_id: str) -> str:
    """The platform's tenant-id rule, raised as a key-store error."""
    try:
        return check_platform_tenant_id(tenant_id)
    except PatchveilError as error:
        raise KeyStoreError(str(error)) from None


def _check_kdf(kdf: Any) -> dict[str, int]:
    """The header's scrypt parameters, refused (ValueError) unless sane: a corrupt header must
    not crash scrypt or make it allocate without bound."""
    n, r, p = (kdf[name] for name in ("n", "r", "p"))
    if not all(type(value) is int for value in (n, r, p)):
        raise ValueError("scrypt parameters must be integers")
    if not (2 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("scrypt parameters out of range")
    return {"n": n, "r": r, "p": p}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


class KeyStore:
    """Create, rotate, read and retire a tenant's keys in one folder it owns."""

    def __init__(self, root: Path | str, passphrase: str | None = None) -> None:
        self.root = Path(root)
        self._passphrase = passphrase if passphrase is not None else os.environ.get(PASSPHRASE_ENV)
        self._kek: bytes | None = None

    def __repr__(self) -> str:
        mode = "passphrase" if self._passphrase else "development master key"
        return f"KeyStore(root={str(self.root)!r}, mode={mode!r})"

    def __reduce__(self) -> Any:
        # The store holds the passphrase and, once opened, the key-encryption key: like a `Key`,
        # it must not travel in a Ray object or a Prefect result. Pass `root` and reopen it.
        raise TypeError(
            f"{self!r} holds its passphrase and key-encryption key and cannot be pickled; pass "
            "the store's folder and open it where it is used"
        )

    # --- opening ------------------------------------------------------------------------
    @property
    def development_mode(self) -> bool:
        return not self._passphrase

    def _aead(self, create: bool = False) -> AESGCM:
        if self._kek is None:
            self._kek = self._open(create)
        return AESGCM(self._kek)

    def _open(self, create: bool) -> bytes:
        """The key-encryption key of an existing store, checked against the header's sealed
        value; with `create`, a new store in a folder that holds no key material yet."""
        header_path = self.root / "store.json"
        if not header_path.exists():
            self._refuse_incomplete()
            if not create:
                raise KeyStoreError(
                    f"no key store at {self.root} (no store.json); create the tenant's first key "
                    f"with `patchveil keygen --store {self.root} ...`"
                )
            return self._create(header_path)
        try:
            header = json.loads(header_path.read_text())
            salt = _unb64(header["salt"])
            check_nonce, check = _unb64(header["check_nonce"]), _unb64(header["check"])
            mode = header["mode"]
            kdf = _check_kdf(header.get("kdf", _SCRYPT))
            if mode not in ("passphrase", "development"):
                raise ValueError(mode)
        except (OSError, ValueError, KeyError, TypeError):
            raise KeyStoreError(f"key store header {header_path} is corrupt") from None
        if mode == "passphrase" and not self._passphrase:
            raise KeyStoreError(
                f"key store {self.root} is sealed with a passphrase; set {PASSPHRASE_ENV}"
            )
        if mode == "development" and self._passphrase:
            raise KeyStoreError(
                f"key store {self.root} is in development mode (master.key); unset "
                f"{PASSPHRASE_ENV} to open it"
            )
        kek = self._derive(salt, kdf)
        try:
            AESGCM(kek).decrypt(check_nonce, check, _CHECK_PLAINTEXT)
        except InvalidTag:
            raise KeyStoreError(
                f"wrong passphrase for key store {self.root} (or its master.key was replaced)"
            ) from None
        return kek

    def _refuse_incomplete(self) -> None:
        """Raise if the folder holds key files but no header: a new header (and, in development
        mode, a new master.key) would make every one of them unreadable."""
        key_files = sorted(self.root.glob("*/v*.json")) if self.root.is_dir() else []
        if key_files:
            tenants = sorted({path.parent.name for path in key_files})
            raise KeyStoreError(
                f"key store {self.root} is incomplete: it holds {len(key_files)} key file(s) of "
                f"tenant(s) {', '.join(tenants)} but its header store.json is missing; restore "
                "store.json (and master.key, in development mode) from a backup. Nothing was "
                "written"
            )
        master_path = self.root / "master.key"
        if master_path.exists() and not self.development_mode:
            raise KeyStoreError(
                f"key store {self.root} has a development master.key but no store.json, and "
                f"{PASSPHRASE_ENV} is set; unset it to finish creating the development store, or "
                "use another folder for a passphrase store. Nothing was written"
            )

    def _create(self, header_path: Path) -> bytes:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        salt = secrets.token_bytes(16)
        if self.development_mode:
            # Never over an existing master.key: one left by a creation interrupted before its
            # header was written (no key was sealed under it yet) is taken as it is.
            write_bytes_exclusive(self.root / "master.key", secrets.token_bytes(32), mode=0o600)
        kek = self._derive(salt, _SCRYPT)
        nonce = secrets.token_bytes(12)
        header = {
            "format": _FORMAT,
            "mode": "development" if self.development_mode else "passphrase",
            "kdf": _SCRYPT,
            "salt": _b64(salt),
            "check_nonce": _b64(nonce),
            "check": _b64(AESGCM(kek).encrypt(nonce, _CHECK_PLAINTEXT, _CHECK_PLAINTEXT)),
        }
        if not write_bytes_exclusive(
            header_path, json.dumps(header, indent=2).encode(), mode=0o600
        ):
            # Another process created the store meanwhile: open that one instead.
            return self._open(create=False)
        return kek

    def _derive(self, salt: bytes, kdf: dict[str, int]) -> bytes:
        if self.development_mode:
            master_path = self.root / "master.key"
            try:
                if master_path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                    raise KeyStoreError(
                        f"{master_path} is readable by others; run: chmod 600 {master_path}"
                    )
                master = master_path.read_bytes()
            except FileNotFoundError:
                raise KeyStoreError(f"key store {self.root} has lost its master.key") from None
            if len(master) != 32:
                raise KeyStoreError(f"{master_path} is corrupt (expected 32 bytes)")
            secret_source = master
        else:
            assert self._passphrase is not None
            secret_source = self._passphrase.encode()
        return Scrypt(salt=salt, length=32, n=kdf["n"], r=kdf["r"], p=kdf["p"]).derive(
            secret_source
        )

    # --- keys ---------------------------------------------------------------------------
    def _tenant_dir(self, tenant_id: str) -> Path:
        return self.root / check_tenant_id(tenant_id)

    def _path(self, tenant_id: str, version: int) -> Path:
        return self._tenant_dir(tenant_id) / f"v{version}.json"

    def versions(self, tenant_id: str) -> list[int]:
        folder = self._tenant_dir(tenant_id)
        found = (re.fullmatch(r"v(\d+)\.json", p.name) for p in folder.glob("v*.json"))
        return sorted(int(m.group(1)) for m in found if m)

    def tenants(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted({p.parent.name for p in self.root.glob("*/v*.json")})

    def create(self, tenant_id: str, spec: CipherSpec) -> Key:
        """The tenant's first key; an error if it already has one (use `rotate`).

        Every cipher parameter is checked here, through the cipher's own rules, so a key that
        could never encrypt is never stored. The first key of an empty folder creates the store.
        """
        from patchveil.tenants.ciphers import check_spec

        versions = self.versions(tenant_id)
        if versions:
            active = self.active_versions(tenant_id)
            state = f"active version {active[-1]}" if active else "only retired versions"
            raise KeyStoreError(
                f"tenant {tenant_id!r} already has a key in {self.root} ({state}); make a new "
                "version with `patchveil keys rotate`"
            )
        checked = check_spec(spec)
        self._aead(create=True)  # opens the store, or creates it in an empty folder
        key = Key.generate(tenant_id, checked, version=1)
        self._save(key, status="active")
        return key

    def rotate(self, tenant_id: str, spec: CipherSpec | None = None) -> Key:
        """A new active version; the previous ones stay readable until `retire`d.

        The cipher is the newest version's (retired or not, so a tenant whose every key was
        retired can still make a new one), or `spec`; either is checked before anything is
        written.
        """
        from patchveil.tenants.ciphers import check_spec

        versions = self.versions(tenant_id)
        if not versions:
            raise KeyStoreError(
                f"no key for tenant {tenant_id!r} in key store {self.root}; create one with "
                "`patchveil keygen`"
            )
        # Number after the newest version, retired or not: reusing a retired version's number
        # would overwrite its record and give one version number to two different secrets.
        newest = versions[-1]
        if spec is None:
            spec = self._spec_of(tenant_id, newest)
        checked = check_spec(spec)
        self._aead()  # proves the passphrase before a key is made
        key = Key.generate(tenant_id, checked, version=newest + 1)
        self._save(key, status="active")
        return key

    def retire(self, tenant_id: str, version: int, force: bool = False) -> bool:
        """Mark a version retired and destroy its sealed secret (the file keeps its metadata).

        The version is opened first, so a wrong passphrase or a damaged store destroys
        nothing. Retiring the tenant's only active version leaves it unable to encrypt: refused
        unless `force` (a new key can still be made with `rotate`). Returns False when the
        version was already retired.
        """
        self._aead()  # proves the passphrase, even for a version already retired
        record = self._read_record(tenant_id, version)
        if record["status"] == "retired":
            return False
        self.load(tenant_id, version)  # the sealed secret opens: this store is the right one
        others = [v for v in self.active_versions(tenant_id) if v != version]
        if not others and not force:
            raise KeyStoreError(
                f"key version {version} is the only active key of tenant {tenant_id!r}: "
                "retiring it leaves the tenant unable to encrypt. Make a new version first "
                "(`patchveil keys rotate`), or retire anyway with --force"
            )
        record["status"] = "retired"
        record["retired_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        record.pop("sealed", None)
        record.pop("nonce", None)
        write_bytes_atomic(
            self._path(tenant_id, version), json.dumps(record, indent=2).encode(), mode=0o600
        )
        return True

    def active_versions(self, tenant_id: str) -> list[int]:
        """The versions that can still encrypt and decrypt, oldest first."""
        return [
            v
            for v in self.versions(tenant_id)
            if self._read_record(tenant_id, v)["status"] == "active"
        ]

    def _spec_of(self, tenant_id: str, version: int) -> CipherSpec:
        try:
            return CipherSpec.from_json(self._read_record(tenant_id, version)["metadata"]["cipher"])
        except (KeyError, TypeError, ValueError):
            raise KeyStoreError(
                f"key file {self._path(tenant_id, version)} is corrupt (no cipher settings)"
            ) from None

    def load(self, tenant_id: str, version: int | None = None) -> Key:
        """A key version (default: the newest active one)."""
        versions = self.versions(tenant_id)
        if not versions:
            raise KeyStoreError(f"no key for tenant {tenant_id!r} in key store {self.root}")
        if version is None:
            active = self.active_versions(tenant_id)
            if not active:
                raise KeyStoreError(
                    f"every key of tenant {tenant_id!r} is retired; make a new one with "
                    "`patchveil keys rotate`"
                )
            version = active[-1]
        record = self._read_record(tenant_id, version)
        if record["status"] != "active":
            raise KeyStoreError(f"key version {version} of tenant {tenant_id!r} is retired")
        metadata = record["metadata"]
        try:
            aad = json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode()
            secret = self._aead().decrypt(_unb64(record["nonce"]), _unb64(record["sealed"]), aad)
        except (InvalidTag, KeyError, ValueError, TypeError, AttributeError):
            raise KeyStoreError(
                f"key file {self._path(tenant_id, version)} is corrupt or was tampered with"
            ) from None
        # The seal binds the metadata, not the file's place: a key file copied to another
        # tenant's folder or version number must not be taken for that tenant's key.
        if metadata["tenant_id"] != tenant_id or metadata["version"] != version:
            raise KeyStoreError(
                f"key file {self._path(tenant_id, version)} holds version {metadata['version']} "
                f"of tenant {metadata['tenant_id']!r}, not version {version} of {tenant_id!r}"
            )
        return Key(
            tenant_id=metadata["tenant_id"],
            key_id=metadata["key_id"],
            version=int(metadata["version"]),
            spec=CipherSpec.from_json(metadata["cipher"]),
            created_at=metadata["created_at"],
            _secret=secret,
        )

    def fingerprint_key(self) -> bytes:
        """A secret of this store for keyed fingerprints of the tenant's data (HMAC key).

        Derived from the key-encryption key, so it survives key rotation but never leaves the
        tenant: the platform can compare fingerprints, not confirm a guess of the images.
        Onboarding asks for it before the tenant's first key, so an empty folder becomes a new
        store here (an incomplete one is refused as everywhere).
        """
        if self._kek is None:
            self._kek = self._open(create=True)
        return hmac.new(self._kek, b"patchveil/source-fingerprint/v1", hashlib.sha256).digest()

    def reserve_nonces(self, tenant_id: str, count: int) -> int:
        """Reserve `count` fresh per-image nonces for the tenant; returns the first one.

        Per-image ciphers must never reuse a nonce under one key (two images would share a
        transform). The counter lives in the tenant's own store, starts at
        `RESERVED_NONCE_BASE` and only moves forward; a lock file serialises concurrent
        reservations. Callers never choose a nonce for encryption: they reserve one here.
        """
        if type(count) is not int or not 0 <= count <= MAX_NONCES_PER_RESERVATION:
            raise KeyStoreError(
                f"cannot reserve {count!r} nonces (0 to {MAX_NONCES_PER_RESERVATION} at a time)"
            )
        folder = self._tenant_dir(tenant_id)
        if not self.versions(tenant_id):
            raise KeyStoreError(f"no key for tenant {tenant_id!r} in key store {self.root}")
        counter = folder / "nonces.json"
        with open(folder / ".nonces.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                stored = int(json.loads(counter.read_text())["next"]) if counter.exists() else 0
            except (OSError, ValueError, KeyError, TypeError):
                raise KeyStoreError(f"nonce counter {counter} is corrupt") from None
            # Counters of stores made before the reserved range existed start below it.
            first = max(stored, RESERVED_NONCE_BASE)
            if first + count >= 2 * RESERVED_NONCE_BASE:
                raise KeyStoreError(
                    f"tenant {tenant_id!r} has used up its nonces; make a new key version"
                )
            write_bytes_atomic(counter, json.dumps({"next": first + count}).encode(), mode=0o600)
        return first

    def describe(self, tenant_id: str) -> list[dict[str, Any]]:
        """Metadata and status of every version (no secrets)."""
        rows = []
        for version in self.versions(tenant_id):
            record = self._read_record(tenant_id, version)
            rows.append({**record["metadata"], "status": record["status"]})
        return rows

    def _read_record(self, tenant_id: str, version: int) -> dict[str, Any]:
        path = self._path(tenant_id, version)
        try:
            record = json.loads(path.read_text())
            record["metadata"]["key_id"]
            record["status"]
        except FileNotFoundError:
            raise KeyStoreError(
                f"tenant {tenant_id!r} has no key version {version} in {self.root}"
            ) from None
        except (OSError, ValueError, KeyError, TypeError):
            raise KeyStoreError(f"key file {path} is corrupt") from None
        return record

    def _save(self, key: Key, status: str) -> None:
        nonce = secrets.token_bytes(12)
        record = {
            "format": _FORMAT,
            "status": status,
            "metadata": key.metadata(),
            "nonce": _b64(nonce),
            "sealed": _b64(self._aead().encrypt(nonce, _secret_of(key), key.metadata_json())),
        }
        folder = self._tenant_dir(key.tenant_id)
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        write_bytes_atomic(
            self._path(key.tenant_id, key.version),
            json.dumps(record, indent=2).encode(),
            mode=0o600,
        )
