"""The endpoint's own secrets, in `<home>/serve`: the server secret of the clone defence and the
operator token's hash. Both are made once, on first start, and never printed again."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from patchveil.errors import PatchveilError
from patchveil.fsutil import write_bytes_atomic, write_bytes_exclusive
from patchveil.registry.tokens import hash_token, new_token

SERVER_SECRET_FILE = "server-secret.bin"
OPERATOR_TOKEN_FILE = "operator-token.hash"
_SECRET_BYTES = 32


def _private_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)


def server_secret(folder: Path) -> bytes:
    """The 32-byte server secret keying the defence's HMACs, created on first use (mode 0600)."""
    path = folder / SERVER_SECRET_FILE
    if not path.exists():
        _private_folder(folder)
        # False when another process made it first: then theirs is used.
        write_bytes_exclusive(path, secrets.token_bytes(_SECRET_BYTES), mode=0o600)
    secret = path.read_bytes()
    if len(secret) != _SECRET_BYTES:
        raise PatchveilError(
            f"{path} holds {len(secret)} bytes, not a {_SECRET_BYTES}-byte server secret; "
            "restore it from a backup (deleting it changes every intentional error and watermark)"
        )
    return secret


def ensure_operator_token(folder: Path) -> str | None:
    """A new operator token when none exists yet (returned this once, stored only hashed);
    None when one was made before."""
    path = folder / OPERATOR_TOKEN_FILE
    if path.exists():
        return None
    _private_folder(folder)
    token = new_token()
    return token if write_bytes_exclusive(path, hash_token(token).encode(), mode=0o600) else None


def reset_operator_token(folder: Path) -> str:
    """Replace the operator token (the old one stops working); returned this once."""
    _private_folder(folder)
    token = new_token()
    write_bytes_atomic(folder / OPERATOR_TOKEN_FILE, hash_token(token).encode(), mode=0o600)
    return token


def operator_token_hash(folder: Path) -> str | None:
    path = folder / OPERATOR_TOKEN_FILE
    return path.read_text().strip() if path.exists() else None
