"""Homomorphic inference on the platform: CKKS ciphertexts in, CKKS ciphertexts out, no secret key.

`HEEvaluator(net).evaluate(public_context, ciphertexts, packing)` runs a square-activation
network (`patchveil.models.square_nets`) on a tenant's CKKS ciphertexts and returns ciphertexts
only the tenant can decrypt. A context that holds a secret key is refused: the platform must
never be able to decrypt what it evaluates.

Packings (what each input and output ciphertext holds):

- ``"throughput"`` (CryptoNets SIMD): one input ciphertext per pixel of the flattened image
  (`layout.pixels` of them, in (row, column, channel) order) and a last one holding 1 in every
  slot; slot *i* of every ciphertext belongs to image *i* (up to N/2 images per request).
  Output: one ciphertext per class, slot *i* the logit of image *i*. Needs relinearisation keys
  only.
- ``"latency"`` (one image per ciphertext): each input is the image's windows matrix, every
  window followed by a 1 (`im2col_with_one`, `[windows, window_size + 1]`), encoded with
  `tenseal.enc_matmul_encoding`. Output: one ciphertext per image, its first `classes` slots
  the logits. Needs Galois keys (rotations).

The constant 1 carries the biases (`BiasFreeWeights`), so the logits come out multiplied by one
positive factor close to 1 (TenSEAL's rescaling drift) rather than distorted by it.

Wire shape for the route `/v2/models/{name}-he/infer` (`HERequest`/`HEResponse`):

    request  {"packing": "throughput" | "latency", "inputs": ["<base64 ciphertext>", ...]}
             with the tenant's public context uploaded once beforehand (bytes of
             `TenantHEContext.public_context()`), identified by its SHA-256 `context_digest`
    response {"model_name": "<name>-he", "packing": ..., "outputs": ["<base64 ciphertext>", ...]}

Everything crossing is TenSEAL's serialization (protobuf bytes), never a pickle.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import tenseal as ts

from patchveil.errors import PatchveilError
from patchveil.models.square_nets import (
    SquareNet,
    bias_free_weights,
    check_net,
    window_pixel_index,
)

PACKINGS = ("throughput", "latency")
# One latency request evaluates at most this many images (about 1–5 s each on a CPU core).
MAX_LATENCY_IMAGES = 64
# Deserialized public contexts kept per evaluator: one per recent tenant (≈100 MB each with
# Galois keys), so a tenant's repeated queries do not parse its context again.
CONTEXT_CACHE_SIZE = 4
GALOIS_KEYS_NEEDED = (
    "the latency packing rotates ciphertexts: export the public context with Galois keys "
    "(public_context(galois_keys=True))"
)


class HEQueryError(PatchveilError):
    """A homomorphic query is malformed: wrong packing, context or ciphertexts."""


@dataclass(frozen=True)
class HERequest:
    """The body of `/v2/models/{name}-he/infer`: serialized ciphertexts, base64 in JSON."""

    packing: str
    inputs: list[bytes]

    def to_json(self) -> dict[str, Any]:
        return {"packing": self.packing, "inputs": [_b64(data) for data in self.inputs]}

    @classmethod
    def from_json(cls, body: Any) -> HERequest:
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            raise HEQueryError('a homomorphic query is {"packing": ..., "inputs": [base64, ...]}')
        return cls(str(body.get("packing")), [_unb64(item) for item in body["inputs"]])


@dataclass(frozen=True)
class HEResponse:
    model_name: str
    packing: str
    outputs: list[bytes]

    def to_json(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "packing": self.packing,
            "outputs": [_b64(data) for data in self.outputs],
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> HEResponse:
        return cls(body["model_name"], body["packing"], [_unb64(item) for item in body["outputs"]])


def context_digest(public_context: bytes) -> str:
    """How the platform names a tenant's uploaded public context."""
    return hashlib.sha256(public_context).hexdigest()


