"""Shared test helpers: searching outputs for a tenant key's secret in every common encoding."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from patchveil.tenants.keys import Key, _secret_of

Secretish = Key | bytes
Blob = bytes | bytearray | memoryview | str | Path | np.ndarray


def key_material_patterns(secret: bytes) -> dict[str, bytes]:
    """Every encoding of `secret` the tests look for, by name.

    Base64 is searched at all three byte alignments (the secret may sit anywhere inside a larger
    base64 blob), keeping only the characters that depend on the secret alone.
    """
    patterns = {
        "raw": secret,
        "hex": secret.hex().encode(),
        "HEX": secret.hex().upper().encode(),
        "bytes repr": repr(secret)[2:-1].encode(),
        "decimal list": str(list(secret)).encode(),
    }
    for shift in range(3):
        padded = bytes(shift) + secret
        first = -(-8 * shift // 6)  # first base64 character made of secret bits only
        last = (8 * len(padded)) // 6  # one past the last such character
        patterns[f"base64@{shift}"] = base64.b64encode(padded)[first:last]
        patterns[f"urlsafe base64@{shift}"] = base64.urlsafe_b64encode(padded)[first:last]
    return patterns


def assert_no_key_material(key: Secretish | Iterable[Secretish], blobs_or_paths: object) -> None:
    """Fail if any blob, file or folder (recursively) holds a key's secret in any encoding.

    `key`: a `Key`, raw secret bytes, or an iterable of them. `blobs_or_paths`: one item or an
    iterable of items; an item is `bytes`-like, a `str` (searched as text, never taken as a path),
    a `pathlib.Path` (a file, or a folder searched recursively) or a numpy array (its raw bytes).
    Compressed files (e.g. Parquet pages) are searched as stored; decompress them first.
    The failure message names the key by id and the encoding, never the secret.
    """
    keys = [key] if isinstance(key, Key | bytes) else list(key)
    if not keys:
        raise ValueError("assert_no_key_material needs at least one key")
    searches = []
    for item in keys:
        secret = _secret_of(item) if isinstance(item, Key) else bytes(item)
        name = repr(item) if isinstance(item, Key) else f"secret of {len(secret)} bytes"
        searches.append((name, key_material_patterns(secret)))
    for where, data in _blobs(blobs_or_paths):
        for name, patterns in searches:
            for encoding, pattern in patterns.items():
                offset = data.find(pattern)
                if offset >= 0:
                    raise AssertionError(
                        f"{name}: key material ({encoding}) found in {where} at byte {offset}"
                    )


def _blobs(items: object) -> Iterator[tuple[str, bytes]]:
    """(description, bytes) for every blob, file and file under a folder in `items`."""
    single = (bytes, bytearray, memoryview, str, Path, np.ndarray)
    for item in [items] if isinstance(items, single) else items:  # type: ignore[union-attr]
        if isinstance(item, Path):
            if item.is_dir():
                for path in sorted(p for p in item.rglob("*") if p.is_file()):
                    yield str(path), path.read_bytes()
            elif item.exists():
                yield str(item), item.read_bytes()
            else:
                raise FileNotFoundError(f"assert_no_key_material: {item} does not exist")
        elif isinstance(item, str):
            yield f"text of {len(item)} characters", item.encode("utf-8", "surrogateescape")
        elif isinstance(item, np.ndarray):
            yield f"array {item.dtype} {list(item.shape)}", np.ascontiguousarray(item).tobytes()
        elif isinstance(item, bytes | bytearray | memoryview):
            yield f"blob of {len(item)} bytes", bytes(item)
        else:
            raise TypeError(
                f"assert_no_key_material cannot search {type(item).__name__}; pass bytes, str, "
                "Path or a numpy array"
            )
