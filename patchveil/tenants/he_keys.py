"""The tenant's CKKS context: made here, its secret key sealed in the tenant's key store.

The platform only ever receives `TenantHEContext.public_context()`: TenSEAL's serialized context
after `make_context_public()` (encryption, relinearisation and, for the latency packing, Galois
keys), which evaluates but cannot decrypt.

Sealing builds on the key store's public interface: the AES-GCM key that seals the context is
derived with HKDF from the store's `fingerprint_key()` (itself derived from the store's
key-encryption key) under a label of its own, so the passphrase, or the development
`master.key`, guards the CKKS secret key exactly as it guards the tenant's cipher keys. The file
`<store>/<tenant_id>/he-context.json` keeps the parameters in clear (as AES-GCM associated data)
and the TenSEAL serialization of the secret and public keys sealed; relinearisation and Galois
keys are derived again from the secret key when needed, which keeps the file small.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tenseal as ts
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from patchveil.errors import KeyStoreError
from patchveil.fsutil import write_bytes_exclusive
from patchveil.tenants.keystore import KeyStore, check_tenant_id

CONTEXT_FILE = "he-context.json"
_FORMAT = 1
_SEAL_LABEL = b"patchveil/he-context-seal/v1"
# SEAL's 128-bit bound on the total coefficient modulus, by polynomial degree
# (HomomorphicEncryption.org standard); TenSEAL refuses larger chains, we say why first.
MAX_MODULUS_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


class HEContextError(KeyStoreError):
    """A CKKS context cannot be made, sealed or opened."""


@dataclass(frozen=True)
class CKKSParameters:
    """CKKS parameters at 128-bit security. The defaults allow six rescalings: the latency
    packing's conv → square → dense (two levels) → square → dense; the throughput packing
    needs five."""

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (31, 26, 26, 26, 26, 26, 26, 31)
    scale_bits: int = 26

    def __post_init__(self) -> None:
        bound = MAX_MODULUS_BITS_128.get(self.poly_modulus_degree)
        if bound is None:
            raise HEContextError(
                f"poly_modulus_degree {self.poly_modulus_degree} is not one of "
                f"{sorted(MAX_MODULUS_BITS_128)}"
            )
        if sum(self.coeff_mod_bit_sizes) > bound:
            raise HEContextError(
                f"coefficient modulus of {sum(self.coeff_mod_bit_sizes)} bits exceeds the "
                f"128-bit security bound of {bound} bits for N={self.poly_modulus_degree}; use "
                "fewer or smaller primes, or a larger N"
            )

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def levels(self) -> int:
        """Rescalings available: every prime but the first and the special last one."""
        return len(self.coeff_mod_bit_sizes) - 2

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CKKSParameters:
        return cls(
            poly_modulus_degree=int(data["poly_modulus_degree"]),
            coeff_mod_bit_sizes=tuple(int(bits) for bits in data["coeff_mod_bit_sizes"]),
            scale_bits=int(data["scale_bits"]),
        )


class TenantHEContext:
    """A tenant's CKKS context with its secret key: encrypts, decrypts, exports the public part.

    Like a cipher `Key`, it prints without its secret and refuses to be pickled.
    """

    def __init__(
        self, tenant_id: str, context_id: str, parameters: CKKSParameters, context: ts.Context
    ) -> None:
        self.tenant_id = tenant_id
        self.context_id = context_id
        self.parameters = parameters
        self._context = context

    def __repr__(self) -> str:
        return (
            f"TenantHEContext(id={self.context_id}, tenant={self.tenant_id}, "
            f"N={self.parameters.poly_modulus_degree})"
        )

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError(
            f"{self!r} holds a CKKS secret key and cannot be pickled; send "
            "`public_context()` bytes to the platform and open the context where it is used"
        )

    @property
    def context(self) -> ts.Context:
        """TenSEAL's context, secret key included: for the tenant's encoder and decoder only."""
        return self._context

    def public_context(self, galois_keys: bool = True) -> bytes:
        """Serialized context without the secret key. Galois keys (needed for rotations: the
        latency packing) are derived here and make it about 100 MB at N=8192; the throughput
        packing needs none."""
        public = self._context.copy()
        if galois_keys:
            public.generate_galois_keys()
        public.make_context_public()
        return public.serialize(
            save_public_key=True,
            save_secret_key=False,
            save_galois_keys=galois_keys,
            save_relin_keys=True,
        )


def make_context(parameters: CKKSParameters) -> ts.Context:
    """A fresh CKKS context with its secret, public and relinearisation keys."""
    context = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=parameters.poly_modulus_degree,
        coeff_mod_bit_sizes=list(parameters.coeff_mod_bit_sizes),
    )
    context.global_scale = 2.0**parameters.scale_bits
    return context


def context_path(store: KeyStore, tenant_id: str) -> Path:
    return store.root / check_tenant_id(tenant_id) / CONTEXT_FILE


def create_he_context(
    store: KeyStore, tenant_id: str, parameters: CKKSParameters | None = None
) -> TenantHEContext:
    """Make the tenant's CKKS context and seal it in its key store; refuses to replace one (a
    new context would orphan every ciphertext and public context made with the old one)."""
    parameters = parameters or CKKSParameters()
    path = context_path(store, tenant_id)
    if path.exists():
        raise HEContextError(
            f"tenant {tenant_id!r} already has a CKKS context in {store.root}; open it with "
            "open_he_context"
        )
    context = make_context(parameters)
    metadata = {
        "tenant_id": tenant_id,
        "context_id": secrets.token_hex(8),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "parameters": parameters.to_json(),
    }
    secret_part = context.serialize(
        save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=False
    )
    nonce = secrets.token_bytes(12)
    record = {
        "format": _FORMAT,
        "metadata": metadata,
        "nonce": base64.b64encode(nonce).decode(),
        "sealed": base64.b64encode(
            _aead(store).encrypt(nonce, secret_part, _associated_data(metadata))
        ).decode(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    if not write_bytes_exclusive(path, json.dumps(record, indent=2).encode(), mode=0o600):
        raise HEContextError(f"tenant {tenant_id!r}: {path} appeared while it was being made")
    return TenantHEContext(tenant_id, metadata["context_id"], parameters, context)


def open_he_context(store: KeyStore, tenant_id: str) -> TenantHEContext:
    """The tenant's sealed CKKS context, opened with the store's passphrase (or master key)."""
    path = context_path(store, tenant_id)
    try:
        record = json.loads(path.read_text())
        metadata = record["metadata"]
        nonce = base64.b64decode(record["nonce"], validate=True)
        sealed = base64.b64decode(record["sealed"], validate=True)
        parameters = CKKSParameters.from_json(metadata["parameters"])
    except FileNotFoundError:
        raise HEContextError(
            f"tenant {tenant_id!r} has no CKKS context in {store.root}; make one with "
            "create_he_context"
        ) from None
    except (OSError, ValueError, KeyError, TypeError):
        raise HEContextError(f"CKKS context file {path} is corrupt") from None
    if metadata.get("tenant_id") != tenant_id:
        raise HEContextError(f"{path} holds the context of {metadata.get('tenant_id')!r}")
    try:
        secret_part = _aead(store).decrypt(nonce, sealed, _associated_data(metadata))
    except InvalidTag:
        raise HEContextError(
            f"the CKKS context in {path} does not open with this key store's key (another "
            "store's file, a wrong passphrase, or edited metadata)"
        ) from None
    context = ts.context_from(secret_part)
    context.generate_relin_keys()
    context.global_scale = 2.0**parameters.scale_bits
    return TenantHEContext(tenant_id, metadata["context_id"], parameters, context)


def _aead(store: KeyStore) -> AESGCM:
    # A key of its own for CKKS contexts: HKDF separates it from the fingerprint HMAC key it
    # starts from, so neither use can stand in for the other.
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL_LABEL).derive(
        store.fingerprint_key()
    )
    return AESGCM(derived)


def _associated_data(metadata: dict[str, Any]) -> bytes:
    return json.dumps(metadata, sort_keys=True).encode()
