"""The query endpoint over real HTTP: the protocol, auth, limits, bad input, a model swap under
load, and no key material in anything it answers or writes."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from patchveil.models.checkpoint import load_trained_model
from patchveil.models.inference import predict
from patchveil.registry.registry import Registry
from patchveil.serve.runtime import deploy_version
from patchveil.tenants.client import Tenant
from patchveil.tenants.keystore import KeyStore
from patchveil.tenants.query_client import QueryClient, QueryError, query_images
from tests.helpers import assert_no_key_material
from tests.serve.conftest import IMAGE_SIZE, MODEL_NAME, RunningEndpoint

pytestmark = [pytest.mark.serve, pytest.mark.slow]


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(
        0, 256, (count, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8
    )


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_health_and_metadata(endpoint: RunningEndpoint) -> None:
    assert httpx.get(f"{endpoint.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{endpoint.url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{endpoint.url}/v2").json()["models"] == [MODEL_NAME]
    metadata = httpx.get(f"{endpoint.url}/v2/models/{MODEL_NAME}").json()
    assert metadata["inputs"][0]["shape"] == [-1, IMAGE_SIZE, IMAGE_SIZE, 3]
    missing = httpx.get(f"{endpoint.url}/v2/models/other")
    assert missing.status_code == 404 and "error" in missing.json()


def test_a_tenant_queries_ciphertext_and_gets_the_models_answers(endpoint: RunningEndpoint) -> None:
    tenant = Tenant("acme", endpoint.key_store)
    images = _images(24)
    encrypted = tenant.encrypt_query(images)
    with QueryClient(endpoint.url, endpoint.tokens["acme"]) as client:
        binary = client.infer(MODEL_NAME, encrypted.images)
        as_json = client.infer(MODEL_NAME, encrypted.images, binary=False)
        answered = query_images(tenant, client, images)
    assert binary.labels is not None and len(binary.labels) == 24
    assert np.array_equal(binary.labels, as_json.labels)  # the same bytes, the same answer
    assert answered.labels is not None and len(answered.labels) == 24
    model, _ = load_trained_model(
        Registry(endpoint.config.registry_url)
        .list_model_versions(MODEL_NAME)[binary.model_version - 1]
        .checkpoint_uri
    )
    direct = predict(model, encrypted.images, torch.device("cpu")).argmax(1).numpy()
    # At this volume the defence errs almost never; a watermark may touch an answer or two.
    assert np.mean(direct == binary.labels) >= 0.8


def test_requests_without_a_valid_token_are_refused(endpoint: RunningEndpoint) -> None:
    url = f"{endpoint.url}/v2/models/{MODEL_NAME}/infer"
    for headers in ({}, _headers("wrong"), {"Authorization": "Basic x"}):
        response = httpx.post(url, headers=headers, content=b"{}")
        assert response.status_code == 401 and "error" in response.json()
    with pytest.raises(QueryError, match="401"):
        QueryClient(endpoint.url, "not-a-token").infer(MODEL_NAME, _images(1))


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"garbage", 400),
        (
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "images",
                            "datatype": "UINT8",
                            "shape": [1, 8, 8, 3],
                            "data": [0] * 192,
                        }
                    ]
                }
            ).encode(),
            422,
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "images",
                            "datatype": "UINT8",
                            "shape": [65, IMAGE_SIZE, IMAGE_SIZE, 3],
                            "data": [],
                        }
                    ]
                }
            ).encode(),
            413,
        ),
        (b"x" * (2 << 20), 413),
    ],
)
def test_bad_input_gets_a_json_4xx(endpoint: RunningEndpoint, body: bytes, status: int) -> None:
    response = httpx.post(
        f"{endpoint.url}/v2/models/{MODEL_NAME}/infer",
        headers=_headers(endpoint.tokens["acme"]),
        content=body,
    )
    assert response.status_code == status
    assert response.json()["error"]


def test_rate_limit_answers_429_with_retry_after(endpoint: RunningEndpoint) -> None:
    ciphertexts = Tenant("burst", endpoint.key_store).encrypt_query(_images(64)).images
    statuses = []
    with QueryClient(endpoint.url, endpoint.tokens["burst"]) as client:
        for _ in range(12):  # 768 images against a burst of 300 refilled at 100/s
            try:
                client.infer(MODEL_NAME, ciphertexts)
                statuses.append(200)
            except QueryError as error:
                assert "429" in str(error) and "rate limit" in str(error)
                statuses.append(429)
    assert 429 in statuses and statuses[0] == 200


def test_operator_routes_need_the_operator_token(endpoint: RunningEndpoint) -> None:
    risk = f"{endpoint.url}/admin/risk"
    assert httpx.get(risk).status_code == 401
    assert httpx.get(risk, headers=_headers(endpoint.tokens["acme"])).status_code == 403
    assert httpx.get(risk, headers=_headers("wrong")).status_code == 401
    answer = httpx.get(risk, headers=_headers(endpoint.operator_token))
    assert answer.status_code == 200 and "tenants" in answer.json()
    alerts = httpx.get(f"{endpoint.url}/admin/alerts", headers=_headers(endpoint.operator_token))
    assert alerts.status_code == 200
    # A tenant reads only its own usage.
    usage = httpx.get(
        f"{endpoint.url}/v2/tenant/usage", headers=_headers(endpoint.tokens["globex"])
    )
    assert usage.json()["tenant_id"] == "globex"


def test_a_model_swap_drops_no_request(endpoint: RunningEndpoint) -> None:
    ciphertexts = Tenant("initech", endpoint.key_store).encrypt_query(_images(4)).images
    versions, failures = set(), []
    stop = threading.Event()

    def query_until_stopped() -> None:
        with QueryClient(endpoint.url, endpoint.tokens["initech"]) as client:
            while not stop.is_set():
                try:
                    versions.add(client.infer(MODEL_NAME, ciphertexts).model_version)
                except QueryError as error:
                    failures.append(str(error))
                stop.wait(0.05)  # stay well inside the rate limit

    worker = threading.Thread(target=query_until_stopped)
    worker.start()
    try:
        deploy_version(endpoint.config, 2)
        with QueryClient(endpoint.url, endpoint.tokens["initech"]) as client:
            for _ in range(50):
                if client.infer(MODEL_NAME, ciphertexts).model_version == 2:
                    break
    finally:
        stop.set()
        worker.join(30)
    assert not failures, failures[:3]
    assert 2 in versions


def test_no_key_material_in_responses_or_the_query_log(endpoint: RunningEndpoint) -> None:
    tenant = Tenant("globex", endpoint.key_store)
    encrypted = tenant.encrypt_query(_images(8, seed=3))
    body = {
        "inputs": [
            {
                "name": "images",
                "datatype": "UINT8",
                "shape": list(encrypted.images.shape),
                "data": encrypted.images.reshape(-1).tolist(),
            }
        ]
    }
    response = httpx.post(
        f"{endpoint.url}/v2/models/{MODEL_NAME}/infer",
        headers=_headers(endpoint.tokens["globex"]),
        json=body,
    )
    assert response.status_code == 200
    keys = [
        KeyStore(endpoint.key_store).load(name) for name in ("acme", "globex", "initech", "burst")
    ]
    serve_folder = endpoint.config.home / "serve"
    assert (serve_folder / "query-log.jsonl").is_file()
    assert_no_key_material(keys, [response.content, serve_folder])
    log = (serve_folder / "query-log.jsonl").read_text()
    assert endpoint.tokens["globex"] not in log
    assert endpoint.operator_token not in log


def test_result_privacy_returns_sets_the_tenant_resolves_and_logs_no_label(
    endpoint: RunningEndpoint,
) -> None:
    encrypted = Tenant("acme", endpoint.key_store).encrypt_query(_images(6, seed=5))
    with QueryClient(endpoint.url, endpoint.tokens["acme"]) as client:
        plain = client.infer(MODEL_NAME, encrypted.images)
        private = client.infer(MODEL_NAME, encrypted.images, candidates=3)
    assert private.candidates is not None and private.candidates.shape == (6, 3)
    assert np.array_equal(private.labels, plain.labels)
    for row, label in zip(private.candidates, plain.labels, strict=True):
        assert label in row
    records = [
        json.loads(line)
        for line in (endpoint.config.home / "serve" / "query-log.jsonl").read_text().splitlines()
    ]
    assert [record["label"] for record in records[-6:]] == [-1] * 6


def test_metrics_are_exported_per_tenant(endpoint: RunningEndpoint, ray_session: Any) -> None:
    """`ray.serve.metrics` reach Ray's Prometheus endpoint with a `ray_` prefix (after 5–10 s)."""
    port = ray_session._private.worker.global_worker.node.metrics_export_port
    encrypted = Tenant("acme", endpoint.key_store).encrypt_query(_images(2, seed=9))
    with QueryClient(endpoint.url, endpoint.tokens["acme"]) as client:
        client.infer(MODEL_NAME, encrypted.images)
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.HTTPError:
            text = ""
        if "ray_patchveil_images_queried" in text and 'tenant="acme"' in text:
            break
        time.sleep(1)
    assert "ray_patchveil_images_queried" in text
    assert "ray_patchveil_infer_latency_ms" in text
    assert endpoint.tokens["acme"] not in text
