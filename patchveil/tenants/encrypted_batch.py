"""What `Tenant.encrypt` returns: ciphertexts plus everything needed to decrypt them except
the key (tenant side; none of it is secret).

As Fernet embeds its IV and a MAC, a batch carries the key id and version, the per-image nonces
and one integrity tag per image, so decryption can refuse a wrong key version, a lost nonce or an
edited image instead of returning garbage. The tag is an HMAC-SHA256 (truncated to 128 bits) under
a key derived from the tenant's secret, over the key id, version, nonce, shape and ciphertext
bytes: it reveals nothing about the key or the plain image.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from patchveil.errors import PatchveilError
from patchveil.tenants.keys import Key

FORMAT_NAME = "patchveil-ciphertext"
FORMAT_VERSION = 1
TAG_BYTES = 16
_TAG_LABEL = "patchveil/ciphertext-tag/v1"
_NO_NONCE = -1


class CiphertextError(PatchveilError):
    """Ciphertext that cannot be decrypted as it is: another key, lost nonces, edited images."""


@dataclass(frozen=True)
class EncryptedBatch:
    """Ciphertexts uint8 [N, H, W, 3] and their (non-secret) decryption metadata."""

    tenant_id: str
    key_id: str
    key_version: int
    cipher: str
    images: np.ndarray
    tags: np.ndarray  # uint8 [N, TAG_BYTES]
    nonces: np.ndarray | None = None  # int64 [N], per-image ciphers only

    def __post_init__(self) -> None:
        count = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise CiphertextError(
                f"ciphertexts must be uint8 [N, H, W, 3], got {self.images.dtype} "
                f"{list(self.images.shape)}"
            )
        if self.tags.dtype != np.uint8 or self.tags.shape != (count, TAG_BYTES):
            raise CiphertextError(f"expected {count} integrity tags of {TAG_BYTES} bytes")
        if self.nonces is not None and (
            self.nonces.shape != (count,) or not np.issubdtype(self.nonces.dtype, np.integer)
        ):
            raise CiphertextError(f"expected {count} integer nonces, one per image")

    def __len__(self) -> int:
        return len(self.images)

    def header(self) -> dict[str, Any]:
        """The metadata shared by every image of the batch (stored beside the ciphertexts)."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "tenant_id": self.tenant_id,
            "key_id": self.key_id,
            "key_version": self.key_version,
            "cipher": self.cipher,
        }

    def image_metadata(self, index: int) -> dict[str, Any]:
        """The header plus one image's nonce and tag: what a single ciphertext file carries."""
        nonce = None if self.nonces is None else int(self.nonces[index])
        return {**self.header(), "nonce": nonce, "tag": bytes(self.tags[index]).hex()}

    @classmethod
    def from_header(
        cls,
        header: dict[str, Any],
        images: np.ndarray,
        tags: np.ndarray,
        nonces: np.ndarray | None,
        where: str,
    ) -> EncryptedBatch:
        """Rebuild a batch from stored metadata; `where` names the file in errors."""
        try:
            if header["format"] != FORMAT_NAME:
                raise ValueError(header["format"])
            if int(header["format_version"]) > FORMAT_VERSION:
                raise CiphertextError(
                    f"{where} was written by a newer patchveil (ciphertext format "
                    f"{header['format_version']}); upgrade to decrypt it"
                )
            return cls(
                tenant_id=str(header["tenant_id"]),
                key_id=str(header["key_id"]),
                key_version=int(header["key_version"]),
                cipher=str(header["cipher"]),
                images=images,
                tags=tags,
                nonces=nonces,
            )
        except (KeyError, TypeError, ValueError):
            raise CiphertextError(
                f"{where} carries no readable patchveil ciphertext metadata (key id, version, "
                "nonces); it cannot be decrypted safely"
            ) from None


def integrity_tags(key: Key, images: np.ndarray, nonces: np.ndarray | None) -> np.ndarray:
    """One tag per ciphertext image (uint8 [N, TAG_BYTES]), keyed by the tenant's secret."""
    tag_key = key.keystream(_TAG_LABEL).read(32)
    prefix = json.dumps(
        {"key_id": key.key_id, "key_version": key.version, "shape": list(images.shape[1:])},
        sort_keys=True,
    ).encode()
    tags = np.empty((len(images), TAG_BYTES), dtype=np.uint8)
    for index, image in enumerate(images):
        nonce = _NO_NONCE if nonces is None else int(nonces[index])
        message = hmac.new(tag_key, prefix, hashlib.sha256)
        message.update(nonce.to_bytes(8, "big", signed=True))
        message.update(np.ascontiguousarray(image).tobytes())
        tags[index] = np.frombuffer(message.digest()[:TAG_BYTES], dtype=np.uint8)
    return tags


def mismatched_tags(key: Key, batch: EncryptedBatch) -> list[int]:
    """Indices of the images whose tag does not match (edited pixels, nonce or metadata)."""
    expected = integrity_tags(key, batch.images, batch.nonces)
    return [
        index
        for index in range(len(batch))
        if not hmac.compare_digest(expected[index].tobytes(), batch.tags[index].tobytes())
    ]
