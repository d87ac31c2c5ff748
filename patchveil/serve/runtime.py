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
from patchveil.serve.settings import APP_NAME, ServeSettings, serve_home

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


def _record(config: PlatformConfig, settings: ServeSettings, ref: ModelRef) -> None:
    folder = serve_home(config)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ENDPOINT_FILE).write_text(
        json.dumps({"settings": asdict(settings), "model": ref.to_json()}, indent=2) + "\n"
    )


def running_settings(config: PlatformConfig) -> tuple[ServeSettings, ModelRef]:
    """The settings and model the endpoint was last started or deployed with."""
    path = serve_home(config) / ENDPOINT_FILE
    if not path.is_file():
        raise PatchveilError(
            f"no endpoint was started from {config.home}; start one with `patchveil serve start`"
        )
    recorded = json.loads(path.read_text())
    return ServeSettings(**recorded["settings"]), ModelRef.from_json(recorded["model"])


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
    serve.start(http_options={"host": settings.host, "port": settings.port})
    ref = ModelRef(record.name, record.version, record.checkpoint_uri)
    _run(ref, settings, config)
    _record(config, settings, ref)
    return Endpoint(
        url=f"http://{settings.host}:{settings.port}",
        model_name=record.name,
        model_version=record.version,
        operator_token=operator_token,
        he_models=settings.he_models or (),
    )


def deploy_version(config: PlatformConfig, version: int, model_name: str | None = None) -> Endpoint:
    """Swap the running endpoint to another version of its model (or of `model_name`).

    Only the model deployment's `user_config` changes, so Serve reconfigures its replicas in
    place: each loads the new weights beside the old and swaps, and no request is dropped.
    """
    settings, current = running_settings(config)
    record = resolve_model(config.registry_url, model_name or current.name, version)
    ref = ModelRef(record.name, record.version, record.checkpoint_uri)
    _run(ref, settings, config)
    _record(config, settings, ref)
    return Endpoint(
        url=f"http://{settings.host}:{settings.port}",
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
