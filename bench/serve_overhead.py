"""What the endpoint costs over calling the model in-process: `python bench/serve_overhead.py`.

The same model version, in the same run: (1) latency of one image, sequential requests over HTTP
versus `LoadedModel.forward` on one image in this process (p50 difference); (2) throughput,
concurrent binary-tensor requests that Serve batches versus in-process forwards of batches of the
same size (ratio). Both sides answer with embeddings and probabilities; the endpoint adds auth,
parsing, the clone defence, the monitor's log and the response.

Each endpoint configuration in `CONFIGURATIONS` is started in turn on a fresh Ray (the default
one, `ServeSettings()`'s, gives the headline numbers); `--configurations` picks some.
Writes bench/results/serve_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from serve_load import _binary_body
from serve_model import MODEL_NAME, endpoint_running, served_platform

from patchveil.registry.registry import Registry
from patchveil.reporting import provenance, provenance_markdown, write_json, write_text
from patchveil.serve.model_host import LoadedModel, ModelRef
from patchveil.serve.settings import ServeSettings
from patchveil.tenants.client import Tenant

RESULTS = Path("bench/results")
# name → (what it is, ServeSettings overrides); DEFAULT is what `ServeSettings()` serves.
CONFIGURATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "handle": (
        "model in its own replica, behind a Serve handle (the default)",
        {"colocate_model": False},
    ),
    "colocated": ("model in the gateway (`colocate_model`)", {"colocate_model": True}),
    "handle-direct": (
        "model in its own replica, direct ingress (experimental)",
        {"colocate_model": False, "direct_ingress": True},
    ),
    "direct": (
        "model in the gateway, direct ingress (experimental)",
        {"colocate_model": True, "direct_ingress": True},
    ),
}
DEFAULT = "handle"


def _in_process(
    platform: Any, one: np.ndarray, batches: list[np.ndarray], reps: int
) -> dict[str, float]:
    with Registry(platform.config.registry_url) as registry:
        record = registry.list_model_versions(MODEL_NAME)[-1]
    model = LoadedModel(ModelRef(record.name, record.version, record.checkpoint_uri))
    threads = torch.get_num_threads()

    def p50_of_one() -> float:
        model.forward(one)  # warm-up
        single = []
        for _ in range(reps):
            started = time.perf_counter()
            model.forward(one)
            single.append((time.perf_counter() - started) * 1000)
        return statistics.median(single)

    p50 = p50_of_one()
    # One image on one torch thread, for comparison only: the endpoint's model uses all of its
    # CPUs' threads for every batch.
    torch.set_num_threads(1)
    one_thread = p50_of_one()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    images = 0
    for batch in batches:
        model.forward(batch)
        images += len(batch)
    return {
        "p50_ms": p50,
        "images_per_second": images / (time.perf_counter() - started),
        "p50_ms_one_thread": one_thread,
    }


async def _throughput(
    url: str, token: str, bodies: list[tuple[bytes, dict[str, str]]], images: int, clients: int
) -> float:
    queue = list(bodies)
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:

        async def worker() -> None:
            while queue:
                body, headers = queue.pop()
                response = await http.post(
                    f"/v2/models/{MODEL_NAME}/infer",
                    content=body,
                    headers={"Authorization": f"Bearer {token}", **headers},
                )
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return len(bodies) * images / (time.perf_counter() - started)


def _endpoint(
    url: str,
    token: str,
    one: tuple[bytes, dict[str, str]],
    bodies: list[tuple[bytes, dict[str, str]]],
    images: int,
    reps: int,
    clients: int,
) -> dict[str, float]:
    single = []
    stages: dict[str, list[float]] = {}
    with httpx.Client(base_url=url, timeout=60) as http:
        headers = {"Authorization": f"Bearer {token}", **one[1]}
        http.post(f"/v2/models/{MODEL_NAME}/infer", content=one[0], headers=headers)  # warm-up
        for _ in range(reps):
            started = time.perf_counter()
            response = http.post(f"/v2/models/{MODEL_NAME}/infer", content=one[0], headers=headers)
            single.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            for name, value in server_timing(response.headers.get("server-timing", "")).items():
                stages.setdefault(name, []).append(value)
    return {
        "p50_ms": statistics.median(single),
        "images_per_second": asyncio.run(_throughput(url, token, bodies, images, clients)),
        "gateway_p50_ms": {name: statistics.median(values) for name, values in stages.items()},
    }


def server_timing(header: str) -> dict[str, float]:
    """`auth;dur=0.12, model;dur=4.1` → {"auth": 0.12, "model": 4.1} (ms)."""
    found = {}
    for part in filter(None, (piece.strip() for piece in header.split(","))):
        name, _, duration = part.partition(";dur=")
        found[name] = float(duration)
    return found


def _cpu_ticks() -> tuple[int, int]:
    """(steal, all) CPU ticks so far, from Linux's /proc/stat: steal is time the hypervisor gave
    the machine's CPUs to someone else."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split()[1:11]]
    return fields[7], sum(fields)


