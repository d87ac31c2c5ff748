"""The tenant's homomorphic query client: what it encrypts, and labels back from the platform."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tenseal as ts

from patchveil.models.square_nets import InputLayout, SquareNet, im2col_with_one, plain_predict
from patchveil.serve.he_inference import HEEvaluator, HERequest, context_digest
from patchveil.tenants.he_client import (
    HEClientError,
    HEQueryClient,
    ensure_public_context,
    tenant_he_context,
)
from patchveil.tenants.he_keys import CKKSParameters, TenantHEContext, make_context
from patchveil.tenants.keystore import KeyStore
from tests.serve.test_he_inference import secret_key_fragment

LAYOUT = InputLayout((4, 4, 1), kernel_size=2, stride=2)


@pytest.fixture(scope="module")
def tenant() -> TenantHEContext:
    return TenantHEContext("acme", "test", CKKSParameters(), make_context(CKKSParameters()))


def net() -> SquareNet:
    rng = np.random.default_rng(3)
    return SquareNet(
        name="tiny",
        layout=LAYOUT,
        pool="none",
        window_weight=rng.normal(size=(2, 4)),
        window_bias=rng.normal(size=2) * 0.1,
        hidden_weight=rng.normal(size=(3, 8)) * 0.5,
        hidden_bias=rng.normal(size=3) * 0.1,
        output_weight=rng.normal(size=(4, 3)) * 0.5,
        output_bias=rng.normal(size=4) * 0.1,
    )


def images(count: int) -> np.ndarray:
    return np.random.default_rng(count).random((count, 4, 4, 1))


def test_throughput_query_one_ciphertext_per_pixel_one_image_per_slot(
    tenant: TenantHEContext,
) -> None:
    batch = images(5)
    query = HEQueryClient(tenant, LAYOUT).encrypt(batch, "throughput")
    assert query.images == 5 and len(query.ciphertexts) == LAYOUT.pixels + 1
    first_pixel = ts.ckks_vector_from(tenant.context, query.ciphertexts[0]).decrypt()
    assert first_pixel == pytest.approx(batch[:, 0, 0, 0], abs=1e-3)
    ones = ts.ckks_vector_from(tenant.context, query.ciphertexts[-1]).decrypt()
    assert ones == pytest.approx([1.0] * 5, abs=1e-3)


def test_latency_query_one_ciphertext_per_image_in_im2col_order(tenant: TenantHEContext) -> None:
    batch = images(2)
    query = HEQueryClient(tenant, LAYOUT).encrypt(batch, "latency")
    assert len(query.ciphertexts) == 2
    expected = ts.enc_matmul_encoding(tenant.context, im2col_with_one(LAYOUT, batch)[1].tolist())
    got = ts.ckks_vector_from(tenant.context, query.ciphertexts[1]).decrypt()
    assert got == pytest.approx(expected.decrypt(), abs=1e-3)


def test_labels_from_the_platform_match_the_plain_model(tenant: TenantHEContext) -> None:
    model, batch = net(), images(12)
    client = HEQueryClient(tenant, LAYOUT)
    query = client.encrypt(batch, "throughput")
    outputs = HEEvaluator(model).evaluate(
        tenant.public_context(galois_keys=False), query.ciphertexts, "throughput"
    )
    labels = client.decrypt_labels(query, outputs, model.classes)
    np.testing.assert_array_equal(labels, plain_predict(model, batch))


def test_classify_splits_a_batch_into_queries_and_sends_only_json(
    tenant: TenantHEContext,
) -> None:
    model, batch = net(), images(3)
    public = tenant.public_context(galois_keys=False)
    evaluator, bodies = HEEvaluator(model), []

    def send(body: dict[str, Any]) -> dict[str, Any]:
        bodies.append(json.dumps(body))  # what would cross: JSON text, nothing else
        return evaluator.answer(public, HERequest.from_json(json.loads(bodies[-1]))).to_json()

    client = HEQueryClient(tenant, LAYOUT)
    labels = client.classify(batch, "throughput", model.classes, send)
    np.testing.assert_array_equal(labels, plain_predict(model, batch))
    assert len(bodies) == 1


def test_queries_that_do_not_fit_are_refused(tenant: TenantHEContext) -> None:
    client = HEQueryClient(tenant, LAYOUT)
    with pytest.raises(HEClientError, match="1 to 4096 images per query"):
        client.encrypt(np.zeros((4097, 4, 4, 1)), "throughput")
    with pytest.raises(HEClientError, match="packing 'simd'"):
        client.encrypt(images(1), "simd")
    with pytest.raises(Exception, match=r"takes \[N, 4, 4, 1\]"):
        client.encrypt(np.zeros((1, 8, 8, 1)), "latency")
    query = client.encrypt(images(2), "latency")
    with pytest.raises(HEClientError, match="expected 2 output ciphertexts, got 1"):
        client.decrypt_labels(query, query.ciphertexts[:1], 4)
    with pytest.raises(HEClientError, match="not a CKKS ciphertext"):
        client.decrypt_labels(query, [b"junk", b"junk"], 4)


class _FakeEndpoint:
    """The three calls `ensure_public_context` makes, recorded; the platform side keeps only
    the digest of what it was sent."""

    endpoint = "http://platform.test"

    def __init__(self) -> None:
        self.held: dict[str, Any] | None = None
        self.uploads: list[bytes] = []

    def he_context(self, model: str) -> dict[str, Any] | None:
        return self.held

    def put_he_context(self, model: str, public_context: bytes) -> dict[str, Any]:
        context = ts.context_from(public_context)
        assert not context.is_private()
        self.uploads.append(public_context)
        self.held = {
            "context_digest": context_digest(public_context),
            "galois_keys": context.has_galois_keys(),
        }
        return self.held


def test_the_context_is_made_on_first_use_and_uploaded_once(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys", passphrase="test passphrase")
    he = tenant_he_context(store, "acme")
    assert tenant_he_context(store, "acme").context_id == he.context_id  # reopened, not remade
    endpoint = _FakeEndpoint()
    assert ensure_public_context(store, he, endpoint, "digits", galois_keys=False)
    assert not ensure_public_context(store, he, endpoint, "digits", galois_keys=False)
    assert len(endpoint.uploads) == 1
    # The endpoint lost it (a new home), or holds another context: uploaded again.
    endpoint.held = None
    assert ensure_public_context(store, he, endpoint, "digits", galois_keys=False)
    endpoint.held = {"context_digest": "0" * 64, "galois_keys": False}
    assert ensure_public_context(store, he, endpoint, "digits", galois_keys=False)
    # What the tenant remembers is digests and ids only: the secret key stays sealed.
    record = (store.root / "acme" / "he-uploads.json").read_text()
    assert json.loads(record)[endpoint.endpoint]["galois_keys"] is False
    fragment = secret_key_fragment(he.context)
    for upload in endpoint.uploads:
        assert fragment not in upload
    assert fragment not in record.encode()