class PublicContexts:
    """Tenants' public contexts, parsed once and shared by every model's evaluator.

    Refuses a context that could decrypt, or that lacks the keys a packing needs."""

    def __init__(self, size: int = CONTEXT_CACHE_SIZE) -> None:
        self.size = size
        self._parsed: OrderedDict[str, ts.Context] = OrderedDict()

    def get(self, data: bytes, needs_rotations: bool) -> ts.Context:
        digest = context_digest(data)
        context = self._parsed.get(digest)
        if context is None:
            context = _parse_public_context(data)
            self._parsed[digest] = context
            while len(self._parsed) > self.size:
                self._parsed.popitem(last=False)
        self._parsed.move_to_end(digest)
        if needs_rotations and not context.has_galois_keys():
            raise HEQueryError(GALOIS_KEYS_NEEDED)
        return context


def parse_public_context(data: bytes) -> ts.Context:
    """A tenant's serialized public context, parsed; refused if it could decrypt."""
    return _parse_public_context(data)


def _parse_public_context(data: bytes) -> ts.Context:
    try:
        context = ts.context_from(data)
    except (ValueError, RuntimeError, TypeError):
        raise HEQueryError(
            "the public context is not a serialized TenSEAL context; send the bytes of "
            "TenantHEContext.public_context()"
        ) from None
    if context.is_private() or context.has_secret_key():
        # Checked before anything is cached or evaluated: a context holding a secret key is
        # dropped here, never stored, logged or echoed.
        raise HEQueryError(
            "the context holds a secret key; the platform accepts only the public context "
            "(TenSEAL's make_context_public), so it can never decrypt"
        )
    if not context.has_relin_keys():
        raise HEQueryError("the public context has no relinearisation keys")
    return context


