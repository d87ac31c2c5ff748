"""The tenant's front door: `Tenant(...).encrypt(images)`; no permutation array in sight."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from patchveil.tenants.ciphers import Cipher, create_cipher
from patchveil.tenants.keys import CipherSpec, Key
from patchveil.tenants.keystore import KeyStore


class Tenant:
    """One tenant's keys and ciphers, read from the tenant's own key store."""

    def __init__(self, tenant_id: str, store: KeyStore | Path | str) -> None:
        self.tenant_id = tenant_id
        self.store = store if isinstance(store, KeyStore) else KeyStore(store)
        self._ciphers: dict[int, Cipher] = {}

    def __repr__(self) -> str:
        return f"Tenant(id={self.tenant_id!r}, store={self.store!r})"

    def create_key(self, spec: CipherSpec) -> Key:
        return self.store.create(self.tenant_id, spec)

    def rotate_key(self, spec: CipherSpec | None = None) -> Key:
        return self.store.rotate(self.tenant_id, spec)

    def key(self, version: int | None = None) -> Key:
        return self.store.load(self.tenant_id, version)

    def cipher(self, version: int | None = None) -> Cipher:
        key = self.key(version)
        if key.version not in self._ciphers:
            self._ciphers[key.version] = create_cipher(key)
        return self._ciphers[key.version]

    def encrypt(
        self, images: np.ndarray, version: int | None = None, nonces: np.ndarray | None = None
    ) -> np.ndarray:
        """Encrypt with the newest key (or `version`); `nonces` for per-image ciphers."""
        return self.cipher(version).encrypt(images, nonces)

    def decrypt(
        self, images: np.ndarray, version: int | None = None, nonces: np.ndarray | None = None
    ) -> np.ndarray:
        return self.cipher(version).decrypt(images, nonces)
