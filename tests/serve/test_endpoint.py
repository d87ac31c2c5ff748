"""The query endpoint over real HTTP: the protocol, auth, limits, bad input, a model swap under
load, and no key material in anything it answers or writes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tenseal as ts
import torch

from patchveil.models.checkpoint import load_trained_model
from patchveil.models.inference import predict
from patchveil.models.square_nets import InputLayout, plain_predict
from patchveil.registry.registry import Registry
from patchveil.serve.he_inference import HERequest, HEResponse
from patchveil.serve.runtime import deploy_version
from patchveil.serve.settings import APP_NAME
from patchveil.tenants.client import Tenant
from patchveil.tenants.he_client import HEQueryClient, tenant_he_context
from patchveil.tenants.keystore import KeyStore
from patchveil.tenants.query_client import QueryClient, QueryError, query_images
from tests.helpers import assert_no_key_material
from tests.serve.conftest import IMAGE_SIZE, MODEL_NAME, RunningEndpoint
from tests.serve.he_fixtures import HE_MODEL
from tests.serve.test_he_inference import secret_key_fragment, tiny_net

pytestmark = [pytest.mark.serve, pytest.mark.slow]
SERVE_HE = True  # the endpoint fixture adds tests/serve/he_fixtures.py's tiny model at tiny-he


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(
        0, 256, (count, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8
    )


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def infer_body(ciphertexts: np.ndarray) -> dict[str, Any]:
    """An Open Inference Protocol JSON request of these ciphertexts."""
    return {
        "inputs": [
            {
                "name": "images",
                "shape": list(ciphertexts.shape),
                "datatype": "UINT8",
                "data": ciphertexts.ravel().tolist(),
            }
        ]
    }


def test_health_and_metadata(endpoint: RunningEndpoint) -> None:
    assert httpx.get(f"{endpoint.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{endpoint.url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{endpoint.url}/v2").json()["models"] == [MODEL_NAME]
    metadata = httpx.get(f"{endpoint.url}/v2/models/{MODEL_NAME}").json()
    assert metadata["inputs"][0]["shape"] == [-1, IMAGE_SIZE, IMAGE_SIZE, 3]
    missing = httpx.get(f"{endpoint.url}/v2/models/other")
    assert missing.status_code == 404 and "error" in missing.json()


def test_the_model_is_a_deployment_of_its_own(endpoint: RunningEndpoint) -> None:
    """The default: the gateway asks a model deployment through a Serve handle
    (tests/serve/test_endpoint_direct.py runs these tests with the model in the gateway)."""
    from ray import serve

    deployments = serve.status().applications[APP_NAME].deployments
    assert {"gateway", "model"} <= set(deployments)
    recorded = json.loads((endpoint.config.home / "serve" / "endpoint.json").read_text())
    assert recorded["url"] == endpoint.url


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


def test_an_answer_says_where_its_time_went(endpoint: RunningEndpoint) -> None:
    """`Server-Timing` names the gateway's stages (the client sees the rest as network and
    proxy); durations only, nothing about the tenant's risk."""
    ciphertexts = Tenant("acme", endpoint.key_store).encrypt_query(_images(2)).images
    body = infer_body(ciphertexts)
    response = httpx.post(
        f"{endpoint.url}/v2/models/{MODEL_NAME}/infer",
        headers=_headers(endpoint.tokens["acme"]),
        json=body,
        timeout=60,
    )
    assert response.status_code == 200
    stages = dict(
        part.strip().split(";dur=") for part in response.headers["server-timing"].split(",")
    )
    assert list(stages) == ["auth", "read", "parse", "model", "guard", "respond", "total"]
    durations = {name: float(value) for name, value in stages.items()}
    assert all(value >= 0 for value in durations.values())
    assert durations["total"] >= durations["model"]


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
    body = infer_body(encrypted.images)
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


# -- homomorphic queries (CKKS) on the same endpoint: /v2/models/tiny-he/... ---------------------


def _he_url(endpoint: RunningEndpoint, route: str = "") -> str:
    return f"{endpoint.url}/v2/models/{HE_MODEL}-he{route}"


