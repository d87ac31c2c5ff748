"""The tenant's front door: `Tenant(...).encrypt(images)` → an `EncryptedBatch` that
`decrypt` takes back; no permutation array or nonce in sight."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from patchveil.tenants.ciphers import Cipher, create_cipher
from patchveil.tenants.encrypted_batch import (
    CiphertextError,
    EncryptedBatch,
    integrity_tags,
    mismatched_tags,
)
from patchveil.tenants.keys import CipherSpec, Key
from patchveil.tenants.keystore import KeyStore
from patchveil.tenants.samples import query_nonces


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
        return self._key_and_cipher(version)[1]

    def _key_and_cipher(self, version: int | None) -> tuple[Key, Cipher]:
        """The key read from the store (every call: a retired version is refused at once)
        and its cipher, whose tables are built once per version."""
        key = self.key(version)
        if key.version not in self._ciphers:
            self._ciphers[key.version] = create_cipher(key)
        return key, self._ciphers[key.version]

    def encrypt(self, images: np.ndarray, version: int | None = None) -> EncryptedBatch:
        """Encrypt uint8 images [N, H, W, 3] with the newest key (or `version`).

        A per-image cipher gets fresh nonces reserved in the key store: callers never choose
        one. The result carries what `decrypt` needs (key id and version, nonces, one
        integrity tag per image), none of it secret.
        """
        key, cipher = self._key_and_cipher(version)
        batch = cipher.check_images(images)  # a bad input fails before a nonce is reserved
        nonces = None
        if cipher.per_image:
            first = self.store.reserve_nonces(self.tenant_id, len(batch))
            nonces = np.arange(first, first + len(batch), dtype=np.int64)
        return self._seal(key, cipher, batch, nonces)

    def encrypt_query(self, images: np.ndarray) -> EncryptedBatch:
        """Encrypt images to send to the query endpoint, with the newest key.

        A per-image cipher draws random nonces from 2**62 up (`samples.query_nonces`): a fresh
        transform per image and per query, never an onboarded image's, and nothing to reserve in
        the key store for images that are never stored. The batch still decrypts with `decrypt`.
        """
        key, cipher = self._key_and_cipher(None)
        batch = cipher.check_images(images)
        nonces = query_nonces(len(batch)) if cipher.per_image else None
        return self._seal(key, cipher, batch, nonces)

    @staticmethod
    def _seal(
        key: Key, cipher: Cipher, batch: np.ndarray, nonces: np.ndarray | None
    ) -> EncryptedBatch:
        ciphertexts = cipher.encrypt(batch, nonces)
        return EncryptedBatch(
            tenant_id=key.tenant_id,
            key_id=key.key_id,
            key_version=key.version,
            cipher=key.spec.name,
            images=ciphertexts,
            tags=integrity_tags(key, ciphertexts, nonces),
            nonces=nonces,
        )

    def decrypt(self, batch: EncryptedBatch) -> np.ndarray:
        """The plain images of `batch`; refused (nothing returned) when the batch belongs to
        another tenant or key, lacks its nonces, or any image fails its integrity check."""
        if batch.tenant_id != self.tenant_id:
            raise CiphertextError(
                f"these images were encrypted by tenant {batch.tenant_id!r}, not {self.tenant_id!r}"
            )
        key, cipher = self._key_and_cipher(batch.key_version)
        if key.key_id != batch.key_id:
            raise CiphertextError(
                f"these images were encrypted with key {batch.key_id} (version "
                f"{batch.key_version}), but version {key.version} in {self.store.root} is key "
                f"{key.key_id}: they come from another key store"
            )
        if cipher.per_image and batch.nonces is None:
            raise CiphertextError(
                f"key version {key.version} draws a fresh transform per image, but these images "
                "carry no nonces"
            )
        bad = mismatched_tags(key, batch)
        if bad:
            shown = ", ".join(str(index) for index in bad[:8]) + (" …" if len(bad) > 8 else "")
            raise CiphertextError(
                f"{len(bad)} of {len(batch)} image(s) fail their integrity check (image {shown}): "
                "their pixels, nonce or metadata were changed, or they went through a lossy format"
            )
        return cipher.decrypt(batch.images, batch.nonces)

    def encrypt_rows(
        self, images: np.ndarray, version: int | None, nonces: np.ndarray | None
    ) -> np.ndarray:
        """Encrypt dataset rows whose nonce is the sample's tenant-local index (the tenant
        actor's shards: the platform registry hands out each index once; queries use random
        nonces from 2**62). Everything else goes through `encrypt`."""
        return self.cipher(version).encrypt(images, nonces)

    def decrypt_rows(
        self, images: np.ndarray, version: int | None, nonces: np.ndarray | None
    ) -> np.ndarray:
        """Undo `encrypt_rows` (same version and nonces); rows carry no integrity tag."""
        return self.cipher(version).decrypt(images, nonces)
