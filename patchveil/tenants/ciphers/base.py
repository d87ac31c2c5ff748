"""The cipher interface, its registry, and input checks shared by every cipher."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import ClassVar

import numpy as np

from patchveil.errors import CipherConfigError, ImageFormatError
from patchveil.tenants.ciphers.hazmat import GatherMask
from patchveil.tenants.keys import CipherSpec, Key, ParamValue

_REGISTRY: dict[str, type[Cipher]] = {}


def register_cipher(name: str) -> Callable[[type[Cipher]], type[Cipher]]:
    """Class decorator: make a cipher buildable by name through `create_cipher`."""

    def add(cls: type[Cipher]) -> type[Cipher]:
        if name in _REGISTRY:
            raise ValueError(f"cipher {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def cipher_class(name: str) -> type[Cipher]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise CipherConfigError(
            f"unknown cipher {name!r}; choose one of {', '.join(sorted(_REGISTRY))}"
        ) from None


def available_ciphers() -> list[str]:
    return sorted(_REGISTRY)


def check_spec(spec: CipherSpec) -> CipherSpec:
    """Validate a spec against its cipher and fill in default parameters."""
    cls = cipher_class(spec.name)
    params = cls.resolve_params(spec.param_dict)
    if cls.min_block_size > spec.block_size:
        raise CipherConfigError(
            f"cipher {spec.name!r} needs a block size of at least {cls.min_block_size}, "
            f"got {spec.block_size}"
        )
    return CipherSpec(spec.name, spec.block_size, spec.image_size, tuple(params.items()))


def create_cipher(key: Key) -> Cipher:
    """The cipher that `key` drives (its spec names which one)."""
    return cipher_class(key.spec.name)(key)


def key_space_bits(spec: CipherSpec) -> float:
    """log2 of the number of distinct transforms this cipher can produce on this geometry."""
    spec = check_spec(spec)
    return cipher_class(spec.name).key_space_bits(spec)


def log2_factorial(n: int) -> float:
    return math.lgamma(n + 1) / math.log(2)


def log2_arrangements(n: int, k: int) -> float:
    """log2 of n! / (n-k)!: ordered choices of k of n positions."""
    return log2_factorial(n) - log2_factorial(n - k)


def log2_binomial(n: int, k: int) -> float:
    return log2_factorial(n) - log2_factorial(k) - log2_factorial(n - k)


class Cipher:
    """A keyed, exactly invertible transform of uint8 images [N, H, W, 3].

    Subclasses set `defaults` (their parameters) and implement `build` (the forward gather
    table) and `key_space_bits`. Instances hold key-derived tables and so, like keys, cannot be
    pickled and print no key material.
    """

    name: ClassVar[str] = "abstract"
    summary: ClassVar[str] = ""
    defaults: ClassVar[Mapping[str, ParamValue]] = {}
    min_block_size: ClassVar[int] = 1

    def __init__(self, key: Key) -> None:
        self.spec = check_spec(key.spec)
        self.key_id = key.key_id
        self.key_version = key.version
        self._forward = self.build(key, self.spec)
        self._inverse = self._forward.inverse()

    # --- what a subclass provides -------------------------------------------------------
    def build(self, key: Key, spec: CipherSpec) -> GatherMask:
        raise NotImplementedError

    @classmethod
    def key_space_bits(cls, spec: CipherSpec) -> float:
        raise NotImplementedError

    # --- the public interface ----------------------------------------------------------
    @classmethod
    def resolve_params(cls, given: Mapping[str, ParamValue]) -> dict[str, ParamValue]:
        unknown = set(given) - set(cls.defaults)
        if unknown:
            allowed = ", ".join(sorted(cls.defaults)) or "none"
            raise CipherConfigError(
                f"cipher {cls.name!r} has no parameter {', '.join(sorted(unknown))}; "
                f"its parameters are: {allowed}"
            )
        params = dict(cls.defaults)
        for name, value in given.items():
            default = cls.defaults[name]
            try:
                params[name] = type(default)(value)
            except (TypeError, ValueError):
                raise CipherConfigError(
                    f"parameter {name}={value!r} of cipher {cls.name!r} must be a "
                    f"{type(default).__name__}"
                ) from None
        for name, value in params.items():
            if name.endswith("_fraction") and not 0.0 <= float(value) <= 1.0:
                raise CipherConfigError(f"parameter {name} must lie in [0, 1], got {value}")
        return params

    @property
    def bits(self) -> float:
        return type(self).key_space_bits(self.spec)

    def encrypt(self, images: np.ndarray) -> np.ndarray:
        """Encrypt uint8 images [N, H, W, 3] (or one image [H, W, 3])."""
        return self._run(self._forward, images)

    def decrypt(self, images: np.ndarray) -> np.ndarray:
        """Exactly undo `encrypt`."""
        return self._run(self._inverse, images)

    def _run(self, table: GatherMask, images: np.ndarray) -> np.ndarray:
        batch = self.check_images(images)
        flat = batch.reshape(batch.shape[0], -1)
        out = self.transform(table, flat).reshape(batch.shape)
        return out[0] if images.ndim == 3 else out

    def transform(self, table: GatherMask, flat: np.ndarray) -> np.ndarray:
        """Apply a gather table to flattened images; ciphers on other units override this."""
        return table.apply(flat)

    def check_images(self, images: np.ndarray) -> np.ndarray:
        size = self.spec.image_size
        if not isinstance(images, np.ndarray):
            raise ImageFormatError(f"images must be a numpy array, got {type(images).__name__}")
        if images.dtype != np.uint8:
            raise ImageFormatError(f"images must be uint8, got {images.dtype}")
        batch = images[None] if images.ndim == 3 else images
        if batch.ndim != 4 or batch.shape[1:] != (size, size, 3):
            raise ImageFormatError(
                f"images must have shape [N, {size}, {size}, 3] for this key "
                f"(image size {size}), got {list(images.shape)}"
            )
        return np.ascontiguousarray(batch)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(key={self.key_id}, version={self.key_version}, "
            f"block_size={self.spec.block_size}, image_size={self.spec.image_size})"
        )

    def __reduce__(self) -> object:
        raise TypeError(f"{self!r} holds key material and cannot be pickled")
