"""The Ray Serve application: a FastAPI gateway (OIP v2, auth, limits, defence, monitoring) that
answers with a batched model. A thin layer: every decision is a pure function elsewhere in
`patchveil.serve`, every forward pass is `models.inference.predict_with_embeddings`.

`gateway` is one replica (the monitor's per-tenant state and the rate limits live there). The
model is held by replicas that join requests into forward passes of up to `max_batch_images`
images (`@serve.batch`) and take a new version as a new `user_config`, swapped in place so no
request is dropped: with one CPU replica, the gateway itself (`ServeSettings.colocated`: no hop
to another process); otherwise a `model` deployment the gateway calls through a Serve handle.
"""

# No `from __future__ import annotations`: FastAPI must see `Request` itself in the routes
# Serve wraps, or it takes `request` for a query parameter.

import asyncio
import functools
import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from patchveil.config import PlatformConfig
from patchveil.errors import PatchveilError
from patchveil.registry.tokens import token_matches
from patchveil.serve.auth import TokenBook, active_token_hashes, bearer_token
from patchveil.serve.guard import QueryGuard
from patchveil.serve.he_service import HERunner, resolve_he_models
from patchveil.serve.limits import ImageRateLimiter
from patchveil.serve.model_host import Forward, LoadedModel, ModelRef, split_forward
from patchveil.serve.oip import (
    BINARY_HEADER,
    RequestError,
    candidate_option,
    infer_response,
    model_metadata,
    parse_infer_request,
)
from patchveil.serve.secrets import operator_token_hash, server_secret
from patchveil.serve.settings import (
    DIRECT_INGRESS_ENV,
    GATEWAY_CPUS,
    ServeSettings,
    defence_settings,
    monitor_settings,
    serve_home,
)
from patchveil.serve.telemetry import GatewayMetrics, server_timing

logger = logging.getLogger("ray.serve")
api = FastAPI(title="patchveil query endpoint", docs_url=None, redoc_url=None, openapi_url=None)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@api.exception_handler(RequestError)
async def _request_error(_request: Request, error: RequestError) -> JSONResponse:
    return _error(error.status, error.message)


@api.exception_handler(StarletteHTTPException)
async def _http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
    message = error.detail if isinstance(error.detail, str) else "request refused"
    if error.status_code == 404:
        message = "no such route: the endpoint serves /v2/... (Open Inference Protocol)"
    return _error(error.status_code, message)


@api.exception_handler(RequestValidationError)
async def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0] if error.errors() else {}
    return _error(422, f"invalid request: {first.get('msg', 'bad parameters')}")


class ModelHolder:
    """A replica that holds one model version and answers batched forward passes: the model
    deployment's replicas, or the gateway itself when it holds the model (`colocated`).

    A new version arrives as a new `user_config` (`reconfigure`): it loads beside the old one,
    then the reference swaps, so requests in flight finish on the version they started with.
    """

    _model: LoadedModel | None = None
    _threads: int = 1
    _forward_thread: ThreadPoolExecutor | None = None

    def reconfigure(self, config: dict[str, Any]) -> None:
        ref = ModelRef.from_json(config["model"])
        settings = ServeSettings(**config.get("settings", {}))
        self.forward.set_max_batch_size(settings.max_batch_images)
        self.forward.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
        # torch's threads = the CPUs the model holds (Ray sets OMP_NUM_THREADS only at start).
        self._threads = max(1, int(settings.model_cpus))
        if self._model is None or self._model.ref != ref:
            self._model = LoadedModel(ref, use_gpu=settings.use_gpu)

    def _require(self) -> LoadedModel:
        if self._model is None:
            raise RuntimeError("no model loaded yet")
        return self._model

    def describe(self) -> dict[str, Any]:
        return self._require().describe()

    def _run_forward(self, model: LoadedModel, images: np.ndarray) -> Forward:
        # On the thread that runs it: OpenMP's thread count is per calling thread.
        if torch.get_num_threads() != self._threads:
            torch.set_num_threads(self._threads)
        return model.forward(images)

    async def _forward_off_loop(self, model: LoadedModel, images: np.ndarray) -> Forward:
        """`model.forward` off the event loop, always on the same thread: OpenMP keeps a team of
        threads per calling thread, and teams left spinning on other threads would take the
        cores from the one working (batches run one at a time anyway)."""
        if self._forward_thread is None:
            self._forward_thread = ThreadPoolExecutor(1, thread_name_prefix="model-forward")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._forward_thread, self._run_forward, model, images)

    @serve.batch(
        max_batch_size=256,
        batch_wait_timeout_s=0.0,
        batch_size_fn=lambda items: sum(len(x) for x in items),
    )
    async def forward(self, batches: list[np.ndarray]) -> list[Forward]:
        model = self._require()  # one version for the whole batch
        joined = np.concatenate(batches) if len(batches) > 1 else batches[0]
        answer = await self._forward_off_loop(model, joined)
        return split_forward(answer, [len(batch) for batch in batches])


