"""Per-tenant rate limits: a token bucket of images, so one tenant cannot starve the others."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class ImageRateLimiter:
    """Up to `burst` images at once per tenant, refilled at `per_second`."""

    def __init__(
        self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_second = per_second
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, tenant_id: str, images: int) -> float:
        """Spend `images` from the tenant's bucket: 0.0 when allowed, else the seconds to wait
        before the same request would be (nothing is spent then)."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.setdefault(tenant_id, _Bucket(float(self.burst), now))
            bucket.tokens = min(
                self.burst, bucket.tokens + (now - bucket.updated) * self.per_second
            )
            bucket.updated = now
            if images <= bucket.tokens:
                bucket.tokens -= images
                return 0.0
            missing = min(images, self.burst) - bucket.tokens
            return max(missing / self.per_second, 0.001) if images <= self.burst else math.inf