def _median_of(values: list[Any]) -> Any:
    """The median of each number across equal-shaped (nested) dicts."""
    if isinstance(values[0], dict):
        return {key: _median_of([value[key] for value in values]) for key in values[0]}
    return round(statistics.median(values), 3)


def run(args: argparse.Namespace) -> dict[str, Any]:
    platform = served_platform()
    tenant = Tenant("benign-1", platform.key_store)
    rng = np.random.default_rng(0)
    one = tenant.encrypt_query(platform.test.images[:1]).images
    batches = [
        tenant.encrypt_query(
            platform.test.images[rng.choice(len(platform.test.images), args.batch)]
        ).images
        for _ in range(args.batches)
    ]
    # The model gets the threads the in-process forward has: the same compute, so the
    # difference is the endpoint's own work.
    threads = torch.get_num_threads()
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in args.configurations}
    for round_number in range(1, args.rounds + 1):
        for name in args.configurations:
            steal, ticks = _cpu_ticks()
            # Measured again next to each endpoint, so that both sides see the same machine.
            in_process = _in_process(platform, one, batches, args.reps)
            settings = ServeSettings(
                images_per_second=1e6,
                burst_images=10**7,
                max_batch_images=args.batch * 4,
                model_cpus=float(threads),
                **CONFIGURATIONS[name][1],
            )
            print(f"round {round_number}, endpoint: {CONFIGURATIONS[name][0]}", flush=True)
            with endpoint_running(platform, settings) as endpoint:
                over_http = _endpoint(
                    endpoint.url,
                    platform.tokens["benign-1"],
                    _binary_body(one),
                    [_binary_body(batch) for batch in batches],
                    args.batch,
                    args.reps,
                    args.clients,
                )
            steal_after, ticks_after = _cpu_ticks()
            rounds[name].append(
                {
                    "in_process": {k: round(v, 2) for k, v in in_process.items()},
                    "endpoint": {
                        k: round(v, 2) for k, v in over_http.items() if k != "gateway_p50_ms"
                    },
                    # Where one image's time goes (medians of the gateway's Server-Timing, ms):
                    # the rest of the client's time is HTTP (and Serve's proxy, unless direct
                    # ingress); `model` includes the batching, and the hop to a model replica if
                    # there is one.
                    "gateway_p50_ms": {
                        k: round(v, 2) for k, v in over_http["gateway_p50_ms"].items()
                    },
                    "p50_delta_ms": round(over_http["p50_ms"] - in_process["p50_ms"], 2),
                    "throughput_ratio": round(
                        over_http["images_per_second"] / in_process["images_per_second"], 3
                    ),
                    "cpu_steal_share": round(
                        (steal_after - steal) / max(1, ticks_after - ticks), 3
                    ),
                }
            )
    # Each configuration: the median of its rounds, and the rounds themselves.
    measured = {
        name: {
            "description": CONFIGURATIONS[name][0],
            "settings": CONFIGURATIONS[name][1],
            **_median_of(measured_rounds),
            "rounds": measured_rounds,
        }
        for name, measured_rounds in rounds.items()
    }
    configuration = DEFAULT if DEFAULT in measured else next(iter(measured))
    headline = measured[configuration]
    return {
        **provenance(),
        "reps": args.reps,
        "batch_images": args.batch,
        "batches": args.batches,
        "clients": args.clients,
        "rounds": args.rounds,
        "torch_threads": threads,
        # The headline: the default configuration's numbers (as before, one configuration).
        "configuration": configuration,
        "in_process": headline["in_process"],
        "endpoint": headline["endpoint"],
        "gateway_p50_ms": headline["gateway_p50_ms"],
        "p50_delta_ms": headline["p50_delta_ms"],
        "throughput_ratio": headline["throughput_ratio"],
        "configurations": measured,
    }


