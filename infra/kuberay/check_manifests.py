"""Check the KubeRay manifests here against KubeRay's CRD schemas, offline and strictly.

    python infra/kuberay/check_manifests.py            # every *.yaml in this folder

Each document is validated against the vendored `schemas/<kind>.v1.json.gz` with JSON Schema,
strictly as `kubeconform -strict` would: an unknown field is an error (the API server would drop
it silently, so a typo such as `rayStartParam` would ship unnoticed). Then the trust boundary:
no platform pod (a RayJob's or RayService's, or a RayCluster group without a `tenant:<id>`
resource) mounts a volume or gets a key-store passphrase; a tenant group needs its resource.
Exits 1 and names every problem with its place in the manifest.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE / "schemas"
API_VERSION = "ray.io/v1"
KEYSTORE_ENV = "PATCHVEIL_KEYSTORE_PASSPHRASE"


def strict(schema: Any) -> Any:
    """The schema with `additionalProperties: false` on every object that lists its properties
    and does not say otherwise (Kubernetes prunes unknown fields; a check should name them)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in result
        and "additionalProperties" not in result
        and not result.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


def load_schema(kind: str) -> dict[str, Any]:
    path = SCHEMAS / f"{kind}.v1.json.gz"
    if not path.is_file():
        known = sorted(item.name.split(".")[0] for item in SCHEMAS.glob("*.v1.json.gz"))
        raise ValueError(f"no vendored schema for kind {kind!r}; known kinds: {', '.join(known)}")
    return strict(json.loads(gzip.decompress(path.read_bytes())))


def _where(path: Any) -> str:
    return "/".join(str(part) for part in path) or "(document)"


def schema_problems(document: dict[str, Any]) -> list[str]:
    if document.get("apiVersion") != API_VERSION:
        return [f"apiVersion is {document.get('apiVersion')!r}; KubeRay's is {API_VERSION!r}"]
    try:
        schema = load_schema(str(document.get("kind")))
    except ValueError as error:
        return [str(error)]
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{_where(error.absolute_path)}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda error: list(error.path))
    ]


def _cluster_specs(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    kind, spec = document.get("kind"), document.get("spec") or {}
    if kind == "RayCluster":
        yield "spec", spec
    elif kind == "RayJob" and "rayClusterSpec" in spec:
        yield "spec/rayClusterSpec", spec["rayClusterSpec"]
    elif kind == "RayService" and "rayClusterConfig" in spec:
        yield "spec/rayClusterConfig", spec["rayClusterConfig"]


def _groups(where: str, cluster: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield f"{where}/headGroupSpec", cluster.get("headGroupSpec") or {}
    for index, group in enumerate(cluster.get("workerGroupSpecs") or []):
        yield f"{where}/workerGroupSpecs/{index} ({group.get('groupName')})", group


def tenant_of(group: dict[str, Any]) -> str | None:
    """The tenant a group's nodes belong to (its `tenant:<id>` custom resource), if any."""
    resources = (group.get("rayStartParams") or {}).get("resources")
    if not resources:
        return None
    parsed = json.loads(json.loads(resources) if resources.startswith('"') else resources)
    tenants = [name.removeprefix("tenant:") for name in parsed if name.startswith("tenant:")]
    return tenants[0] if tenants else None


def boundary_problems(document: dict[str, Any]) -> list[str]:
    problems = []
    for where, cluster in _cluster_specs(document):
        for place, group in _groups(where, cluster):
            pod = (group.get("template") or {}).get("spec") or {}
            tenant = tenant_of(group)
            if tenant is not None and document.get("kind") != "RayCluster":
                problems.append(
                    f"{place}: a {document['kind']} runs platform work only; tenant "
                    f"{tenant!r} nodes belong to the long-lived RayCluster"
                )
            if tenant is not None:
                continue
            if pod.get("volumes"):
                problems.append(
                    f"{place}: a platform pod mounts volumes "
                    f"({', '.join(v.get('name', '?') for v in pod['volumes'])}); "
                    "only a tenant's own group may (its key store)"
                )
            for container in pod.get("containers") or []:
                names = {entry.get("name") for entry in container.get("env") or []}
                if KEYSTORE_ENV in names:
                    problems.append(
                        f"{place}: container {container.get('name')} of a platform "
                        f"pod gets {KEYSTORE_ENV}; only tenant nodes may"
                    )
    return problems


def check_file(path: Path) -> list[str]:
    problems = []
    for index, document in enumerate(yaml.safe_load_all(path.read_text())):
        if document is None:
            continue
        label = f"{path.name}[{index}] {document.get('kind')} {document.get('metadata', {}).get('name')}"
        problems += [f"{label}: {problem}" for problem in schema_problems(document)]
        problems += [f"{label}: {problem}" for problem in boundary_problems(document)]
    return problems


def main(paths: list[Path]) -> int:
    problems = [problem for path in paths for problem in check_file(path)]
    for problem in problems:
        print(problem, file=sys.stderr)
    checked = ", ".join(path.name for path in paths)
    print(f"{'FAILED' if problems else 'ok'}: {checked} ({len(problems)} problem(s))")
    return 1 if problems else 0


if __name__ == "__main__":
    targets = [Path(arg) for arg in sys.argv[1:]] or sorted(HERE.glob("*.yaml"))
    sys.exit(main(targets))
