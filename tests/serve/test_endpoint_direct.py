"""The query endpoint with Ray Serve's experimental direct ingress (`direct_ingress=True`, the
model in the gateway): clients reach the gateway replica on its own 127.0.0.1 port, and the
default endpoint's protocol, auth, errors, Server-Timing, limits, 503 and model swap hold there."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from patchveil.serve.runtime import deploy_version, running_settings
from patchveil.tenants.client import Tenant
from patchveil.tenants.query_client import QueryClient
from tests.serve.conftest import MODEL_NAME, RunningEndpoint

# The default endpoint's tests (and the overload test), run again against this module's endpoint.
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
from tests.serve.test_endpoint_colocated import (  # noqa: F401
    serving,
    test_an_overloaded_endpoint_answers_503,
)

pytestmark = [pytest.mark.serve, pytest.mark.slow]


@pytest.fixture(scope="module")
def endpoint(
    tmp_path_factory: pytest.TempPathFactory, ray_session: Any
) -> Iterator[RunningEndpoint]:
    yield from serving(tmp_path_factory, direct_ingress=True, colocate_model=True)


def test_clients_reach_the_gateway_replica_on_its_own_port(endpoint: RunningEndpoint) -> None:
    address = urlsplit(endpoint.url)
    proxy_port = running_settings(endpoint.config)[0].port
    assert address.hostname == "127.0.0.1"
    assert 30000 <= int(address.port or 0) <= 31000  # Serve's direct-ingress range
    recorded = json.loads((endpoint.config.home / "serve" / "endpoint.json").read_text())
    assert recorded["url"] == endpoint.url
    # Serve's proxy still answers on the configured port, with the same gateway behind it.
    proxy = f"http://127.0.0.1:{proxy_port}"
    assert httpx.get(f"{proxy}/v2/health/ready").json() == {"ready": True}
    direct = httpx.get(f"{endpoint.url}/v2/models/{MODEL_NAME}").json()
    assert httpx.get(f"{proxy}/v2/models/{MODEL_NAME}").json() == direct


def test_a_model_swap_keeps_the_address(endpoint: RunningEndpoint) -> None:
    """A swap reconfigures the gateway in place (it holds the model): same replica, same port."""
    swapped = deploy_version(endpoint.config, 1)
    assert swapped.url == endpoint.url
    ciphertexts = Tenant("initech", endpoint.key_store).encrypt_query(_images(2)).images
    with QueryClient(endpoint.url, endpoint.tokens["initech"]) as client:
        assert client.infer(MODEL_NAME, ciphertexts).model_version == 1
