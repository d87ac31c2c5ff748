"""The cipher interface, its registry, and input checks shared by every cipher."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import ClassVar

import numpy as np

from patchveil.errors import CipherConfigError, ImageFormatError
from patchveil.tenants.ciphers.hazmat import GatherMask, Scratch
from patchveil.tenants.keys import CipherSpec, Key, ParamValue

_REGISTRY: dict[str, type[Cipher]] = {}

CHUNK_BYTES = 32 * 2**20
"""Working memory of one chunk: `Cipher.encrypt`/`decrypt` process a batch a chunk of images at
a time, so a batch of any size needs its input, its output and about this much more."""


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
    checked = CipherSpec(spec.name, spec.block_size, spec.image_size, tuple(params.items()))
    cls.check_params_fit(checked)
    return checked


def create_cipher(key: Key) -> Cipher:
    """The cipher that `key` drives (its spec names which one)."""
    return cipher_class(key.spec.name)(key)


def key_space_bits(spec: CipherSpec) -> float:
    """log2 of the number of distinct transforms this cipher can produce on this geometry."""
    spec = check_spec(spec)
    return cipher_class(spec.name).key_space_bits(spec)


def key_space_table(block_size: int, image_size: int) -> list[tuple[str, float, str]]:
    """(name, key-space bits, summary) of every registered cipher on one geometry."""
    return [
        (name, key_space_bits(CipherSpec(name, block_size, image_size)), _REGISTRY[name].summary)
        for name in available_ciphers()
    ]


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
    # A per-image cipher draws a fresh transform for every image from (key, nonce): callers
    # pass one nonce per image (the sample id), and need the same nonce to decrypt.
    per_image: ClassVar[bool] = False
    # How the model reads the ciphertext (not secret): "bytes" (RGB) or "nibbles" (two 4-bit
    # values per byte). The platform looks it up by cipher name in `patchveil.protocol`.
    input_layout: ClassVar[str] = "bytes"
    # Bytes of temporaries per byte of image a chunk needs (index tables, split nibbles, gathered
    # blocks): a chunk holds CHUNK_BYTES / (this · image bytes) images.
    working_copies: ClassVar[int] = 1

    def __init__(self, key: Key) -> None:
        self.spec = check_spec(key.spec)
        self.key_id = key.key_id
        self.key_version = key.version
        if not self.per_image:
            self._forward = self.build(key, self.spec)
            self._inverse = self._forward.inverse()

    # --- what a subclass provides -------------------------------------------------------
    def build(self, key: Key, spec: CipherSpec) -> GatherMask:
        raise NotImplementedError

    @classmethod
    def key_space_bits(cls, spec: CipherSpec) -> float:
        raise NotImplementedError

    @classmethod
    def check_params_fit(cls, spec: CipherSpec) -> None:
        """Refuse parameters that do not fit the spec's geometry (none to check by default)."""

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

    def encrypt(
        self, images: np.ndarray, nonces: np.ndarray | None = None, *, device: str | None = None
    ) -> np.ndarray:
        """Encrypt uint8 images [N, H, W, 3] (or one image [H, W, 3]).

        `nonces` (one integer per image, e.g. the sample id) is required by per-image ciphers
        and ignored by the others. `device` (e.g. "cuda") computes each chunk with torch on that
        device instead of numpy; the result is the same numpy array either way.
        """
        return self._run(images, nonces, inverse=False, device=device)

    def decrypt(
        self, images: np.ndarray, nonces: np.ndarray | None = None, *, device: str | None = None
    ) -> np.ndarray:
        """Exactly undo `encrypt` (with the same nonces, for a per-image cipher)."""
        return self._run(images, nonces, inverse=True, device=device)

    def _run(
        self,
        images: np.ndarray,
        nonces: np.ndarray | None,
        inverse: bool,
        device: str | None = None,
    ) -> np.ndarray:
        batch = self.check_images(images)
        count = batch.shape[0]
        # An explicit row length: `-1` cannot be inferred for an empty batch [0, H, W, 3].
        flat = batch.reshape(count, 3 * self.spec.image_size**2)
        checked = self.check_nonces(nonces, count) if self.per_image else None
        out = np.empty_like(flat)
        step = self.chunk_images()
        scratch = Scratch()  # one chunk's working buffers, reused by the next chunk
        for start in range(0, count, step):
            part = slice(start, start + step)
            if checked is not None:
                self.transform_per_image(
                    flat[part], checked[part], inverse, out[part], device, scratch
                )
            else:
                table = self._inverse if inverse else self._forward
                self.transform(table, flat[part], out[part], device)
        out = out.reshape(batch.shape)
        return out[0] if images.ndim == 3 else out

    def chunk_images(self, chunk_bytes: int | None = None) -> int:
        """How many images one chunk of `chunk_bytes` (default CHUNK_BYTES) holds (at least one)."""
        budget = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
        return max(1, budget // (self.working_copies * 3 * self.spec.image_size**2))

    def transform_per_image(
        self,
        flat: np.ndarray,
        nonces: np.ndarray,
        inverse: bool,
        out: np.ndarray,
        device: str | None = None,
        scratch: Scratch | None = None,
    ) -> None:
        """Per-image ciphers implement this instead of `build`: write the transform of the
        flattened images `flat` (one nonce each) into `out` (with torch on `device` if given),
        with working buffers from `scratch` (shared by the chunks of one batch) if given."""
        raise NotImplementedError

    def check_nonces(self, nonces: np.ndarray | None, count: int) -> np.ndarray:
        if nonces is None:
            raise CipherConfigError(
                f"cipher {self.name!r} draws a fresh transform per image: pass one nonce per "
                "image (e.g. its sample id), and the same nonces to decrypt"
            )
        checked = np.asarray(nonces)
        if checked.shape != (count,) or not np.issubdtype(checked.dtype, np.integer):
            raise CipherConfigError(
                f"nonces must be {count} integers (one per image), got {checked.dtype} "
                f"{list(checked.shape)}"
            )
        return checked.astype(np.int64)

    def transform(
        self, table: GatherMask, flat: np.ndarray, out: np.ndarray, device: str | None = None
    ) -> None:
        """Apply a gather table to flattened images, into `out` (with torch on `device` if
        given); ciphers on other units override this."""
        table.apply(flat, out=out, device=device)

    def check_images(self, images: np.ndarray) -> np.ndarray:
        size = self.spec.image_size
        # Every message names the expected form, so one line tells the user what would be right.
        expected = f"uint8 numpy array [N, {size}, {size}, 3] (or one image [{size}, {size}, 3])"
        if not isinstance(images, np.ndarray):
            raise ImageFormatError(f"images must be a {expected}, got a {type(images).__name__}")
        if images.dtype != np.uint8:
            raise ImageFormatError(f"images must be a {expected}, got dtype {images.dtype}")
        batch = images[None] if images.ndim == 3 else images
        if batch.ndim != 4 or batch.shape[1:] != (size, size, 3):
            raise ImageFormatError(
                f"images must be a {expected} for this key (image size {size}), "
                f"got shape {list(images.shape)}"
            )
        return np.ascontiguousarray(batch)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(key={self.key_id}, version={self.key_version}, "
            f"block_size={self.spec.block_size}, image_size={self.spec.image_size})"
        )

    def __reduce__(self) -> object:
        raise TypeError(f"{self!r} holds key material and cannot be pickled")
