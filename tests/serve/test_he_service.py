"""The endpoint's HE service without Serve: uploads, isolation, refusals as (status, JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tenseal as ts

from patchveil.models.he_models import HEModelCard, QueryCipher, save_he_model
from patchveil.models.square_nets import InputLayout, SquareNet, plain_logits, plain_predict
from patchveil.serve.he_inference import HERequest, HEResponse
from patchveil.serve.he_service import HEService, answer, resolve_he_models
from patchveil.tenants.he_client import HEClientError, HEQueryClient, query_he_model
from patchveil.tenants.he_keys import CKKSParameters, TenantHEContext, make_context
from patchveil.tenants.keys import CipherSpec
from patchveil.tenants.keystore import KeyStore
from patchveil.tenants.query_client import QueryError
from tests.serve.he_fixtures import HE_MODEL, save_tiny_he_model
from tests.serve.test_he_inference import assert_logits_match, images, secret_key_fragment


@pytest.fixture(scope="module")
def tenant() -> TenantHEContext:
    return TenantHEContext("acme", "test", CKKSParameters(), make_context(CKKSParameters()))


@pytest.fixture(scope="module")
def public_context(tenant: TenantHEContext) -> bytes:
    return tenant.public_context(galois_keys=False)


@pytest.fixture
def service(tmp_path: Path) -> HEService:
    save_tiny_he_model(tmp_path)
    return HEService(tmp_path, resolve_he_models(tmp_path, None), max_body_bytes=64 << 20)


def body(tenant: TenantHEContext, service: HEService, count: int, packing: str) -> bytes:
    query = HEQueryClient(tenant, service.models[HE_MODEL].net.layout).encrypt(
        images(count), packing
    )
    return json.dumps(HERequest(packing, query.ciphertexts).to_json()).encode()


def test_a_tenant_uploads_once_and_gets_ciphertexts_only_it_decrypts(
    service: HEService, tenant: TenantHEContext, public_context: bytes
) -> None:
    status, info = answer(service.put_context, "acme", HE_MODEL, public_context)
    assert status == 200 and info["galois_keys"] is False
    assert answer(service.context_info, "acme", HE_MODEL)[1] == info
    status, reply = answer(service.infer, "acme", HE_MODEL, body(tenant, service, 3, "throughput"))
    assert status == 200, reply
    outputs = HEResponse.from_json(reply).outputs
    logits = np.array([ts.ckks_vector_from(tenant.context, out).decrypt()[:3] for out in outputs])
    assert_logits_match(logits.T, plain_logits(service.models[HE_MODEL].net, images(3)))
    # A fresh service (a restarted replica) finds the context on disk.
    again = HEService(service.folder.parent.parent, [HE_MODEL], max_body_bytes=64 << 20)
    assert (
        answer(again.context_info, "acme", HE_MODEL)[1]["context_digest"] == info["context_digest"]
    )


def test_refusals_are_4xx_with_a_message(
    service: HEService, tenant: TenantHEContext, public_context: bytes
) -> None:
    good = body(tenant, service, 2, "throughput")
    assert answer(service.infer, "acme", HE_MODEL, good)[0] == 409  # nothing uploaded yet
    assert answer(service.context_info, "acme", HE_MODEL)[0] == 409
    assert answer(service.put_context, "acme", "nope", public_context)[0] == 404
    answer(service.put_context, "acme", HE_MODEL, public_context)
    # Another tenant's token never reaches acme's context.
    status, refused = answer(service.infer, "globex", HE_MODEL, good)
    assert status == 409 and "globex" in refused["error"]
    cases = {
        b"not json": "not JSON",
        b'{"packing": "throughput", "inputs": ["%%%"]}': "base64",
        b'{"packing": "simd", "inputs": []}': "packing 'simd'",
        b'{"packing": "throughput", "inputs": []}': "one of constant 1s",
        json.dumps({"packing": "latency", "inputs": json.loads(good)["inputs"][:1]}).encode(): (
            "Galois keys"
        ),
        json.dumps(
            {"packing": "throughput", "inputs": ["AAAA"] * 17}
        ).encode(): "input 0 is not a serialized CKKS vector",
    }
    for bad, message in cases.items():
        status, refused = answer(service.infer, "acme", HE_MODEL, bad)
        assert status == 400 and message in refused["error"], (bad[:40], refused)


def test_a_context_that_could_decrypt_is_refused_and_never_written(
    service: HEService, tenant: TenantHEContext
) -> None:
    private = tenant.context.serialize(save_secret_key=True, save_galois_keys=False)
    status, refused = answer(service.put_context, "acme", HE_MODEL, private)
    assert status == 400 and "secret key" in refused["error"]
    assert not service.folder.exists() or not any(service.folder.iterdir())
    fragment = secret_key_fragment(tenant.context)
    assert fragment not in json.dumps(refused).encode()
    assert answer(service.put_context, "acme", HE_MODEL, b"junk")[0] == 400


class _InProcess:
    """The four `QueryClient` calls `query_he_model` makes, answered by an `HEService` here."""

    endpoint = "http://in-process.test"

    def __init__(self, service: HEService, tenant_id: str) -> None:
        self.service, self.tenant_id = service, tenant_id

    def _call(self, call: Any, *args: Any) -> dict[str, Any]:
        status, document = answer(call, *args)
        if status != 200:
            raise QueryError(f"{self.endpoint} answered {status}: {document['error']}")
        return document

    def he_metadata(self, model: str) -> dict[str, Any]:
        return self._call(self.service.describe, model)

    def he_context(self, model: str) -> dict[str, Any] | None:
        status, document = answer(self.service.context_info, self.tenant_id, model)
        return document if status == 200 else None

    def put_he_context(self, model: str, data: bytes) -> dict[str, Any]:
        return self._call(self.service.put_context, self.tenant_id, model, data)

    def he_infer(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(self.service.infer, self.tenant_id, model, json.dumps(body).encode())


def test_a_model_on_block_shuffled_ciphertext_answers_a_tenants_encrypted_image(
    tmp_path: Path,
) -> None:
    """Bag-of-patches end to end, latency packing: the tenant encrypts with its disposable key
    (blocks shuffled afresh), then CKKS; mean pooling makes the answer the plain image's."""
    rng = np.random.default_rng(5)
    layout = InputLayout((8, 8, 3), kernel_size=4, stride=4)
    net = SquareNet(
        "patches", layout, "mean",
        rng.normal(size=(2, 48)) * 0.2, rng.normal(size=2) * 0.1,
        rng.normal(size=(3, 2)), rng.normal(size=3) * 0.1,
        rng.normal(size=(3, 3)), rng.normal(size=3) * 0.1,
    )  # fmt: skip
    card = HEModelCard(
        name="patches", preset="bag-of-patches", dataset="tests", image_shape=(8, 8, 3),
        kernel_size=4, stride=4, pool="mean", classes=3, pixel_scale=255.0, plain_accuracy=0.0,
        test_images=0, train_seconds=0.0, trained_at="2026-01-01T00:00:00+00:00",
        query_cipher=QueryCipher("disposable", 4, 8),
    )  # fmt: skip
    save_he_model(tmp_path, card, net)
    service = HEService(tmp_path, ["patches"], max_body_bytes=16 << 20)
    assert service.describe("patches")["packings"] == ["latency"]  # 193 ciphertexts: too big
    store = KeyStore(tmp_path / "keys")
    images = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    endpoint = _InProcess(service, "acme")
    with pytest.raises(HEClientError, match="has no cipher key"):
        query_he_model(store, "acme", endpoint, "patches", images)
    store.create("acme", CipherSpec("disposable", 4, 8, (("group", "none"),)))
    answered = query_he_model(store, "acme", endpoint, "patches", images)
    assert answered.packing == "latency" and answered.uploaded_context
    np.testing.assert_array_equal(answered.labels, plain_predict(net, images / 255.0))
