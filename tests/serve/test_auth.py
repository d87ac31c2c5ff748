"""Bearer tokens against the registry's hashes; per-tenant rate limits; the endpoint's secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from patchveil.registry.registry import Registry
from patchveil.registry.tokens import token_matches
from patchveil.serve.auth import TokenBook, active_token_hashes, bearer_token
from patchveil.serve.limits import ImageRateLimiter
from patchveil.serve.oip import RequestError
from patchveil.serve.secrets import (
    ensure_operator_token,
    operator_token_hash,
    reset_operator_token,
    server_secret,
)


def test_bearer_header_is_parsed_or_refused() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    for bad in (None, "", "Basic abc", "Bearer ", "abc"):
        with pytest.raises(RequestError) as raised:
            bearer_token(bad)
        assert raised.value.status == 401


def test_tokens_resolve_to_their_tenant_and_revocation_takes_effect(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with Registry(url) as registry:
        for tenant in ("acme", "globex"):
            registry.upsert_tenant(tenant, cipher="disposable", block_size=4, image_size=32)
        acme = registry.issue_api_token("acme")
        globex = registry.issue_api_token("globex")
    now = [0.0]
    book = TokenBook(lambda: active_token_hashes(url), refresh_s=5.0, clock=lambda: now[0])
    assert book.tenant_of(acme) == "acme"
    assert book.tenant_of(acme) == "acme"  # from the matched cache
    assert book.tenant_of(globex) == "globex"
    with pytest.raises(RequestError) as raised:
        book.tenant_of("nope")
    assert raised.value.status == 401 and "nope" not in raised.value.message
    with Registry(url) as registry:
        registry.issue_api_token("acme")  # revokes the old one
        registry.remove_tenant("globex")
    now[0] = 10.0
    for revoked in (acme, globex):
        with pytest.raises(RequestError):
            book.tenant_of(revoked)


def test_rate_limiter_refills_and_says_how_long_to_wait() -> None:
    now = [0.0]
    limiter = ImageRateLimiter(per_second=10, burst=20, clock=lambda: now[0])
    assert limiter.take("a", 20) == 0.0
    assert limiter.take("a", 5) == pytest.approx(0.5)
    assert limiter.take("b", 20) == 0.0  # tenants do not share a bucket
    now[0] = 0.5
    assert limiter.take("a", 5) == 0.0
    assert limiter.take("a", 21) == float("inf")


def test_secrets_are_made_once_and_private(tmp_path: Path) -> None:
    folder = tmp_path / "serve"
    secret = server_secret(folder)
    assert server_secret(folder) == secret and len(secret) == 32
    assert os.stat(folder / "server-secret.bin").st_mode & 0o077 == 0
    token = ensure_operator_token(folder)
    assert token and ensure_operator_token(folder) is None
    assert token_matches(token, operator_token_hash(folder))
    assert token.encode() not in (folder / "operator-token.hash").read_bytes()
    new = reset_operator_token(folder)
    assert not token_matches(token, operator_token_hash(folder))
    assert token_matches(new, operator_token_hash(folder))
