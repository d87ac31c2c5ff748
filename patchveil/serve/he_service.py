"""The endpoint's homomorphic side: tenants' public contexts, one evaluator per HE model, and the
Serve deployment that runs them off the gateway's event loop.

`HEService` is plain Python (the tests call it directly); `HERunner` is the Serve deployment that
holds one and runs its CPU-heavy calls in a worker thread. Every answer is `(status, JSON body)`:
a bad request is a 4xx with {"error": ...}, never an exception crossing Ray.

A tenant's public context (`TenantHEContext.public_context()` bytes) is uploaded once and kept in
`<home>/serve/he-contexts/<tenant_id>.ctx`, named by the tenant id its API token resolves to, so
a token can only ever set or use its own tenant's context. A context that could decrypt is
refused before anything is written. Parsed contexts (≈100 MB each with Galois keys) are cached
for the few most recent tenants.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tenseal as ts
from ray import serve

from patchveil.config import check_tenant_id
from patchveil.errors import PatchveilError
from patchveil.fsutil import write_bytes_atomic
from patchveil.models.he_models import HEModel, list_he_models, load_he_model
from patchveil.serve.he_inference import (
    CONTEXT_CACHE_SIZE,
    MAX_LATENCY_IMAGES,
    HEEvaluator,
    HEQueryError,
    HERequest,
    HEResponse,
    context_digest,
    parse_public_context,
)

HE_SUFFIX = "-he"
CONTEXTS_FOLDER = "he-contexts"
# A fresh CKKS ciphertext at N=8192 with the default chain is about 477 KB, 636 KB in base64:
# what decides whether a model's throughput request (pixels + 1 ciphertexts) fits a body.
CIPHERTEXT_WIRE_BYTES = 640_000

Reply = tuple[int, dict[str, Any]]


class HEServiceError(PatchveilError):
    """A homomorphic request refused with an HTTP status and a message for the tenant."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def resolve_he_models(home: Path, names: Sequence[str] | None) -> tuple[str, ...]:
    """The HE models to serve: `names`, each checked to load, or every one under the home."""
    chosen = list_he_models(home) if names is None else list(names)
    for name in chosen:
        load_he_model(home, name)
    return tuple(chosen)


@dataclass
class _TenantContext:
    digest: str
    context: ts.Context
    size: int