@serve.deployment(name="model", ray_actor_options={"num_cpus": 1})
class ModelRunner(ModelHolder):
    """The model deployment's replicas (more than one, or on a GPU): the gateway asks them
    through a Serve handle."""

    async def __call__(self, images: np.ndarray) -> Forward:
        return await self.forward(images)


@serve.deployment(name="gateway", num_replicas=1, ray_actor_options={"num_cpus": GATEWAY_CPUS})
@serve.ingress(api)
class QueryGateway(ModelHolder):
    """Checks every request, asks the model, applies the clone defence and logs the answer.

    The model is the model deployment's (`runner`, a Serve handle) or, with `runner` None, the
    one this replica holds itself (`ModelHolder`, its version in this deployment's `user_config`).
    """

    def __init__(
        self,
        runner: DeploymentHandle | None,
        gateway: dict[str, Any],
        he_runner: DeploymentHandle | None = None,
    ) -> None:
        self.runner = runner
        self.he_runner = he_runner
        self.he_models: list[str] = gateway.get("he_models", [])
        self._he_slots: asyncio.Semaphore | None = None  # made on the replica's event loop
        self.model_name: str = gateway["model_name"]
        self.settings = ServeSettings(**gateway.get("settings", {}))
        config = PlatformConfig(**gateway["platform"])
        folder = serve_home(config)
        registry_url = config.registry_url
        self.tokens = TokenBook(
            lambda: active_token_hashes(registry_url), refresh_s=self.settings.token_refresh_s
        )
        self.limiter = ImageRateLimiter(self.settings.images_per_second, self.settings.burst_images)
        self._operator_hash = operator_token_hash(folder)
        self.guard = QueryGuard(
            secret=server_secret(folder),
            log_path=folder / "query-log.jsonl",
            defence_enabled=self.settings.defence,
            defence_settings=defence_settings(self.settings),
            monitor_settings=monitor_settings(self.settings),
        )
        self.metrics = GatewayMetrics()
        self._described: dict[str, Any] | None = None

    # -- helpers -----------------------------------------------------------------------------

    async def _description(self, version: int | None = None) -> dict[str, Any]:
        if self._described is None or (
            version is not None and self._described["version"] != version
        ):
            if self.runner is None:
                described = self.describe()
            else:
                described = await self.runner.describe.remote()
            self.guard.use_model(
                described["version"],
                np.asarray(described["head_weight"]),
                described.get("reference_embeddings"),
            )
            self._described = described
        return self._described

    def _check_model(self, name: str) -> None:
        if name != self.model_name:
            raise RequestError(
                404, f"no model {name[:80]!r} here; this endpoint serves {self.model_name!r}"
            )

    def _operator(self, request: Request) -> None:
        token = bearer_token(request.headers.get("authorization"))
        if not token_matches(token, self._operator_hash):
            # A tenant's token is a valid credential, just not for this: 403, not 401.
            try:
                self.tokens.tenant_of(token)
            except RequestError:
                raise RequestError(401, "the operator token is not valid") from None
            raise RequestError(403, "this route is for the operator; a tenant token cannot read it")

    async def _body(self, request: Request, limit: int | None = None) -> bytes:
        limit = limit or self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    raise RequestError(413, f"the body is {declared} bytes; the limit is {limit}")
            except ValueError:
                raise RequestError(400, "Content-Length must be an integer") from None
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"the body is over {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _forward(self, images: np.ndarray) -> Forward:
        step = self.settings.max_batch_images
        ask = self.forward if self.runner is None else self.runner.remote
        parts = await asyncio.gather(
            *(ask(images[start : start + step]) for start in range(0, len(images), step))
        )
        versions = {part.model_version for part in parts}
        if len(versions) > 1:  # a swap happened between the parts: ask again, all on the new one
            return await self._forward(images)
        return Forward(
            np.concatenate([part.probabilities for part in parts]),
            np.concatenate([part.embeddings for part in parts]),
            parts[0].model_version,
        )

    # -- homomorphic queries (CKKS): ciphertexts in, ciphertexts out --------------------------
    # Declared before /v2/models/{name}/..., which would otherwise take "<name>-he" for a name.
    # The `he-model` deployment evaluates (CPU-heavy, off this event loop) and answers
    # (status, body); the tenant comes from the token, so a token reaches only its own context.

    async def _he_with_body(
        self, method: str, tenant_id: str, name: str, request: Request, limit: int
    ) -> JSONResponse:
        """Read a large HE body only while the evaluator can take it: at most as many bodies
        in memory here as it runs and queues (each up to `limit` bytes); beyond that, 503."""
        self._he_runner()
        if self._he_slots is None:
            settings = self.settings
            self._he_slots = asyncio.Semaphore(
                settings.he_max_ongoing_requests + settings.he_max_queued_requests
            )
        if self._he_slots.locked():
            raise RequestError(503, "the homomorphic evaluator is busy; retry later")
        async with self._he_slots:
            body = await self._body(request, limit)
            return await self._he(method, tenant_id, name, body)

    def _he_runner(self) -> DeploymentHandle:
        if self.he_runner is None:
            raise RequestError(
                404,
                "this endpoint serves no homomorphic model; train one with `patchveil he train`",
            )
        return self.he_runner

    async def _he(self, method: str, *args: Any) -> JSONResponse:
        try:
            status, body = await getattr(self._he_runner(), method).remote(*args)
        except BackPressureError:
            raise RequestError(503, "the homomorphic evaluator is busy; retry later") from None
        return JSONResponse(body, status_code=status)

    @api.get("/v2/models/{name}-he")
    async def he_metadata(self, name: str) -> JSONResponse:
        return await self._he("describe", name)

    @api.put("/v2/models/{name}-he/context")
    async def he_put_context(self, name: str, request: Request) -> JSONResponse:
        tenant_id = self.tokens.tenant_of(bearer_token(request.headers.get("authorization")))
        limit = self.settings.he_max_context_bytes
        return await self._he_with_body("put_context", tenant_id, name, request, limit)

    @api.get("/v2/models/{name}-he/context")
    async def he_context(self, name: str, request: Request) -> JSONResponse:
        tenant_id = self.tokens.tenant_of(bearer_token(request.headers.get("authorization")))
        return await self._he("context_info", tenant_id, name)

    @api.post("/v2/models/{name}-he/infer")
    async def he_infer(self, name: str, request: Request) -> JSONResponse:
        tenant_id = self.tokens.tenant_of(bearer_token(request.headers.get("authorization")))
        limit = self.settings.he_max_body_bytes
        return await self._he_with_body("infer", tenant_id, name, request, limit)

    # -- the protocol ------------------------------------------------------------------------

    @api.get("/v2/health/live")
    async def live(self) -> dict[str, bool]:
        return {"live": True}

    @api.get("/v2/health/ready")
    async def ready(self) -> JSONResponse:
        try:
            await self._description()
        except Exception as error:  # not ready is an answer, not an error
            logger.warning("model not ready: %s: %s", type(error).__name__, error)
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse({"ready": True})

    @api.get("/v2")
    async def server_metadata(self) -> dict[str, Any]:
        return {
            "name": "patchveil",
            "version": "1",
            "extensions": ["binary_tensor_data"],
            "models": [self.model_name],
            "he_models": [f"{name}-he" for name in self.he_models],
        }

    @api.get("/v2/models/{name}")
    async def metadata(self, name: str) -> dict[str, Any]:
        self._check_model(name)
        described = await self._description()
        return model_metadata(
            name, [described["version"]], described["image_size"], described["num_classes"]
        )

    @api.get("/v2/models/{name}/ready")
    async def model_ready(self, name: str) -> dict[str, Any]:
        self._check_model(name)
        described = await self._description()
        return {"name": name, "ready": True, "version": str(described["version"])}

    @api.post("/v2/models/{name}/infer")
    async def infer(self, name: str, request: Request) -> JSONResponse:
        started = time.perf_counter()
        tenant_id = self.tokens.tenant_of(bearer_token(request.headers.get("authorization")))
        self._check_model(name)
        stages = {"auth": time.perf_counter() - started}
        try:
            described = await self._description()
            mark = time.perf_counter()
            body = await self._body(request)
            stages["read"] = time.perf_counter() - mark
            mark = time.perf_counter()
            parsed = parse_infer_request(
                body,
                request.headers.get(BINARY_HEADER),
                image_size=described["image_size"],
                max_images=self.settings.max_images_per_request,
            )
            candidates = candidate_option(parsed.parameters, described["num_classes"])
            stages["parse"] = time.perf_counter() - mark
        except RequestError as error:
            self.metrics.rejected(tenant_id, error.status)
            raise
        wait = self.limiter.take(tenant_id, len(parsed.images))
        if wait:
            self.metrics.rejected(tenant_id, 429)
            if wait == float("inf"):
                raise RequestError(429, "more images in one request than the rate limit's burst")
            return _error(
                429,
                f"rate limit: {self.settings.images_per_second:g} images/s per tenant; retry later",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        mark = time.perf_counter()
        forward = await self._forward(parsed.images)
        await self._description(forward.model_version)
        stages["model"] = time.perf_counter() - mark
        mark = time.perf_counter()
        answer = self.guard.answer(tenant_id, forward, candidates)
        stages["guard"] = time.perf_counter() - mark
        mark = time.perf_counter()
        body = infer_response(
            self.model_name,
            forward.model_version,
            parsed.request_id,
            answer.labels,
            answer.confidences,
            answer.candidates,
        )
        stages["respond"] = time.perf_counter() - mark
        stages["total"] = time.perf_counter() - started
        self.metrics.answered(
            tenant_id,
            len(parsed.images),
            stages["total"],
            answer.error_rate,
            answer.risk,
            answer.newly_flagged,
        )
        return JSONResponse(body, headers={"Server-Timing": server_timing(stages)})

    # -- a tenant's own usage, and the operator's view --------------------------------------

    @api.get("/v2/tenant/usage")
    async def usage(self, request: Request) -> dict[str, Any]:
        tenant_id = self.tokens.tenant_of(bearer_token(request.headers.get("authorization")))
        return self.guard.usage(tenant_id)

    @api.get("/admin/risk")
    async def risk(self, request: Request) -> dict[str, Any]:
        self._operator(request)
        return {"tenants": [risk.to_json() for risk in self.guard.risks()]}

    @api.get("/admin/alerts")
    async def alerts(self, request: Request) -> dict[str, Any]:
        self._operator(request)
        return {
            "alerts": [
                {"tenant_id": risk.tenant_id, "alerts": list(risk.alerts), "risk": risk.risk}
                for risk in self.guard.risks()
                if risk.alerts
            ]
        }


def gateway_args(
    model_name: str, settings: ServeSettings, config: PlatformConfig
) -> dict[str, Any]:
    """The gateway's constructor arguments: plain JSON (no key store path, no secret)."""
    return {
        "model_name": model_name,
        "he_models": list(settings.he_models or ()),
        "settings": asdict(settings),
        "platform": {
            "home": str(config.home),
            "dataset_root": config.dataset_root,
            "registry_url": config.registry_url,
            "checkpoint_root": config.checkpoint_root,
            "log_dir": str(config.log_dir),
        },
    }


@functools.cache
def code_version() -> str:
    """A version of the code the deployments run: a hash of the serving and model modules.

    `serve.run` gives a deployment without a version a random one, so every redeploy would
    restart every replica; with this one, a redeploy that changes only the model deployment's
    `user_config` (`patchveil serve deploy VERSION`) reconfigures its replicas in place and
    leaves the gateway (its monitor, its rate limits) running. Changed code changes the hash.
    """
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for folder in ("serve", "models"):
        for path in sorted((root / folder).glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def build_application(ref: ModelRef, settings: ServeSettings, config: PlatformConfig) -> Any:
    """The bound Serve application for model version `ref`."""
    # `version` is Serve's own versioning, passed as Serve's deploy API does (`_internal`).
    versioned: dict[str, Any] = {"version": code_version(), "_internal": True}
    # The model's version and settings: a changed `user_config` reconfigures in place.
    model_config = {"model": ref.to_json(), "settings": asdict(settings)}
    runner = None
    if not settings.colocated:
        runner = ModelRunner.options(
            num_replicas=settings.model_replicas,
            ray_actor_options={
                "num_cpus": settings.model_cpus,
                "num_gpus": 1 if settings.use_gpu else 0,
            },
            user_config=model_config,
            # As many requests as one batch of images can hold (the gateway bounds the rest), so
            # a full batch can form.
            max_ongoing_requests=max(settings.max_ongoing_requests, settings.max_batch_images),
            **versioned,
        ).bind()
    if settings.he_models is None:
        settings = replace(settings, he_models=resolve_he_models(config.home, None))
    he_runner = None
    if settings.he_models:
        he_runner = HERunner.options(
            ray_actor_options={"num_cpus": settings.he_cpus},
            max_ongoing_requests=settings.he_max_ongoing_requests,
            max_queued_requests=settings.he_max_queued_requests,
            **versioned,
        ).bind(
            {
                "home": str(config.home),
                "models": list(settings.he_models),
                "max_body_bytes": settings.he_max_body_bytes,
            }
        )
    gateway: dict[str, Any] = {
        "ray_actor_options": {
            "num_cpus": GATEWAY_CPUS + (settings.model_cpus if settings.colocated else 0)
        },
        "max_ongoing_requests": settings.max_ongoing_requests,
        "max_queued_requests": settings.max_queued_requests,
        **versioned,
    }
    if settings.colocated:
        gateway["user_config"] = model_config
    if settings.direct_ingress:
        gateway["ray_actor_options"]["runtime_env"] = {"env_vars": dict(DIRECT_INGRESS_ENV)}
    return QueryGateway.options(**gateway).bind(
        runner, gateway_args(ref.name, settings, config), he_runner
    )


def build_app(args: dict[str, str]) -> Any:
    """Application builder for a Serve config file (`infra/serve/serve-config.yaml`): `model`
    (registry name), optional `version`, settings overrides; the registry from PATCHVEIL_*."""
    from patchveil.serve.model_host import resolve_model

    config = PlatformConfig.from_env()
    known = set(ServeSettings.__dataclass_fields__)
    overrides = {key: value for key, value in args.items() if key in known}
    settings = ServeSettings(
        **{
            k: json.loads(v) if isinstance(v, str) and k != "host" else v
            for k, v in overrides.items()
        }
    )
    if settings.direct_ingress:
        # Serve's controller must start with the flag (`patchveil serve start` does that); a
        # gateway alone with it would serve on a port its controller neither reports nor frees.
        raise PatchveilError(
            "direct_ingress is set where the endpoint starts Serve (`patchveil serve start`), "
            "not in a Serve config: leave it out here"
        )
    version = args.get("version")
    record = resolve_model(config.registry_url, args["model"], int(version) if version else None)
    return build_application(
        ModelRef(record.name, record.version, record.checkpoint_uri), settings, config
    )
