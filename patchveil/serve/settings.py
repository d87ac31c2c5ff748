"""The endpoint's settings in one typed place: where it listens, how it batches, what it refuses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from patchveil.config import PlatformConfig
from patchveil.errors import PatchveilError

APP_NAME = "patchveil"
# An OIP request's input tensor name; the response's outputs.
INPUT_NAME = "images"


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
    batch_wait_timeout_s: float = 0.005
    max_images_per_request: int = 1024
    max_body_bytes: int = 64 * 1024 * 1024
    images_per_second: float = 2000.0
    burst_images: int = 4000
    max_ongoing_requests: int = 64
    max_queued_requests: int = 256
    model_replicas: int = 1
    model_cpus: float = 1.0
    use_gpu: bool = False
    defence: bool = True
    token_refresh_s: float = 5.0

    def __post_init__(self) -> None:
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
        ):
            if int(getattr(self, name)) < 1:
                raise PatchveilError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.burst_images < self.max_images_per_request:
            raise PatchveilError(
                f"burst_images ({self.burst_images}) must be at least max_images_per_request "
                f"({self.max_images_per_request}), or the largest request could never pass"
            )
        if not self.images_per_second > 0:
            raise PatchveilError(
                f"images_per_second must be positive, got {self.images_per_second}"
            )


def serve_home(config: PlatformConfig) -> Path:
    """`<home>/serve`: the server secret, the operator token's hash and the query log."""
    return config.home / "serve"