class HEService:
    """Uploads, descriptions and evaluations for the HE models of one platform home."""

    def __init__(
        self,
        home: Path,
        model_names: Sequence[str],
        max_body_bytes: int,
        cache_size: int = CONTEXT_CACHE_SIZE,
    ) -> None:
        self.models: dict[str, HEModel] = {name: load_he_model(home, name) for name in model_names}
        self.evaluators = {name: HEEvaluator(model.net) for name, model in self.models.items()}
        self.folder = Path(home) / "serve" / CONTEXTS_FOLDER
        self.max_body_bytes = max_body_bytes
        self.cache_size = cache_size
        self._parsed: OrderedDict[str, _TenantContext] = OrderedDict()
        self._lock = threading.Lock()

    # -- answers -------------------------------------------------------------------------------
    def describe(self, name: str) -> dict[str, Any]:
        """What a tenant needs to encrypt for `<name>-he`: layout, scaling, packings."""
        card = self._model(name).card
        return {
            "name": f"{name}{HE_SUFFIX}",
            "platform": "patchveil-ckks",
            "dataset": card.dataset,
            "architecture": card.architecture,
            "image_shape": list(card.image_shape),
            "kernel_size": card.kernel_size,
            "stride": card.stride,
            "pool": card.pool,
            "classes": card.classes,
            "pixel_scale": card.pixel_scale,
            "query_cipher": None if card.query_cipher is None else card.query_cipher.__dict__,
            "packings": self._packings(name),
            "max_latency_images": MAX_LATENCY_IMAGES,
            "max_body_bytes": self.max_body_bytes,
            "plain_accuracy": card.plain_accuracy,
        }

    def put_context(self, tenant_id: str, name: str, data: bytes) -> dict[str, Any]:
        """Keep the tenant's public context (replacing its previous one); one per tenant, used
        by every HE model."""
        self._model(name)
        try:
            context = parse_public_context(data)
        except HEQueryError as error:
            raise HEServiceError(400, str(error)) from None
        digest = context_digest(data)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self._path(tenant_id), data, mode=0o600)
        held = _TenantContext(digest, context, len(data))
        with self._lock:
            self._remember(tenant_id, held)
        return self._context_info(tenant_id, held)

    def context_info(self, tenant_id: str, name: str) -> dict[str, Any]:
        self._model(name)
        return self._context_info(tenant_id, self._tenant_context(tenant_id, name))

    def infer(self, tenant_id: str, name: str, body: bytes) -> dict[str, Any]:
        self._model(name)
        evaluator = self.evaluators[name]
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise HEServiceError(
                400, 'the body is not JSON: send {"packing": ..., "inputs": [base64, ...]}'
            ) from None
        try:
            request = HERequest.from_json(document)
            evaluator.check_inputs(request.packing, len(request.inputs))
            if request.packing not in self._packings(name):
                raise HEQueryError(
                    f"{name}{HE_SUFFIX}: the {request.packing} packing does not fit this "
                    f"endpoint's body limit of {self.max_body_bytes} bytes; use the latency packing"
                )
            context = self._tenant_context(tenant_id, name).context
            outputs = evaluator.evaluate_in(context, request.inputs, request.packing)
        except HEQueryError as error:
            raise HEServiceError(400, str(error)) from None
        except (ValueError, RuntimeError, TypeError) as error:
            # TenSEAL's own refusals (a ciphertext at the wrong level or scale, a context with
            # too short a modulus chain): the tenant's input, not the endpoint, is at fault.
            raise HEServiceError(
                400,
                f"the ciphertexts cannot be evaluated with this context ({type(error).__name__}); "
                "encrypt with the default CKKSParameters and the packing's layout",
            ) from None
        return HEResponse(f"{name}{HE_SUFFIX}", request.packing, outputs).to_json()

    # -- helpers -------------------------------------------------------------------------------
    def _model(self, name: str) -> HEModel:
        model = self.models.get(name)
        if model is None:
            served = ", ".join(f"{known}{HE_SUFFIX}" for known in self.models) or "none"
            raise HEServiceError(
                404, f"no homomorphic model {name[:80]!r}{HE_SUFFIX} here; served: {served}"
            )
        return model

    def _packings(self, name: str) -> list[str]:
        """The model's packings whose requests fit the body limit (a 32×32×3 model's throughput
        request is 3,073 ciphertexts, about 2 GB: latency only)."""
        card = self.models[name].card
        throughput_bytes = (card.layout.pixels + 1) * CIPHERTEXT_WIRE_BYTES
        return [
            packing
            for packing in card.packings
            if packing != "throughput" or throughput_bytes <= self.max_body_bytes
        ]

    def _path(self, tenant_id: str) -> Path:
        return self.folder / f"{check_tenant_id(tenant_id)}.ctx"

    def _tenant_context(self, tenant_id: str, name: str) -> _TenantContext:
        with self._lock:
            held = self._parsed.get(tenant_id)
            if held is not None:
                self._parsed.move_to_end(tenant_id)
                return held
        path = self._path(tenant_id)
        if not path.is_file():
            raise HEServiceError(
                409,
                f"tenant {tenant_id!r} has not uploaded a public context: PUT the bytes of "
                f"TenantHEContext.public_context() to /v2/models/{name}{HE_SUFFIX}/context first",
            )
        data = path.read_bytes()
        held = _TenantContext(context_digest(data), parse_public_context(data), len(data))
        with self._lock:
            self._remember(tenant_id, held)
        return held

    def _remember(self, tenant_id: str, held: _TenantContext) -> None:
        self._parsed[tenant_id] = held
        self._parsed.move_to_end(tenant_id)
        while len(self._parsed) > self.cache_size:
            self._parsed.popitem(last=False)

    @staticmethod
    def _context_info(tenant_id: str, held: _TenantContext) -> dict[str, Any]:
        return {
            "tenant_id": tenant_id,
            "context_digest": held.digest,
            "galois_keys": bool(held.context.has_galois_keys()),
            "bytes": held.size,
        }


def answer(call: Any, *args: Any) -> Reply:
    """Run one `HEService` call: `(200, body)` or the refusal's `(status, {"error": ...})`."""
    try:
        return 200, call(*args)
    except HEServiceError as error:
        return error.status, {"error": error.message}


@serve.deployment(name="he-model", num_replicas=1, ray_actor_options={"num_cpus": 1})
class HERunner:
    """One replica holding the HE models and tenants' parsed public contexts; evaluations run in
    worker threads, so health checks and new requests are still answered during one."""

    def __init__(self, he: dict[str, Any]) -> None:
        self.service = HEService(Path(he["home"]), he["models"], int(he["max_body_bytes"]))

    async def describe(self, name: str) -> Reply:
        return answer(self.service.describe, name)

    async def put_context(self, tenant_id: str, name: str, data: bytes) -> Reply:
        return await asyncio.to_thread(answer, self.service.put_context, tenant_id, name, data)

    async def context_info(self, tenant_id: str, name: str) -> Reply:
        return await asyncio.to_thread(answer, self.service.context_info, tenant_id, name)

    async def infer(self, tenant_id: str, name: str, body: bytes) -> Reply:
        return await asyncio.to_thread(answer, self.service.infer, tenant_id, name, body)
