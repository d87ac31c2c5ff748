"""The tenant's homomorphic query client: what it encrypts, and labels back from the platform."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import tenseal as ts

from patchveil.models.square_nets import InputLayout, SquareNet, im2col_with_one, plain_predict
from patchveil.serve.he_inference import HEEvaluator, HERequest
from patchveil.tenants.he_client import HEClientError, HEQueryClient
from patchveil.tenants.he_keys import CKKSParameters, TenantHEContext, make_context

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
