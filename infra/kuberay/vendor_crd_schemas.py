"""Vendor KubeRay's CRD schemas (RayCluster, RayJob, RayService, API v1) for offline checks.

    python infra/kuberay/vendor_crd_schemas.py /path/to/kuberay-checkout [tag]

Reads `ray-operator/config/crd/bases/ray.io_{rayclusters,rayjobs,rayservices}.yaml` of the
checkout, keeps each CRD's `v1` openAPIV3Schema without its descriptions (they are four fifths of
the bytes and change nothing in a check), and writes `schemas/<kind>.v1.json.gz` here plus
`schemas/SOURCE` naming the KubeRay tag and commit they came from.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

CRDS = {"RayCluster": "rayclusters", "RayJob": "rayjobs", "RayService": "rayservices"}
HERE = Path(__file__).resolve().parent
SCHEMAS = HERE / "schemas"


def without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: without_descriptions(value) for key, value in node.items() if key != "description"
        }
    if isinstance(node, list):
        return [without_descriptions(value) for value in node]
    return node


def git_show(checkout: Path, revision: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", str(checkout), "show", f"{revision}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def main(checkout: Path, tag: str) -> None:
    commit = subprocess.run(
        ["git", "-C", str(checkout), "rev-list", "-n", "1", tag],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    SCHEMAS.mkdir(exist_ok=True)
    for kind, plural in CRDS.items():
        crd = yaml.safe_load(
            git_show(checkout, commit, f"ray-operator/config/crd/bases/ray.io_{plural}.yaml")
        )
        assert crd["spec"]["names"]["kind"] == kind, crd["spec"]["names"]
        (version,) = [entry for entry in crd["spec"]["versions"] if entry["name"] == "v1"]
        schema = without_descriptions(version["schema"]["openAPIV3Schema"])
        data = json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()
        # mtime=0: the same schema always gives the same bytes, so a re-vendoring diffs cleanly.
        (SCHEMAS / f"{kind}.v1.json.gz").write_bytes(gzip.compress(data, mtime=0))
    (SCHEMAS / "SOURCE").write_text(
        f"KubeRay {tag} (commit {commit}), ray-operator/config/crd/bases/, API version v1,\n"
        "descriptions removed; regenerate with infra/kuberay/vendor_crd_schemas.py\n"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "v1.7.0")
