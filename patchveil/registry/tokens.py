"""API tokens: random, shown once, stored only as a salted hash, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_BYTES = 32
_SALT_BYTES = 16
_SCHEME = "sha256"


def new_token() -> str:
    """A fresh token with 256 bits of entropy (URL-safe text)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def _digest(salt: bytes, token: str) -> bytes:
    return hashlib.sha256(salt + token.encode()).digest()


def hash_token(token: str) -> str:
    """`sha256$<salt>$<digest>` of a token.

    A fast salted hash is enough: the token is 256 random bits, so there is nothing to guess
    offline, and a slow KDF would cost every query the endpoint checks.
    """
    salt = secrets.token_bytes(_SALT_BYTES)
    return f"{_SCHEME}${salt.hex()}${_digest(salt, token).hex()}"


def token_matches(token: str, stored_hash: str | None) -> bool:
    """True when `token` hashes to `stored_hash`; False for no hash or an unknown scheme."""
    if not stored_hash or not isinstance(token, str):
        return False
    scheme, _, rest = stored_hash.partition("$")
    salt_hex, _, digest_hex = rest.partition("$")
    if scheme != _SCHEME:
        return False
    try:
        salt, expected = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    except ValueError:
        return False
    return hmac.compare_digest(_digest(salt, token), expected)
