"""Tenant keys: a 256-bit secret plus the cipher configuration it drives.

A `Key` never shows its secret: `repr` prints `Key(id=…, version=…)`, it refuses to be pickled
(so it cannot slip into a Ray object or a Prefect result), and the secret is reachable only
through `keystream()`, which the cipher module uses to derive permutations and masks.
"""

from __future__ import annotations

import json
import numbers
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from patchveil.config import MAX_IMAGE_SIZE
from patchveil.errors import CipherConfigError
from patchveil.tenants.keystream import KeyStream

SECRET_BYTES = 32

ParamValue = float | int | str | bool


@dataclass(frozen=True)
class CipherSpec:
    """Which cipher a key drives, and on what geometry: everything except the secret."""

    name: str
    block_size: int
    image_size: int
    params: tuple[tuple[str, ParamValue], ...] = ()

    def __post_init__(self) -> None:
        for name in ("block_size", "image_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise CipherConfigError(f"{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.image_size > MAX_IMAGE_SIZE:
            raise CipherConfigError(
                f"image size {self.image_size} is larger than the largest supported, "
                f"{MAX_IMAGE_SIZE} pixels; resize the images first"
            )
        if self.block_size <= 0 or self.image_size <= 0:
            raise CipherConfigError(
                f"block size ({self.block_size}) and image size ({self.image_size}) must be positive"
            )
        if self.image_size % self.block_size:
            raise CipherConfigError(
                f"block size {self.block_size} does not divide image size {self.image_size}; "
                f"choose a block size that divides {self.image_size} (e.g. "
                f"{', '.join(str(d) for d in _divisors(self.image_size))})"
            )
        object.__setattr__(self, "params", tuple(sorted(dict(self.params).items())))

    @property
    def param_dict(self) -> dict[str, ParamValue]:
        return dict(self.params)

    @property
    def blocks_per_side(self) -> int:
        return self.image_size // self.block_size

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "block_size": self.block_size,
            "image_size": self.image_size,
            "params": self.param_dict,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CipherSpec:
        return cls(
            name=str(data["name"]),
            block_size=int(data["block_size"]),
            image_size=int(data["image_size"]),
            params=tuple(dict(data.get("params", {})).items()),
        )


def _divisors(n: int) -> list[int]:
    return [d for d in range(2, n + 1) if n % d == 0][:6]


@dataclass(frozen=True, repr=False, eq=False)
class Key:
    """One version of one tenant's key. Build with `Key.generate`; read from a `KeyStore`."""

    tenant_id: str
    key_id: str
    version: int
    spec: CipherSpec
    created_at: str
    _secret: bytes = field(compare=False)

    @classmethod
    def generate(cls, tenant_id: str, spec: CipherSpec, version: int = 1) -> Key:
        return cls(
            tenant_id=tenant_id,
            key_id=secrets.token_hex(8),
            version=version,
            spec=spec,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            _secret=secrets.token_bytes(SECRET_BYTES),
        )

    def keystream(self, label: str) -> KeyStream:
        """A keyed stream for one named purpose (domain separation by `label`)."""
        return KeyStream(self._secret, label)

    def metadata(self) -> dict[str, Any]:
        """Everything about the key except the secret (safe to store, log and show)."""
        return {
            "tenant_id": self.tenant_id,
            "key_id": self.key_id,
            "version": self.version,
            "cipher": self.spec.to_json(),
            "created_at": self.created_at,
        }

    def metadata_json(self) -> bytes:
        return json.dumps(self.metadata(), sort_keys=True, separators=(",", ":")).encode()

    def __repr__(self) -> str:
        return f"Key(id={self.key_id}, version={self.version}, tenant={self.tenant_id}, cipher={self.spec.name})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Key):
            return NotImplemented
        return self.key_id == other.key_id and secrets.compare_digest(self._secret, other._secret)

    def __hash__(self) -> int:
        return hash((self.key_id, self.version))

    def __reduce__(self) -> Any:
        raise TypeError(
            f"{self!r} cannot be pickled: keys stay with their tenant and are loaded from the key "
            "store where they are used"
        )


def _secret_of(key: Key) -> bytes:
    """The raw secret, for sealing in the key store only."""
    return key._secret
