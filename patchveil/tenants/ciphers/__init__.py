"""Block-wise perceptual ciphers, registered by name; `create_cipher(key)` is the way in."""

from patchveil.tenants.ciphers import (  # noqa: F401  (each module registers its cipher)
    conventional,
    disposable,
    etc,
    le,
    pixel,
    plain,
    restricted,
)
from patchveil.tenants.ciphers.base import (
    Cipher,
    available_ciphers,
    check_spec,
    cipher_class,
    create_cipher,
    key_space_bits,
    key_space_table,
    register_cipher,
)

__all__ = [
    "Cipher",
    "available_ciphers",
    "check_spec",
    "cipher_class",
    "create_cipher",
    "key_space_bits",
    "key_space_table",
    "register_cipher",
]
