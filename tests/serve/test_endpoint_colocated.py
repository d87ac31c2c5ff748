"""The query endpoint with the model in the gateway (`colocate_model=True`: no Serve handle, the
swap reconfigures the gateway): the default endpoint's protocol, auth, errors, Server-Timing,
limits and model swap (tests/serve/test_endpoint.py, where the model is a deployment of its own)
hold here too, and so does a 503 when it is overloaded."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from patchveil.config import PlatformConfig
from patchveil.registry.registry import Registry
from patchveil.serve.settings import APP_NAME
from patchveil.tenants.client import Tenant
from patchveil.tenants.keys import CipherSpec
from patchveil.tenants.keystore import KeyStore
from tests.serve.conftest import (
    BLOCK_SIZE,
    IMAGE_SIZE,
    MODEL_NAME,
    TENANTS,
    RunningEndpoint,
    free_port,
    register_model,
)

# The default endpoint's tests, run again against this module's endpoint.
from tests.serve.test_endpoint import (  # noqa: F401
    _images,
    test_a_model_swap_drops_no_request,
    test_a_tenant_queries_ciphertext_and_gets_the_models_answers,
    test_an_answer_says_where_its_time_went,
    test_bad_input_gets_a_json_4xx,
    test_health_and_metadata,
    test_operator_routes_need_the_operator_token,
    test_rate_limit_answers_429_with_retry_after,
    test_requests_without_a_valid_token_are_refused,
)

pytestmark = [pytest.mark.serve, pytest.mark.slow]
# Few requests at once, so that a burst overloads the endpoint.
MAX_ONGOING, MAX_QUEUED = 4, 4


def serving(
    tmp_path_factory: pytest.TempPathFactory, **overrides: Any
) -> Iterator[RunningEndpoint]:
    """tests/serve/conftest.py's endpoint (its tenants, two model versions, its limits), with
    `overrides` of its settings and without the homomorphic model."""
    from patchveil.serve.runtime import start_endpoint, stop_endpoint, wait_until_ready
    from patchveil.serve.settings import ServeSettings

    home = tmp_path_factory.mktemp("serve-home")
    config = PlatformConfig(home=home)
    store = KeyStore(home / "tenant-keys")
    tokens = {}
    with Registry(config.registry_url) as registry:
        for tenant in TENANTS:
            registry.upsert_tenant(
                tenant, cipher="disposable", block_size=BLOCK_SIZE, image_size=IMAGE_SIZE
            )
            tokens[tenant] = registry.issue_api_token(tenant)
            store.create(
                tenant, CipherSpec("disposable", BLOCK_SIZE, IMAGE_SIZE, (("group", "none"),))
            )
        register_model(registry, home / "checkpoints", 1)
        register_model(registry, home / "checkpoints", 2)
    settings = ServeSettings(
        port=free_port(),
        he_models=(),
        max_images_per_request=64,
        max_body_bytes=1 << 20,
        images_per_second=100.0,
        burst_images=300,
        model_cpus=0.5,
        token_refresh_s=0.5,
        max_ongoing_requests=MAX_ONGOING,
        max_queued_requests=MAX_QUEUED,
        **overrides,
    )
    started = start_endpoint(config, MODEL_NAME, version=1, settings=settings)
    try:
        wait_until_ready(started.url)
        assert started.operator_token
        yield RunningEndpoint(
            started.url, config, tokens, started.operator_token, home / "tenant-keys"
        )
    finally:
        stop_endpoint()


@pytest.fixture(scope="module")
def endpoint(
    tmp_path_factory: pytest.TempPathFactory, ray_session: Any
) -> Iterator[RunningEndpoint]:
    yield from serving(tmp_path_factory, colocate_model=True)


def test_the_gateway_holds_the_model(endpoint: RunningEndpoint) -> None:
    from ray import serve

    deployments = serve.status().applications[APP_NAME].deployments
    assert "gateway" in deployments and "model" not in deployments


def test_an_overloaded_endpoint_answers_503(endpoint: RunningEndpoint) -> None:
    """More requests at once than the gateway runs and queues (`max_ongoing_requests` +
    `max_queued_requests`): the rest are refused at once with 503, none fails otherwise."""
    ciphertexts = Tenant("globex", endpoint.key_store).encrypt_query(_images(1, seed=11)).images
    body = {
        "inputs": [
            {
                "name": "images",
                "shape": list(ciphertexts.shape),
                "datatype": "UINT8",
                "data": ciphertexts.ravel().tolist(),
            }
        ]
    }
    url = f"{endpoint.url}/v2/models/{MODEL_NAME}/infer"
    headers = {"Authorization": f"Bearer {endpoint.tokens['globex']}"}

    async def burst(requests: int) -> list[int]:
        limits = httpx.Limits(max_connections=requests)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            answers = await asyncio.gather(
                *(http.post(url, json=body, headers=headers) for _ in range(requests))
            )
        return [answer.status_code for answer in answers]

    statuses: list[int] = []
    for _ in range(3):  # a burst that happens to trickle in may not overload: try again
        statuses += asyncio.run(burst(8 * (MAX_ONGOING + MAX_QUEUED)))
        if 503 in statuses:
            break
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert 503 in statuses and 200 in statuses
