"""The endpoint's settings in one typed place: where it listens, how it batches, what it refuses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from patchveil.config import PlatformConfig
from patchveil.errors import PatchveilError
from patchveil.serve.defence import DefenceSettings
from patchveil.serve.monitor import MonitorSettings

APP_NAME = "patchveil"
# An OIP request's input tensor name; the response's outputs.
INPUT_NAME = "images"
# The CPUs the gateway's own work takes (auth, parsing, the defence, the monitor); a gateway that
# holds the model (`ServeSettings.colocated`) holds the model's CPUs on top.
GATEWAY_CPUS = 0.5
# Ray Serve's experimental direct ingress (`ServeSettings.direct_ingress`), as environment
# variables of the Serve controller and the gateway replica: Serve reads them when its processes
# start (ray/serve/_private/constants.py). Serve holds a stopping gateway open 30 s by default so
# that a load balancer can deregister it; clients here call the replica's address directly and
# no load balancer is told, so 1 s.
DIRECT_INGRESS_ENV = {
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
}


@dataclass(frozen=True)
class ServeSettings:
    """How the query endpoint runs. Defaults suit one machine; `infra/serve/` sets them for a
    cluster.

    Rate limits are per tenant (a token bucket of images: `images_per_second` refilled, up to
    `burst_images`); `max_queued_requests` makes an overloaded endpoint answer 503 at once
    instead of queueing without bound.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_images: int = 256  # images per model forward, summed over batched requests
    # 0: a batch is whatever queued while the previous forward ran (no wait for a lone request).
    batch_wait_timeout_s: float = 0.0
    max_images_per_request: int = 1024
    max_body_bytes: int = 64 * 1024 * 1024
    images_per_second: float = 2000.0
    burst_images: int = 4000
    max_ongoing_requests: int = 64
    max_queued_requests: int = 256
    model_replicas: int = 1
    model_cpus: float = 1.0
    use_gpu: bool = False
    # With one CPU model replica, the gateway can hold the model and call its forward in its own
    # process: no hop to a separate model replica (`colocated`; ignored with more replicas or a
    # GPU, where the model deployment scales on its own). Off by default: on two shared cores it
    # answers one image sooner but batches slower, since the gateway's work and the forward then
    # share one process (bench/results/serve_overhead.md).
    colocate_model: bool = False
    # EXPERIMENTAL (Ray Serve 2.60's direct ingress): the gateway replica serves HTTP itself, on
    # `host` and a port Serve allocates in 30000-31000, so clients skip Serve's proxy and the
    # body's RPC back to it. `Endpoint.url` and <home>/serve/endpoint.json name that port; `port`
    # still answers through the proxy. It needs a Serve instance this endpoint starts (Serve's
    # controller reads the flag when it starts; not from a Serve config file), and the port
    # changes whenever the gateway replica is replaced (a crash, new code; a model swap keeps it).
    direct_ingress: bool = False
    defence: bool = True
    token_refresh_s: float = 5.0
    # The clone policy, in distinct images per tenant (repeats of an image do not count): α of
    # the intentional errors and the monitor's volume signal are 0 up to `normal_volume` and
    # full from `cloning_volume`. The operator sets them to what its tenants normally ask; a
    # tenant that asks as many distinct images as a cloner needs is treated as one, by design.
    normal_volume: int = 2_000
    cloning_volume: int = 20_000
    # Serve's per-request access log and INFO lines on the console (off for the demo).
    request_logs: bool = True
    # Homomorphic (CKKS) models beside the ViT, at /v2/models/{name}-he/...: these names under
    # <home>/he-models, or every model there when None. Evaluations are CPU-heavy (seconds to
    # tens of seconds): one replica, few at a time, the rest refused with 503.
    he_models: tuple[str, ...] | None = None
    he_max_body_bytes: int = 64 * 1024 * 1024  # an infer body: base64 ciphertexts in JSON
    he_max_context_bytes: int = 192 * 1024 * 1024  # with Galois keys ≈ 97 MB at N=8192
    he_cpus: float = 1.0
    he_max_ongoing_requests: int = 2
    he_max_queued_requests: int = 8

    @property
    def colocated(self) -> bool:
        """Whether the gateway holds the model itself (see `colocate_model`)."""
        return self.colocate_model and self.model_replicas == 1 and not self.use_gpu

    def __post_init__(self) -> None:
        if self.he_models is not None:  # from JSON (a recorded endpoint, a Serve config): a list
            object.__setattr__(self, "he_models", tuple(str(name) for name in self.he_models))
        if not 0 < self.port < 65536:
            raise PatchveilError(f"port must be 1–65535, got {self.port}")
        for name in (
            "max_batch_images",
            "max_images_per_request",
            "max_body_bytes",
            "burst_images",
            "max_ongoing_requests",
            "max_queued_requests",
            "model_replicas",
            "he_max_body_bytes",
            "he_max_context_bytes",
            "he_max_ongoing_requests",
            "he_max_queued_requests",
        ):
            if int(getattr(self, name)) < 1:
                raise PatchveilError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.burst_images < self.max_images_per_request:
            raise PatchveilError(
                f"burst_images ({self.burst_images}) must be at least max_images_per_request "
                f"({self.max_images_per_request}), or the largest request could never pass"
            )
        if not 0 < self.normal_volume < self.cloning_volume:
            raise PatchveilError(
                f"need 0 < normal_volume < cloning_volume, got {self.normal_volume} and "
                f"{self.cloning_volume}"
            )
        if not 0 <= self.batch_wait_timeout_s <= 1:
            raise PatchveilError(
                f"batch_wait_timeout_s must be 0–1 s, got {self.batch_wait_timeout_s}"
            )
        if not self.images_per_second > 0:
            raise PatchveilError(
                f"images_per_second must be positive, got {self.images_per_second}"
            )


def serve_home(config: PlatformConfig) -> Path:
    """`<home>/serve`: the server secret, the operator token's hash and the query log."""
    return config.home / "serve"


def defence_settings(settings: ServeSettings) -> DefenceSettings:
    """The clone defence under the endpoint's volume policy."""
    return DefenceSettings(
        normal_volume=settings.normal_volume, cloning_volume=settings.cloning_volume
    )


def monitor_settings(settings: ServeSettings) -> MonitorSettings:
    """The monitor under the endpoint's volume policy."""
    return MonitorSettings(
        normal_volume=settings.normal_volume, cloning_volume=settings.cloning_volume
    )
