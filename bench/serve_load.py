"""Load on the running endpoint: `python bench/serve_load.py [--clients 50 --seconds 60]`.

A bounded asyncio client: `--clients` concurrent clients, each sending one request of
`--images` freshly encrypted images after another for `--seconds`, spread over three tenants
(each within its rate limit). Counts every non-200 as an error and reports p50/p99 latency and
the images answered per second. Writes bench/results/serve_load.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from serve_model import MODEL_NAME, endpoint_running, served_platform

from patchveil.reporting import provenance, provenance_markdown, write_json, write_text
from patchveil.tenants.client import Tenant

RESULTS = Path("bench/results")
TENANTS = ("tenant-1", "tenant-2", "tenant-3")


def _binary_body(ciphertexts: np.ndarray) -> tuple[bytes, dict[str, str]]:
    tensor = {
        "name": "images",
        "datatype": "UINT8",
        "shape": list(ciphertexts.shape),
        "parameters": {"binary_data_size": ciphertexts.nbytes},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    return header + ciphertexts.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


async def _client(
    url: str, token: str, bodies: list[tuple[bytes, dict[str, str]]], stop_at: float
) -> tuple[list[float], list[int]]:
    latencies, errors = [], []
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        index = 0
        while time.monotonic() < stop_at:
            body, headers = bodies[index % len(bodies)]
            index += 1
            started = time.perf_counter()
            response = await http.post(
                f"/v2/models/{MODEL_NAME}/infer",
                content=body,
                headers={"Authorization": f"Bearer {token}", **headers},
            )
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                errors.append(response.status_code)
    return latencies, errors


async def _load(url: str, platform: Any, args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    bodies: dict[str, list[tuple[bytes, dict[str, str]]]] = {}
    for tenant_id in TENANTS:
        tenant = Tenant(tenant_id, platform.key_store)
        bodies[tenant_id] = [
            _binary_body(
                tenant.encrypt_query(
                    platform.test.images[rng.choice(len(platform.test.images), args.images)]
                ).images
            )
            for _ in range(8)
        ]
    started = time.monotonic()
    stop_at = started + args.seconds
    results = await asyncio.gather(
        *(
            _client(
                url,
                platform.tokens[TENANTS[index % len(TENANTS)]],
                bodies[TENANTS[index % len(TENANTS)]],
                stop_at,
            )
            for index in range(args.clients)
        )
    )
    elapsed = time.monotonic() - started
    latencies = np.concatenate([np.asarray(lat) for lat, _ in results])
    errors = [code for _, codes in results for code in codes]
    return {
        "clients": args.clients,
        "seconds": round(elapsed, 1),
        "images_per_request": args.images,
        "requests": len(latencies),
        "errors": len(errors),
        "error_statuses": sorted(set(errors)),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "images_per_second": round(len(latencies) * args.images / elapsed, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from patchveil.serve.settings import ServeSettings

    platform = served_platform()
    settings = ServeSettings(images_per_second=1e5, burst_images=10**6)
    with endpoint_running(platform, settings) as endpoint:
        measured = asyncio.run(_load(endpoint.url, platform, args))
    return {**provenance(), **measured}


def markdown(result: dict[str, Any]) -> str:
    return (
        "# Load on the query endpoint\n\n"
        f"{result['clients']} concurrent clients for {result['seconds']} s on 127.0.0.1, each "
        f"sending {result['images_per_request']} freshly encrypted CIFAR-10 test images per "
        "request (binary tensors), three tenants, one model replica and one gateway on this "
        "machine's CPUs.\n\n"
        "| requests | errors | p50 (ms) | p99 (ms) | images/s |\n|---|---|---|---|---|\n"
        f"| {result['requests']} | {result['errors']} | {result['p50_ms']} | {result['p99_ms']} | "
        f"{result['images_per_second']} |\n\n"
        "Latency is queueing-dominated: 50 clients share one CPU model replica, so p50 is about "
        "the time to serve the requests ahead in the queue.\n\n"
        f"{provenance_markdown(result)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--images", type=int, default=4)
    args = parser.parse_args()
    result = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "serve_load.json", result)
    write_text(RESULTS / "serve_load.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