def markdown(result: dict[str, Any]) -> str:
    configurations = result["configurations"]

    def per_round(entry: dict[str, Any], key: str) -> str:
        return ", ".join(str(measured[key]) for measured in entry["rounds"])

    rows = [
        f"| {entry['description']} | {entry['endpoint']['p50_ms']} | "
        f"{entry['in_process']['p50_ms']} | **{entry['p50_delta_ms']}** "
        f"({per_round(entry, 'p50_delta_ms')}; {_goal(entry['p50_delta_ms'] <= 5)}) | "
        f"{entry['endpoint']['images_per_second']} | {entry['in_process']['images_per_second']} "
        f"| **{entry['throughput_ratio']}** ({per_round(entry, 'throughput_ratio')}; "
        f"{_goal(entry['throughput_ratio'] >= 0.8)}) | {per_round(entry, 'cpu_steal_share')} |"
        for entry in configurations.values()
    ]
    headline = configurations[result["configuration"]]
    one_thread = ", ".join(
        str(measured["in_process"]["p50_ms_one_thread"])
        for entry in configurations.values()
        for measured in entry["rounds"]
    )
    return (
        "# The endpoint's overhead over an in-process forward\n\n"
        "| endpoint | one image over HTTP, p50 (ms) | in-process `LoadedModel.forward`, p50 "
        "(ms) | difference, ms (each round; goal ≤ 5) | batched images/s over HTTP | "
        "in-process images/s | ratio (each round; goal ≥ 0.8) | CPU steal (each round) |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"The default endpoint, {headline['description'].removesuffix(' (the default)')}: p50 "
        f"latency difference {result['p50_delta_ms']} ms (goal ≤ 5 ms: "
        f"{_goal(result['p50_delta_ms'] <= 5)}); batched throughput ratio "
        f"{result['throughput_ratio']} (goal ≥ 0.8: {_goal(result['throughput_ratio'] >= 0.8)}). "
        f"Medians of {result['rounds']} rounds; in each round every endpoint on a fresh Ray, the "
        "in-process forward measured again just before it; CPU steal is the share of CPU time the "
        f"hypervisor gave others meanwhile. Batches of {result['batch_images']} images, "
        f"{result['clients']} concurrent clients, {result['reps']} sequential single-image "
        f"requests, the model with {result['torch_threads']} torch threads (as many as the "
        "in-process forward), same machine. One image in-process on one torch thread instead: "
        f"{one_thread} ms.\n\n"
        + "".join(_breakdown(entry) for entry in configurations.values())
        + provenance_markdown(result)
    )


def _goal(met: bool) -> str:
    return "met" if met else "not met"


def _breakdown(entry: dict[str, Any]) -> str:
    stages = entry.get("gateway_p50_ms") or {}
    if "total" not in stages:
        return ""
    client, gateway = entry["endpoint"]["p50_ms"], stages["total"]
    rows = [f"| {name} | {value} |" for name, value in stages.items() if name != "total"]
    outside = (
        "HTTP to the gateway replica (client p50 − gateway p50)"
        if entry["settings"].get("direct_ingress")
        else "HTTP and Serve's proxy (client p50 − gateway p50)"
    )
    return (
        f"Where one image's time goes, {entry['description']} (medians, ms, of the gateway's "
        "`Server-Timing`, median of the rounds):\n\n"
        "| stage | ms |\n|---|---|\n" + "\n".join(rows) + f"\n| gateway total | {gateway} |\n"
        f"| {outside} | {round(client - gateway, 2)} |\n"
        f"| of `model`: beyond the in-process forward | "
        f"{round(stages.get('model', 0.0) - entry['in_process']['p50_ms'], 2)} |\n\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="every configuration, this often")
    parser.add_argument(
        "--configurations",
        nargs="+",
        choices=list(CONFIGURATIONS),
        default=list(CONFIGURATIONS),
        help="endpoint configurations to measure, in this order",
    )
    args = parser.parse_args()
    result = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "serve_overhead.json", result)
    write_text(RESULTS / "serve_overhead.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
