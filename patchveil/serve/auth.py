"""Who is asking: a Bearer token → the tenant whose hashed API token it matches, or the operator.

The registry stores only salted hashes, so a token is checked against each active tenant's hash
(a few microseconds each); a token already matched is remembered by its SHA-256 digest until the
next refresh, so a busy tenant costs one hash per request. Revoking a token (a new one issued, the
tenant removed) takes effect within `refresh_s`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping

from sqlalchemy import select

from patchveil.registry.models import Tenant
from patchveil.registry.registry import Registry
from patchveil.registry.tokens import token_matches
from patchveil.serve.oip import RequestError

_BEARER = "bearer "


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header; 401 when absent or malformed."""
    if not authorization:
        raise RequestError(401, "no Authorization header: send 'Authorization: Bearer <API token>'")
    if not authorization.lower().startswith(_BEARER) or not authorization[len(_BEARER) :].strip():
        raise RequestError(401, "the Authorization header must be 'Bearer <API token>'")
    return authorization[len(_BEARER) :].strip()


def active_token_hashes(registry_url: str) -> dict[str, str]:
    """tenant id → stored token hash, for every active tenant holding a token."""
    with Registry(registry_url) as registry, registry.session() as session:
        rows = session.execute(
            select(Tenant.tenant_id, Tenant.api_token_hash).where(
                Tenant.status == "active", Tenant.api_token_hash.is_not(None)
            )
        )
        return {tenant_id: stored for tenant_id, stored in rows if stored}


class TokenBook:
    """Tenant API tokens checked against the registry's hashes, refreshed every `refresh_s`."""

    def __init__(
        self,
        load_hashes: Callable[[], Mapping[str, str]],
        refresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load_hashes = load_hashes
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._hashes: Mapping[str, str] = {}
        self._matched: dict[bytes, str] = {}
        self._loaded_at = -float("inf")

    def _current(self) -> tuple[Mapping[str, str], dict[bytes, str]]:
        with self._lock:
            if self._clock() - self._loaded_at >= self._refresh_s:
                self._hashes = dict(self._load_hashes())
                self._matched = {}
                self._loaded_at = self._clock()
            return self._hashes, self._matched

    def tenant_of(self, token: str) -> str:
        """The tenant whose current API token this is; 401 otherwise (same answer for a wrong,
        revoked or removed tenant's token, so the answer tells an attacker nothing)."""
        hashes, matched = self._current()
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        tenant_id = matched.get(digest)
        if tenant_id is None:
            tenant_id = next(
                (tenant for tenant, stored in hashes.items() if token_matches(token, stored)),
                None,
            )
            if tenant_id is None:
                raise RequestError(401, "the API token is not valid (revoked, or never issued)")
            with self._lock:
                matched[digest] = tenant_id
        return tenant_id
