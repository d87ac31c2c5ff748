"""The tenant's side of a homomorphic query: images to CKKS ciphertexts, result ciphertexts to labels.

What the platform evaluates on is described in `patchveil.serve.he_inference` (the packings);
this module makes those ciphertexts with the tenant's secret-key context and reads the answers.
Images are float arrays `[N, H, W, C]` scaled to [0, 1], as the model was trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tenseal as ts

from patchveil.errors import PatchveilError
from patchveil.models.square_nets import InputLayout, im2col_with_one
from patchveil.serve.he_inference import MAX_LATENCY_IMAGES, PACKINGS, HERequest, HEResponse
from patchveil.tenants.he_keys import TenantHEContext


class HEClientError(PatchveilError):
    """Images or answers that do not fit a homomorphic query."""


@dataclass(frozen=True)
class HEQuery:
    """Serialized input ciphertexts, ready to send, and how to read their answer."""

    packing: str
    ciphertexts: list[bytes]
    images: int


class HEQueryClient:
    """Encrypts images for one model's input layout and decrypts its answers."""

    def __init__(self, he_context: TenantHEContext, layout: InputLayout) -> None:
        self.he_context = he_context
        self.layout = layout

    def __repr__(self) -> str:
        return f"HEQueryClient({self.he_context!r}, image_shape={self.layout.image_shape})"

    def encrypt(self, images: np.ndarray, packing: str) -> HEQuery:
        images = self.layout.check_images(images)
        context = self.he_context.context
        if packing == "throughput":
            slots = self.he_context.parameters.slots
            if not 1 <= len(images) <= slots:
                raise HEClientError(
                    f"the throughput packing carries 1 to {slots} images per query (one per "
                    f"slot), not {len(images)}; split the batch"
                )
            pixels = images.reshape(len(images), -1).T  # one row per pixel, one column per image
            # The last row, 1s, carries the model's biases (see BiasFreeWeights).
            rows = np.concatenate([pixels, np.ones((1, len(images)))])
            ciphertexts = [ts.ckks_vector(context, row.tolist()).serialize() for row in rows]
        elif packing == "latency":
            ciphertexts = [
                ts.enc_matmul_encoding(context, windows.tolist()).serialize()
                for windows in im2col_with_one(self.layout, images)
            ]
        else:
            raise HEClientError(f"packing {packing!r} is not one of {', '.join(PACKINGS)}")
        return HEQuery(packing, ciphertexts, len(images))

    def decrypt_logits(self, query: HEQuery, outputs: list[bytes], classes: int) -> np.ndarray:
        """`[images, classes]` logits from the platform's output ciphertexts."""
        vectors = [self._vector(data) for data in outputs]
        if query.packing == "throughput":
            if len(vectors) != classes:
                raise HEClientError(f"expected {classes} output ciphertexts, got {len(vectors)}")
            return np.array([vector.decrypt()[: query.images] for vector in vectors]).T
        if len(vectors) != query.images:
            raise HEClientError(f"expected {query.images} output ciphertexts, got {len(vectors)}")
        return np.array([vector.decrypt()[:classes] for vector in vectors])

    def decrypt_labels(self, query: HEQuery, outputs: list[bytes], classes: int) -> np.ndarray:
        return self.decrypt_logits(query, outputs, classes).argmax(axis=1)

    def classify(
        self,
        images: np.ndarray,
        packing: str,
        classes: int,
        send: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> np.ndarray:
        """Labels for any number of images: split into queries that fit the packing, each sent
        as the JSON body of `/v2/models/{name}-he/infer` through `send` (the transport: HTTP in
        `patchveil query --he`, a direct call in tests), answers decrypted here."""
        images = self.layout.check_images(images)
        per_query = (
            self.he_context.parameters.slots if packing == "throughput" else MAX_LATENCY_IMAGES
        )
        labels = []
        for start in range(0, len(images), per_query):
            query = self.encrypt(images[start : start + per_query], packing)
            response = HEResponse.from_json(
                send(HERequest(query.packing, query.ciphertexts).to_json())
            )
            labels.append(self.decrypt_labels(query, response.outputs, classes))
        return np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)

    def _vector(self, data: bytes) -> ts.CKKSVector:
        try:
            return ts.ckks_vector_from(self.he_context.context, data)
        except (ValueError, RuntimeError, TypeError):
            raise HEClientError(
                "an answer is not a CKKS ciphertext of this tenant's context"
            ) from None