class HEEvaluator:
    """Evaluates one square-activation network on CKKS ciphertexts."""

    def __init__(self, net: SquareNet, contexts: PublicContexts | None = None) -> None:
        self.net = check_net(net)
        self._weights = bias_free_weights(net)
        # [windows, window_size + 1]: each window's pixels, then the constant-1 ciphertext.
        index = window_pixel_index(net.layout)
        self._pixel_index = np.concatenate(
            [index, np.full((len(index), 1), net.layout.pixels)], axis=1
        )
        self.contexts = contexts or PublicContexts()

    @property
    def model_name(self) -> str:
        return f"{self.net.name}-he"

    def evaluate(
        self, public_context: bytes, ciphertexts: list[bytes], packing: str
    ) -> list[bytes]:
        """Output ciphertexts (serialized) for input ciphertexts (serialized); see the module
        docstring for what each packing's ciphertexts hold."""
        self.check_inputs(packing, len(ciphertexts))
        context = self.public_context(public_context, needs_rotations=packing == "latency")
        return self.evaluate_in(context, ciphertexts, packing)

    def check_inputs(self, packing: str, count: int) -> None:
        """Refuse a packing or ciphertext count this model cannot take, before any parsing."""
        if packing not in PACKINGS:
            raise HEQueryError(f"packing {packing!r} is not one of {', '.join(PACKINGS)}")
        if packing == "latency" and not 1 <= count <= MAX_LATENCY_IMAGES:
            raise HEQueryError(
                f"a latency query carries 1 to {MAX_LATENCY_IMAGES} images, not "
                f"{count}; split it, or use the throughput packing for batches"
            )
        layout = self.net.layout
        if packing == "throughput" and count != layout.pixels + 1:
            raise HEQueryError(
                f"the throughput packing takes one ciphertext per pixel and one of constant 1s: "
                f"{layout.pixels + 1} for {'×'.join(map(str, layout.image_shape))} "
                f"images, not {count}"
            )

    def evaluate_in(
        self, context: ts.Context, ciphertexts: list[bytes], packing: str
    ) -> list[bytes]:
        """`evaluate` with a public context already parsed (and checked by `PublicContexts` or
        `parse_public_context`)."""
        self.check_inputs(packing, len(ciphertexts))
        if packing == "latency" and not context.has_galois_keys():
            raise HEQueryError(GALOIS_KEYS_NEEDED)
        vectors = [
            self._vector(context, data, position) for position, data in enumerate(ciphertexts)
        ]
        if packing == "throughput":
            outputs = self._throughput(vectors)
        else:
            outputs = [self._latency(vector) for vector in vectors]
        return [output.serialize() for output in outputs]

    def answer(self, public_context: bytes, request: HERequest) -> HEResponse:
        outputs = self.evaluate(public_context, request.inputs, request.packing)
        return HEResponse(self.model_name, request.packing, outputs)

    # --- context and inputs -------------------------------------------------------------------
    def public_context(self, data: bytes, needs_rotations: bool) -> ts.Context:
        return self.contexts.get(data, needs_rotations)

    def _vector(self, context: ts.Context, data: bytes, position: int) -> ts.CKKSVector:
        try:
            return ts.ckks_vector_from(context, data)
        except (ValueError, RuntimeError, TypeError):
            raise HEQueryError(
                f"input {position} is not a serialized CKKS vector for this context"
            ) from None

    # --- throughput packing: one ciphertext per pixel, one image per slot --------------------
    def _throughput(self, pixels: list[ts.CKKSVector]) -> list[ts.CKKSVector]:
        net, weights = self.net, self._weights
        if len({pixel.size() for pixel in pixels}) != 1:
            raise HEQueryError("every pixel ciphertext must hold the same number of images")
        windows = net.layout.windows
        activations = [  # channel-major, like the plain model's features
            _affine([pixels[i] for i in self._pixel_index[window]], channel).square()
            for channel in weights.window_weight
            for window in range(windows)
        ]
        if net.pool == "mean":
            activations = [
                _sum(activations[c * windows : (c + 1) * windows])
                for c in range(len(weights.window_weight))
            ]
        hidden = [_affine(activations, unit).square() for unit in weights.hidden_weight]
        return [_affine(hidden, row) for row in weights.output_weight]

    # --- latency packing: one image per ciphertext (im2col) -----------------------------------
    def _latency(self, windows: ts.CKKSVector) -> ts.CKKSVector:
        net, weights = self.net, self._weights
        # enc_matmul_encoding pads each window (with its constant 1) to a power of two.
        padded = 1 << net.layout.window_size.bit_length()
        expected = net.layout.windows * padded
        if windows.size() != expected:
            raise HEQueryError(
                f"a latency-packed image holds {expected} values ({net.layout.windows} windows × "
                f"{padded}: tenseal.enc_matmul_encoding of its windows, each followed by a 1), "
                f"not {windows.size()}"
            )
        channels = []
        for kernel in weights.window_weight:
            channel = windows.conv2d_im2col([kernel.tolist()], net.layout.windows)
            channel.square_()
            # Mean pooling sums the windows by rotation (no level used) before the dense layer,
            # whose cost grows with its input length: C inputs instead of C·windows.
            channels.append(channel.sum() if net.pool == "mean" else channel)
        packed = ts.CKKSVector.pack_vectors(channels)  # channel-major, windows within
        hidden = packed.mm(weights.hidden_weight.T.tolist())
        hidden.square_()
        return hidden.mm(weights.output_weight.T.tolist())


def _affine(inputs: list[ts.CKKSVector], weights: np.ndarray) -> ts.CKKSVector:
    """Σ weightᵢ·inputᵢ with plain weights; zero weights cost nothing. No plain value is added:
    biases arrive through the constant-1 input (see `BiasFreeWeights`)."""
    total = None
    for vector, weight in zip(inputs, weights, strict=True):
        if weight == 0.0:
            continue
        term = vector * float(weight)
        total = term if total is None else total.add_(term)
    if total is None:  # every weight zero: still a ciphertext at the right level
        total = inputs[0] * 0.0
    return total


def _sum(vectors: list[ts.CKKSVector]) -> ts.CKKSVector:
    total = vectors[0].copy()
    for vector in vectors[1:]:
        total.add_(vector)
    return total


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(item: Any) -> bytes:
    try:
        return base64.b64decode(str(item).encode(), validate=True)
    except (binascii.Error, ValueError):
        raise HEQueryError("every ciphertext must be base64 of TenSEAL's serialization") from None
