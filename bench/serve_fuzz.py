"""Bad input against the running endpoint: `python bench/serve_fuzz.py [--requests 1200]`.

Generates malformed requests (headers, tokens, JSON, shapes, dtypes, values, binary-tensor
framing, sizes, routes, methods, options), seeded, and sends them to the real endpoint over HTTP.
Every answer must be a 4xx with a JSON `{"error": ...}`; a 5xx or a non-JSON error is a finding.
Also checks that one tenant's token reads neither another tenant's usage nor the operator's
risk. Writes bench/results/serve_fuzz.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from serve_model import MODEL_NAME, endpoint_running, served_platform

from patchveil.reporting import provenance, provenance_markdown, write_json, write_text
from patchveil.serve.settings import ServeSettings

RESULTS = Path("bench/results")
Request = dict[str, Any]  # method, path, headers, content


def _tensor(**fields: Any) -> dict[str, Any]:
    base = {"name": "images", "datatype": "UINT8", "shape": [1, 32, 32, 3], "data": [0] * 3072}
    base.update(fields)
    return {key: value for key, value in base.items() if value is not _DROP}


_DROP = object()


def _json_body(document: Any) -> bytes:
    return json.dumps(document).encode()


def _cases(rng: random.Random, token: str) -> Iterator[tuple[str, Request]]:
    """(category, request) pairs; each is bad in at least one way."""
    infer = f"/v2/models/{MODEL_NAME}/infer"
    auth = {"Authorization": f"Bearer {token}"}
    good_data = [0] * 3072

    def post(body: bytes, headers: dict[str, str] | None = None, path: str = infer) -> Request:
        return {
            "method": "POST",
            "path": path,
            "headers": {**auth, **(headers or {})},
            "content": body,
        }

    # Headers and tokens.
    for header in (
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic abc",
        "bearer wrong",
        "Bearer " + "x" * 4000,
        "Bearer " + token[:-1],
        "Bearer " + token + "x",
        "Token " + token,
        "Bearer \t",
    ):
        headers = {} if header is None else {"Authorization": header}
        yield (
            "auth",
            {
                "method": "POST",
                "path": infer,
                "headers": headers,
                "content": _json_body({"inputs": [_tensor()]}),
            },
        )
    # Not JSON, or JSON of the wrong kind.
    for body in (
        b"",
        b"{",
        b"null",
        b"[]",
        b"42",
        b'"inputs"',
        b"{}",
        b'{"inputs": null}',
        b'{"inputs": {}}',
        b"\xff\xfe\x00",
        b'{"inputs": [1]}',
        b"[" * 50_000,
        b'{"inputs": []}',
        b'{"inputs": [{}]}',
        bytes(rng.getrandbits(8) for _ in range(512)),
    ):
        yield "json", post(body)
    # Field types and values of the tensor.
    mutations: list[Callable[[], dict[str, Any]]] = [
        lambda: _tensor(name=rng.choice([None, 5, "", "image", "x" * 500, ["images"]])),
        lambda: _tensor(
            datatype=rng.choice(["FP32", "INT8", "uint8", "BYTES", "", None, 8, "UINT16"])
        ),
        lambda: _tensor(
            shape=rng.choice(
                [
                    [],
                    [1],
                    [1, 32, 32],
                    [1, 32, 32, 4],
                    [0, 32, 32, 3],
                    [-1, 32, 32, 3],
                    [2**40, 32, 32, 3],
                    [1, 31, 32, 3],
                    [1, 32, 32, 3, 1],
                    "1,32,32,3",
                    [1.0, 32, 32, 3],
                    [True, 32, 32, 3],
                    [1, 64, 64, 3],
                    [5000, 32, 32, 3],
                    None,
                    {"n": 1},
                ]
            )
        ),
        lambda: _tensor(
            data=rng.choice(
                [
                    None,
                    "abc",
                    5,
                    {},
                    [0] * 3071,
                    [0] * 3073,
                    [256, *good_data[1:]],
                    [-1, *good_data[1:]],
                    [0.5, *good_data[1:]],
                    ["0", *good_data[1:]],
                    [None, *good_data[1:]],
                    [[0, 0], [0]],
                    [True] * 3072,
                    [2**70, *good_data[1:]],
                    [[0] * 3072],
                    [],
                ]
            )
        ),
        lambda: _tensor(data=_DROP),
        lambda: _tensor(parameters=rng.choice([5, "x", [1], {"binary_data_size": 3072}])),
    ]
    for _ in range(420):
        yield "tensor", post(_json_body({"inputs": [rng.choice(mutations)()]}))
    # Request-level fields and options.
    for document in (
        {"inputs": [_tensor(), _tensor()]},
        {"id": 5, "inputs": [_tensor()]},
        {"id": "x" * 1000, "inputs": [_tensor()]},
        {"inputs": [_tensor()], "parameters": "x"},
        {"inputs": [_tensor()], "parameters": {"candidates": 1}},
        {"inputs": [_tensor()], "parameters": {"candidates": 11}},
        {"inputs": [_tensor()], "parameters": {"candidates": "3"}},
        {"inputs": [_tensor()], "parameters": {"candidates": 3, "result_key": "ab"}},
        {"inputs": [_tensor()], "parameters": {"candidates": 3, "result_key": 5}},
        {"inputs": [_tensor()], "parameters": {"result_key": "ab" * 32}},
        {"inputs": [_tensor()], "parameters": {"candidates": True}},
    ):
        for _ in range(8):
            yield "options", post(_json_body(document))
    # Binary-tensor framing.
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8).tobytes()
    for _ in range(200):
        size = rng.choice([0, 1, len(images) - 1, len(images) + 1, -5, "6144", None, 10**12])
        tensor = _tensor(shape=[2, 32, 32, 3], data=_DROP, parameters={"binary_data_size": size})
        if rng.random() < 0.2:
            tensor["data"] = [0]
        header = _json_body({"inputs": [tensor]})
        length = rng.choice(
            [
                str(len(header)),
                "0",
                "-1",
                "abc",
                str(len(header) + len(images) + 10),
                str(len(header) - 3),
            ]
        )
        payload = images[: rng.randrange(len(images) + 1)] if rng.random() < 0.3 else images
        yield "binary", post(header + payload, {"Inference-Header-Content-Length": length})
    # Size limits.
    for size in (65 * 1024 * 1024, 80 * 1024 * 1024):
        yield "size", post(b"{" + b" " * size + b"}")
    yield (
        "size",
        post(_json_body({"inputs": [_tensor(shape=[1025, 32, 32, 3], data=[0] * (1025 * 3072))]})),
    )
    # Routes and methods.
    for method, path in (
        ("GET", infer),
        ("PUT", infer),
        ("DELETE", infer),
        ("POST", "/v2/models/other/infer"),
        ("POST", "/v2/models//infer"),
        ("GET", "/v2/models/other"),
        ("GET", "/nope"),
        ("POST", "/v2/health/live"),
        ("GET", "/admin/risk"),
        ("GET", "/admin/alerts"),
        ("POST", "/v2/models/" + "x" * 3000 + "/infer"),
        ("GET", "/v2/models/%00/ready"),
    ):
        for _ in range(10):
            yield "route", {"method": method, "path": path, "headers": dict(auth), "content": b"{}"}


def run(args: argparse.Namespace) -> dict[str, Any]:
    platform = served_platform()
    token = platform.tokens["tenant-1"]
    rng = random.Random(args.seed)
    statuses: Counter[int] = Counter()
    by_category: dict[str, Counter[int]] = {}
    findings: list[dict[str, Any]] = []
    unsendable = 0
    settings = ServeSettings(images_per_second=1e6, burst_images=10**7)
    with (
        endpoint_running(platform, settings) as endpoint,
        httpx.Client(base_url=endpoint.url, timeout=120) as client,
    ):
        cases = list(_cases(rng, token))
        while len(cases) < args.requests:
            cases.extend(_cases(rng, token))
        for category, request in cases:
            try:
                response = client.request(
                    request["method"],
                    request["path"],
                    headers=request["headers"],
                    content=request["content"],
                )
            except httpx.LocalProtocolError:
                unsendable += 1  # httpx refuses to put it on the wire (e.g. a trailing space)
                continue
            statuses[response.status_code] += 1
            by_category.setdefault(category, Counter())[response.status_code] += 1
            try:
                message = response.json().get("error")
            except (json.JSONDecodeError, AttributeError):
                message = None
            if response.status_code >= 500 or response.status_code < 400 or not message:
                findings.append(
                    {
                        "category": category,
                        "status": response.status_code,
                        "body": response.text[:200],
                    }
                )
        # One tenant's token never reads another's usage or the operator's views.
        other = client.get(
            "/v2/tenant/usage", headers={"Authorization": f"Bearer {platform.tokens['tenant-2']}"}
        )
        isolation = {
            "own_usage_tenant": other.json().get("tenant_id"),
            "tenant_token_on_admin_risk": client.get(
                "/admin/risk", headers={"Authorization": f"Bearer {token}"}
            ).status_code,
            "tenant_token_on_admin_alerts": client.get(
                "/admin/alerts", headers={"Authorization": f"Bearer {token}"}
            ).status_code,
        }
    total = sum(statuses.values())
    return {
        **provenance(),
        "requests": total,
        "status_counts": {str(code): count for code, count in sorted(statuses.items())},
        "by_category": {
            name: {str(c): n for c, n in sorted(counts.items())}
            for name, counts in by_category.items()
        },
        "unsendable": unsendable,
        "server_errors": sum(count for code, count in statuses.items() if code >= 500),
        "findings": findings[:50],
        "isolation": isolation,
    }


def markdown(result: dict[str, Any]) -> str:
    rows = "\n".join(f"| {code} | {count} |" for code, count in result["status_counts"].items())
    categories = "\n".join(
        f"| {name} | {sum(counts.values())} | {', '.join(f'{c}: {n}' for c, n in counts.items())} |"
        for name, counts in result["by_category"].items()
    )
    verdict = (
        "no 5xx and every refusal a 4xx with a JSON message"
        if not result["findings"]
        else f"{len(result['findings'])} finding(s), listed in the JSON"
    )
    return (
        "# Bad input against the query endpoint\n\n"
        f"{result['requests']} generated bad requests over real HTTP: {verdict}.\n\n"
        f"| status | requests |\n|---|---|\n{rows}\n\n"
        f"| category | requests | statuses |\n|---|---|---|\n{categories}\n\n"
        f"Isolation: a tenant token on `/admin/risk` → {result['isolation']['tenant_token_on_admin_risk']}, "
        f"on `/admin/alerts` → {result['isolation']['tenant_token_on_admin_alerts']}; "
        f"`/v2/tenant/usage` answers only for the caller ({result['isolation']['own_usage_tenant']}).\n\n"
        f"{provenance_markdown(result)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "serve_fuzz.json", result)
    write_text(RESULTS / "serve_fuzz.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