def test_he_route_answers_ciphertexts_only_the_tenant_decrypts(
    endpoint: RunningEndpoint, ray_session: Any
) -> None:
    store = KeyStore(endpoint.key_store)
    he = tenant_he_context(store, "acme")  # made and sealed in acme's key store on first use
    metadata = httpx.get(_he_url(endpoint)).json()
    assert metadata["image_shape"] == [4, 4, 1] and "throughput" in metadata["packings"]
    assert httpx.get(f"{endpoint.url}/v2").json()["he_models"] == [f"{HE_MODEL}-he"]
    acme = _headers(endpoint.tokens["acme"])
    uploaded = httpx.put(
        _he_url(endpoint, "/context"), headers=acme, content=he.public_context(galois_keys=False)
    )
    assert uploaded.status_code == 200 and uploaded.json()["galois_keys"] is False
    held = httpx.get(_he_url(endpoint, "/context"), headers=acme).json()
    assert held["context_digest"] == uploaded.json()["context_digest"]

    batch = np.random.default_rng(1).random((5, 4, 4, 1))
    client = HEQueryClient(he, InputLayout((4, 4, 1), 2, 2))
    query = client.encrypt(batch, "throughput")
    response = httpx.post(
        _he_url(endpoint, "/infer"),
        headers=acme,
        json=HERequest("throughput", query.ciphertexts).to_json(),
        timeout=120,
    )
    assert response.status_code == 200, response.text[:300]
    outputs = HEResponse.from_json(response.json()).outputs
    labels = client.decrypt_labels(query, outputs, metadata["classes"])
    assert np.array_equal(labels, plain_predict(tiny_net(), batch))
    # What the platform holds (the uploaded public context) cannot decrypt the answer.
    stored = endpoint.config.home / "serve" / "he-contexts" / "acme.ctx"
    platform_context = ts.context_from(stored.read_bytes())
    with pytest.raises(ValueError, match="secret"):
        ts.ckks_vector_from(platform_context, outputs[0]).decrypt()
    # No secret-key bytes in the answer, under the platform home (the tenant's key store there
    # holds the key sealed), or in Serve's logs.
    fragment = secret_key_fragment(he.context)
    logs = Path(ray_session._private.worker._global_node.get_session_dir_path()) / "logs" / "serve"
    assert_no_key_material(fragment, [response.content, uploaded.content, endpoint.config.home])
    assert_no_key_material(fragment, [logs] if logs.is_dir() else [])


def test_he_refusals_are_json_4xx(endpoint: RunningEndpoint) -> None:
    he = tenant_he_context(KeyStore(endpoint.key_store), "initech")
    initech = _headers(endpoint.tokens["initech"])
    infer = _he_url(endpoint, "/infer")
    good = HERequest(
        "throughput",
        HEQueryClient(he, InputLayout((4, 4, 1), 2, 2))
        .encrypt(np.zeros((1, 4, 4, 1)), "throughput")
        .ciphertexts,
    ).to_json()
    cases = [
        ("post", infer, {}, {"json": good}, 401),
        ("post", infer, initech, {"json": good}, 409),  # no context uploaded by initech
        ("get", _he_url(endpoint, "/context"), initech, {}, 409),
        ("put", f"{endpoint.url}/v2/models/nope-he/context", initech, {"content": b"x"}, 404),
        (
            "put",
            _he_url(endpoint, "/context"),
            initech,
            {"content": he.context.serialize(save_secret_key=True, save_galois_keys=False)},
            400,
        ),
        ("put", _he_url(endpoint, "/context"), initech, {"content": b"x" * (9 << 20)}, 413),
        ("post", infer, initech, {"content": b"x" * (13 << 20)}, 413),
    ]
    for method, url, headers, body, status in cases:
        response = httpx.request(method, url, headers=headers, timeout=60, **body)
        assert response.status_code == status, (url, status, response.text[:200])
        assert response.json()["error"]
    # The secret-key context was refused before anything was written.
    assert not (endpoint.config.home / "serve" / "he-contexts" / "initech.ctx").exists()
    public = he.public_context(galois_keys=False)
    assert httpx.put(_he_url(endpoint, "/context"), headers=initech, content=public).is_success
    for document in (
        b"not json",
        json.dumps({"packing": "throughput", "inputs": ["%%%"]}).encode(),
        json.dumps({"packing": "simd", "inputs": good["inputs"]}).encode(),
        json.dumps({"packing": "latency", "inputs": good["inputs"][:1]}).encode(),  # no Galois
        json.dumps({"packing": "throughput", "inputs": good["inputs"][:-1]}).encode(),
    ):
        response = httpx.post(infer, headers=initech, content=document, timeout=60)
        assert response.status_code == 400, (document[:60], response.text[:200])
        assert response.json()["error"]


def test_patchveil_query_he_uploads_the_context_once(
    endpoint: RunningEndpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from patchveil.cli import main

    batch = np.random.default_rng(2).random((3, 4, 4, 1))
    np.save(tmp_path / "digits.npy", batch)
    monkeypatch.setenv("PATCHVEIL_API_TOKEN", endpoint.tokens["globex"])
    argv = [
        "query", "--he", "--store", str(endpoint.key_store), "--tenant", "globex",
        "--images", str(tmp_path / "digits.npy"), "--endpoint", endpoint.url,
    ]  # fmt: skip
    assert main([*argv, "--json"]) == 0
    answered = json.loads(capsys.readouterr().out)
    assert answered["labels"] == plain_predict(tiny_net(), batch).tolist()
    assert main(argv) == 0
    assert "public context already held by the endpoint" in capsys.readouterr().out
    np.save(tmp_path / "wrong.npy", np.zeros((2, 5, 5)))
    argv[argv.index(str(tmp_path / "digits.npy"))] = str(tmp_path / "wrong.npy")
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "[N, 4, 4, 1]" in error
