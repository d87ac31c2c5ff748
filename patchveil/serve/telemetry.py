"""Prometheus metrics of the gateway through `ray.serve.metrics` (exported with a `ray_` prefix):
queries, rejections, latency, the intentional error rate and the clone risk, per tenant."""

from __future__ import annotations

from collections.abc import Mapping

from ray.serve import metrics

_LATENCY_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]


class GatewayMetrics:
    """The gateway's metrics; tenant ids are tags (they are not secret), never images or keys."""

    def __init__(self) -> None:
        tags = ("tenant",)
        self.queries = metrics.Counter(
            "patchveil_images_queried", "images answered, per tenant", tag_keys=tags
        )
        self.requests = metrics.Counter(
            "patchveil_requests", "infer requests by HTTP status", tag_keys=("tenant", "status")
        )
        self.latency = metrics.Histogram(
            "patchveil_infer_latency_ms",
            "infer request latency at the gateway in ms",
            boundaries=_LATENCY_MS,
            tag_keys=tags,
        )
        self.error_rate = metrics.Gauge(
            "patchveil_intentional_error_rate", "the clone defence's current rate", tag_keys=tags
        )
        self.risk = metrics.Gauge(
            "patchveil_clone_risk", "clone risk score from 0 to 1", tag_keys=tags
        )
        self.alerts = metrics.Counter(
            "patchveil_clone_alerts", "times a tenant was flagged", tag_keys=tags
        )

    def rejected(self, tenant_id: str, status: int) -> None:
        self.requests.inc(tags={"tenant": tenant_id, "status": str(status)})

    def answered(
        self,
        tenant_id: str,
        images: int,
        seconds: float,
        error_rate: float,
        risk: float,
        newly_flagged: bool,
    ) -> None:
        tags = {"tenant": tenant_id}
        self.requests.inc(tags={"tenant": tenant_id, "status": "200"})
        self.queries.inc(images, tags=tags)
        self.latency.observe(seconds * 1000, tags=tags)
        self.error_rate.set(error_rate, tags=tags)
        self.risk.set(risk, tags=tags)
        if newly_flagged:
            self.alerts.inc(tags=tags)


def server_timing(stages: Mapping[str, float]) -> str:
    """A `Server-Timing` header value (W3C) from stage → seconds: where a request's time went on
    the gateway (the client sees the rest as network and proxy)."""
    return ", ".join(f"{name};dur={seconds * 1000:.2f}" for name, seconds in stages.items())
