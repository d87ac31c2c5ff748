"""The KubeRay manifests pass KubeRay's CRD schemas (vendored, strict) and the trust boundary."""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

KUBERAY = Path(__file__).resolve().parents[2] / "infra" / "kuberay"


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_manifests", KUBERAY / "check_manifests.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _checker()


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((KUBERAY / name).read_text()) if doc]


def test_every_manifest_passes_the_schema_and_the_boundary() -> None:
    manifests = sorted(KUBERAY.glob("*.yaml"))
    assert {path.name for path in manifests} >= {
        "raycluster.yaml",
        "rayjob-train.yaml",
        "rayservice-query.yaml",
    }
    for path in manifests:
        assert check.check_file(path) == [], path.name
    kinds = {doc["kind"] for path in manifests for doc in documents(path.name)}
    assert kinds == {"RayCluster", "RayJob", "RayService"}


def test_a_typo_a_bad_quantity_and_a_wrong_type_are_named() -> None:
    (job,) = documents("rayjob-train.yaml")
    broken = copy.deepcopy(job)
    group = broken["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    group["rayStartParam"] = group.pop("rayStartParams")
    group["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "48GB"
    broken["spec"]["shutdownAfterJobFinishes"] = "yes"
    problems = "\n".join(check.schema_problems(broken))
    assert "'rayStartParam' was unexpected" in problems
    assert "limits/memory: '48GB' does not match" in problems
    assert "shutdownAfterJobFinishes: 'yes' is not of type 'boolean'" in problems
    assert check.schema_problems({**job, "kind": "RayCron"})[0].startswith(
        "no vendored schema for kind 'RayCron'"
    )


def test_a_platform_pod_with_a_key_store_is_refused() -> None:
    (service,) = documents("rayservice-query.yaml")
    leaky = copy.deepcopy(service)
    pod = leaky["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    pod["volumes"] = [{"name": "keys", "persistentVolumeClaim": {"claimName": "hospital-a-keys"}}]
    pod["containers"][0]["env"] = [{"name": "PATCHVEIL_KEYSTORE_PASSPHRASE", "value": "x"}]
    problems = "\n".join(check.boundary_problems(leaky))
    assert "a platform pod mounts volumes (keys)" in problems
    assert "gets PATCHVEIL_KEYSTORE_PASSPHRASE" in problems
    assert check.schema_problems(leaky) == []  # the schema alone would let it through


def test_only_tenant_groups_hold_a_key_store_and_each_names_its_tenant() -> None:
    (cluster,) = documents("raycluster.yaml")
    tenants = {
        group["groupName"]: check.tenant_of(group) for group in cluster["spec"]["workerGroupSpecs"]
    }
    assert tenants["tenant-hospital-a"] == "hospital-a"
    assert tenants["cpu"] is None and tenants["gpu"] is None
    # Platform groups offer `platform`, which training workers then ask for (ray_train.py).
    for group in cluster["spec"]["workerGroupSpecs"]:
        if tenants[group["groupName"]] is None:
            assert json.loads(json.loads(group["rayStartParams"]["resources"])) == {"platform": 1}


@pytest.mark.parametrize("name", ["rayjob-train.yaml", "rayservice-query.yaml"])
def test_jobs_and_services_run_platform_code_that_exists(name: str) -> None:
    (document,) = documents(name)
    if document["kind"] == "RayService":
        (application,) = yaml.safe_load(document["spec"]["serveConfigV2"])["applications"]
        module, _, function = application["import_path"].partition(":")
        source = Path(__file__).resolve().parents[2] / (module.replace(".", "/") + ".py")
        defined = {
            node.name for node in ast.parse(source.read_text()).body if hasattr(node, "name")
        }
        assert function in defined
    else:
        assert document["spec"]["entrypoint"].startswith("patchveil train ")
