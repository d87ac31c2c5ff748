"""The tenant's side of a homomorphic query: images to CKKS ciphertexts, result ciphertexts to labels.

What the platform evaluates on is described in `patchveil.serve.he_inference` (the packings);
this module makes those ciphertexts with the tenant's secret-key context and reads the answers.
Images are float arrays `[N, H, W, C]` scaled to [0, 1], as the model was trained on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tenseal as ts

from patchveil.errors import PatchveilError
from patchveil.fsutil import write_bytes_atomic
from patchveil.models.square_nets import InputLayout, im2col_with_one
from patchveil.serve.he_inference import MAX_LATENCY_IMAGES, PACKINGS, HERequest, HEResponse
from patchveil.tenants.client import Tenant
from patchveil.tenants.he_keys import (
    HEContextError,
    TenantHEContext,
    context_path,
    create_he_context,
    open_he_context,
)
from patchveil.tenants.keys import CipherSpec
from patchveil.tenants.keystore import KeyStore
from patchveil.tenants.query_client import QueryClient

# Beside the sealed context: which public context each endpoint holds (digests, no key).
UPLOADS_FILE = "he-uploads.json"


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


# --- over HTTP: the tenant's whole homomorphic query -------------------------------------------
@dataclass(frozen=True)
class HEAnswer:
    labels: np.ndarray
    model_name: str
    packing: str
    uploaded_context: bool  # False when the endpoint already held this tenant's public context


def tenant_he_context(store: KeyStore, tenant_id: str) -> TenantHEContext:
    """The tenant's CKKS context from its key store, made (and sealed there) on first use."""
    try:
        return open_he_context(store, tenant_id)
    except HEContextError:
        if context_path(store, tenant_id).exists():
            raise  # there is one, but it does not open: never replace it
        return create_he_context(store, tenant_id)


def ensure_public_context(
    store: KeyStore,
    he: TenantHEContext,
    client: QueryClient,
    model: str,
    galois_keys: bool,
) -> bool:
    """Upload the tenant's public context unless the endpoint already holds the one recorded
    here (same context id and digest, with Galois keys if needed). Returns whether it uploaded."""
    record_path = context_path(store, he.tenant_id).parent / UPLOADS_FILE
    records = _read_uploads(record_path)
    recorded = records.get(client.endpoint)
    held = client.he_context(model)
    if (
        held is not None
        and recorded is not None
        and recorded.get("context_id") == he.context_id
        and recorded.get("context_digest") == held.get("context_digest")
        and (held.get("galois_keys") or not galois_keys)
    ):
        return False
    answer = client.put_he_context(model, he.public_context(galois_keys=galois_keys))
    records[client.endpoint] = {
        "context_id": he.context_id,
        "context_digest": answer["context_digest"],
        "galois_keys": bool(answer["galois_keys"]),
    }
    write_bytes_atomic(record_path, json.dumps(records, indent=2).encode() + b"\n", mode=0o600)
    return True


def query_he_model(
    store: KeyStore,
    tenant_id: str,
    client: QueryClient,
    model: str,
    images: np.ndarray,
    packing: str | None = None,
) -> HEAnswer:
    """Labels for `images` from the endpoint's homomorphic model `model` (without "-he").

    Images are float `[N, H, W, C]` in [0, 1], or uint8 (divided by 255 here). A model trained
    on perceptual ciphertext (its metadata names a `query_cipher`) takes uint8 images, which are
    encrypted first with the tenant's newest cipher key (`Tenant.encrypt_query`: fresh per-image
    transforms). The packing defaults to throughput where the endpoint offers it (no Galois keys
    to upload), else latency.
    """
    metadata = client.he_metadata(model)
    layout = InputLayout(
        tuple(metadata["image_shape"]), int(metadata["kernel_size"]), int(metadata["stride"])
    )
    offered = list(metadata["packings"])
    packing = packing or ("throughput" if "throughput" in offered else "latency")
    if packing not in offered:
        raise HEClientError(
            f"{metadata['name']} offers the {' and '.join(offered)} packing here, not {packing!r}"
        )
    array = np.asarray(images)
    if metadata.get("query_cipher"):
        if array.dtype != np.uint8:
            raise HEClientError(
                f"{metadata['name']} was trained on {metadata['query_cipher']['cipher']} "
                "ciphertext: give uint8 images, which are encrypted with your key before CKKS"
            )
        array = _perceptual_encrypt(store, tenant_id, metadata["query_cipher"], array)
    if array.dtype == np.uint8:
        array = array / 255.0
    pixels = layout.check_images(array)
    if pixels.size and not (pixels.min() >= 0.0 and pixels.max() <= 1.0):
        raise HEClientError("float images must be scaled to [0, 1]")
    he = tenant_he_context(store, tenant_id)
    uploaded = ensure_public_context(store, he, client, model, galois_keys=packing == "latency")
    labels = HEQueryClient(he, layout).classify(
        pixels, packing, int(metadata["classes"]), lambda body: client.he_infer(model, body)
    )
    return HEAnswer(labels, metadata["name"], packing, uploaded)


def _perceptual_encrypt(
    store: KeyStore, tenant_id: str, wanted: dict[str, Any], images: np.ndarray
) -> np.ndarray:
    """The tenant's newest cipher key, if it is the kind the model was trained on."""
    versions = store.describe(tenant_id)
    spec = CipherSpec.from_json(versions[-1]["cipher"]) if versions else None
    if spec is None or (spec.name, spec.block_size, spec.image_size) != (
        wanted["cipher"],
        wanted["block_size"],
        wanted["image_size"],
    ):
        have = (
            "no cipher key"
            if spec is None
            else f"a {spec.name} key (block size {spec.block_size}, image size {spec.image_size})"
        )
        raise HEClientError(
            f"the model takes {wanted['cipher']} ciphertext (block size {wanted['block_size']}, "
            f"image size {wanted['image_size']}); tenant {tenant_id!r} has {have}"
        )
    return Tenant(tenant_id, store).encrypt_query(images).images


def _read_uploads(path: Path) -> dict[str, Any]:
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}
