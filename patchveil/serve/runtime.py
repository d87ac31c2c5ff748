"""Start the query endpoint on Ray Serve, swap its model version, stop it (the CLI's and the
demo's entry points; tests call them too)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from patchveil.config import PlatformConfig
from patchveil.errors import PatchveilError
from patchveil.serve.model_host import ModelRef, resolve_model
from patchveil.serve.secrets import ensure_operator_token, server_secret
from patchveil.serve.settings import APP_NAME, DIRECT_INGRESS_ENV, ServeSettings, serve_home

ENDPOINT_FILE = "endpoint.json"


@dataclass(frozen=True)
class Endpoint:
    """A running endpoint: where it listens and which model version answers."""

    url: str
    model_name: str
    model_version: int
    operator_token: str | None  # only on the very first start; stored hashed
    he_models: tuple[str, ...] = ()  # served at /v2/models/{name}-he/...

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "model_name": self.model_name,
            "model_version": self.model_version,
        }


def _record(config: PlatformConfig, settings: ServeSettings, ref: ModelRef, url: str) -> None:
    folder = serve_home(config)
    folder.mkdir(parents=True, exist_ok=True)
    recorded = {"url": url, "settings": asdict(settings), "model": ref.to_json()}
    (folder / ENDPOINT_FILE).write_text(json.dumps(recorded, indent=2) + "\n")


def running_settings(config: PlatformConfig) -> tuple[ServeSettings, ModelRef]:
    """The settings and model the endpoint was last started or deployed with."""
    path = serve_home(config) / ENDPOINT_FILE
    if not path.is_file():
        raise PatchveilError(
            f"no endpoint was started from {config.home}; start one with `patchveil serve start`"
        )
    recorded = json.loads(path.read_text())
    return ServeSettings(**recorded["settings"]), ModelRef.from_json(recorded["model"])


def _url(settings: ServeSettings, timeout_s: float = 60.0) -> str:
    """Where clients reach the endpoint: Serve's proxy on `port`, or with `direct_ingress` the
    gateway replica's own port, which Serve's controller allocates and reports.

    The controller reports it in the serve details' target groups (the same `target_groups` as
    the dashboard's `/api/serve/applications/`); Ray has no public Python call for them yet.
    """
    proxy = f"http://{settings.host}:{settings.port}"
    if not settings.direct_ingress:
        return proxy
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    deadline = time.monotonic() + timeout_s
    while True:
        ports = [
            target["port"]
            for group in client.get_serve_details().get("target_groups", [])
            if group.get("app_name") == APP_NAME and group.get("protocol") == "HTTP"
            for target in group["targets"]
            # An app without a running replica is reported at the proxy's address instead.
            if str(target.get("name", "")).startswith("SERVE_REPLICA::")
        ]
        if ports:
            return f"http://{settings.host}:{ports[0]}"
        if time.monotonic() > deadline:
            raise PatchveilError(
                "direct_ingress is on but Serve reports no port of the gateway replica's own "
                f"within {timeout_s:.0f} s (a Serve instance started without "
                "RAY_SERVE_ENABLE_DIRECT_INGRESS?); the endpoint still answers through the "
                f"proxy at {proxy}"
            )
        time.sleep(0.2)


def _run(ref: ModelRef, settings: ServeSettings, config: PlatformConfig) -> None:
    from ray import serve

    from patchveil.serve.app import build_application

    logging = None
    if not settings.request_logs:
        logging = serve.schema.LoggingConfig(log_level="WARNING", enable_access_log=False)
    serve.run(
        build_application(ref, settings, config),
        name=APP_NAME,
        route_prefix="/",
        logging_config=logging,
    )


def start_endpoint(
    config: PlatformConfig,
    model_name: str,
    version: int | None = None,
    settings: ServeSettings | None = None,
) -> Endpoint:
    """Serve `model_name` (newest version unless `version`) on Ray Serve, in the Ray this
    process is connected to; returns once the endpoint answers."""
    from ray import serve

    settings = settings or ServeSettings()
    record = resolve_model(config.registry_url, model_name, version)
    # The HE models are fixed here (every one in the home unless named), so a later
    # `deploy_version` serves the same ones; a missing or unreadable one fails before Serve starts.
    from patchveil.serve.he_service import resolve_he_models

    settings = replace(settings, he_models=resolve_he_models(config.home, settings.he_models))
    folder = serve_home(config)
    server_secret(folder)  # made here, once, not by a replica racing another
    operator_token = ensure_operator_token(folder)
    controller_options = None
    if settings.direct_ingress:
        from ray.serve.context import _get_global_client

        if _get_global_client(raise_if_no_controller_running=False) is not None:
            raise PatchveilError(
                "direct_ingress needs a Serve instance this endpoint starts (Serve's controller "
                "reads RAY_SERVE_ENABLE_DIRECT_INGRESS when it starts), but Serve already runs "
                "on this Ray cluster: stop it (`serve shutdown`) or start without direct_ingress"
            )
        controller_options = {"runtime_env": {"env_vars": dict(DIRECT_INGRESS_ENV)}}
    serve.start(
        http_options={"host": settings.host, "port": settings.port},
        controller_options=controller_options,
    )
    ref = ModelRef(record.name, record.version, record.checkpoint_uri)
    _run(ref, settings, config)
    url = _url(settings)
    _record(config, settings, ref, url)
    return Endpoint(
        url=url,
        model_name=record.name,
        model_version=record.version,
        operator_token=operator_token,
        he_models=settings.he_models or (),
    )


def deploy_version(config: PlatformConfig, version: int, model_name: str | None = None) -> Endpoint:
    """Swap the running endpoint to another version of its model (or of `model_name`).

    Only the `user_config` of the replicas holding the model changes (the model deployment's, or
    the gateway's when it holds the model), so Serve reconfigures them in place: each loads the
    new weights beside the old and swaps, and no request is dropped.
    """
    settings, current = running_settings(config)
    record = resolve_model(config.registry_url, model_name or current.name, version)
    ref = ModelRef(record.name, record.version, record.checkpoint_uri)
    _run(ref, settings, config)
    url = _url(settings)
    _record(config, settings, ref, url)
    return Endpoint(
        url=url,
        model_name=record.name,
        model_version=record.version,
        operator_token=None,
    )


def stop_endpoint() -> None:
    from ray import serve

    serve.shutdown()


def wait_until_ready(url: str, timeout_s: float = 60.0) -> None:
    """Poll `/v2/health/ready` until the model is loaded."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise PatchveilError(f"the endpoint at {url} did not become ready within {timeout_s:.0f} s")
