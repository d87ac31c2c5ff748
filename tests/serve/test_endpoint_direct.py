"""The query endpoint with the model in the gateway (`colocate_model=True`: no Serve handle, the
swap reconfigures the gateway) behind Ray Serve's experimental direct ingress
(`direct_ingress=True`): clients reach the gateway replica on its own 127.0.0.1 port, Serve's proxy
still answers with the same gateway behind it, and the default endpoint's protocol, auth, errors,
Server-Timing, limits and model swap (tests/serve/test_endpoint.py, where the model is a
deployment of its own behind the proxy) hold here too, and so does a 503 when it is overloaded.
The two layouts together cover the model in the gateway behind the proxy (no third endpoint)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from patchveil.serve.runtime import deploy_version, running_settings
from patchveil.serve.settings import APP_NAME
from patchveil.tenants.client import Tenant
from patchveil.tenants.query_client import QueryClient
from tests.serve.conftest import MODEL_NAME, RunningEndpoint, serving

# The default endpoint's tests, run again against this module's endpoint.
from tests.serve.test_endpoint import (  # noqa: F401
    _images,
    infer_body,
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


@pytest.fixture(scope="module")
def endpoint(
    tmp_path_factory: pytest.TempPathFactory, ray_session: Any
) -> Iterator[RunningEndpoint]:
    yield from serving(
        tmp_path_factory,
        direct_ingress=True,
        colocate_model=True,
        max_ongoing_requests=MAX_ONGOING,
        max_queued_requests=MAX_QUEUED,
    )


def test_the_gateway_holds_the_model(endpoint: RunningEndpoint) -> None:
    from ray import serve

    deployments = serve.status().applications[APP_NAME].deployments
    assert "gateway" in deployments and "model" not in deployments


def test_clients_reach_the_gateway_replica_on_its_own_port(endpoint: RunningEndpoint) -> None:
    address = urlsplit(endpoint.url)
    proxy_port = running_settings(endpoint.config)[0].port
    assert address.hostname == "127.0.0.1"
    assert 30000 <= int(address.port or 0) <= 31000  # Serve's direct-ingress range
    recorded = json.loads((endpoint.config.home / "serve" / "endpoint.json").read_text())
    assert recorded["url"] == endpoint.url
    # Serve's proxy still answers on the configured port, with the same gateway behind it: the
    # model in the gateway, reached through the proxy, answers as it does directly.
    proxy = f"http://127.0.0.1:{proxy_port}"
    assert httpx.get(f"{proxy}/v2/health/ready").json() == {"ready": True}
    direct = httpx.get(f"{endpoint.url}/v2/models/{MODEL_NAME}").json()
    assert httpx.get(f"{proxy}/v2/models/{MODEL_NAME}").json() == direct
    ciphertexts = Tenant("acme", endpoint.key_store).encrypt_query(_images(3, seed=5)).images
    with QueryClient(proxy, endpoint.tokens["acme"]) as through_proxy:
        answer = through_proxy.infer(MODEL_NAME, ciphertexts)
    assert answer.labels is not None and len(answer.labels) == 3


def test_a_model_swap_keeps_the_address(endpoint: RunningEndpoint) -> None:
    """A swap reconfigures the gateway in place (it holds the model): same replica, same port."""
    swapped = deploy_version(endpoint.config, 1)
    assert swapped.url == endpoint.url
    ciphertexts = Tenant("initech", endpoint.key_store).encrypt_query(_images(2)).images
    with QueryClient(endpoint.url, endpoint.tokens["initech"]) as client:
        assert client.infer(MODEL_NAME, ciphertexts).model_version == 1


def test_an_overloaded_endpoint_answers_503(endpoint: RunningEndpoint) -> None:
    """More requests at once than the gateway runs and queues (`max_ongoing_requests` +
    `max_queued_requests`): the rest are refused at once with 503, none fails otherwise."""
    ciphertexts = Tenant("globex", endpoint.key_store).encrypt_query(_images(1, seed=11)).images
    body = infer_body(ciphertexts)
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
