"""Datasets and checkpoints on S3 (moto on 127.0.0.1) through pyarrow's S3 filesystem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.services import INFRA_TESTS_ENV, S3Endpoint

REPOSITORY = Path(__file__).resolve().parents[2]
SCENARIO_TIMEOUT_S = 300

# A fresh process with its own Ray (~40 s on an idle 2-core machine, minutes on a busy one) does
# not fit the default suite's budget: `.ci/run` runs it after `make test`.
pytestmark = pytest.mark.skipif(
    os.environ.get(INFRA_TESTS_ENV) != "1",
    reason=f"starts its own Ray: set {INFRA_TESTS_ENV}=1 (as .ci/run does) to run it",
)


def make_bucket(endpoint: S3Endpoint) -> str:
    """A fresh bucket; pyarrow creates buckets only when told it may."""
    import pyarrow.fs as pafs

    bucket = f"patchveil-{uuid.uuid4().hex[:12]}"
    filesystem = pafs.S3FileSystem(
        access_key=endpoint.environment["AWS_ACCESS_KEY_ID"],
        secret_key=endpoint.environment["AWS_SECRET_ACCESS_KEY"],
        endpoint_override=endpoint.url,
        allow_bucket_creation=True,
    )
    filesystem.create_dir(bucket)
    return bucket


@pytest.mark.s3
@pytest.mark.slow
def test_onboarding_training_checkpoint_and_card_live_on_s3(
    tmp_path: Path, s3_endpoint: S3Endpoint, prefect_harness: dict[str, Path]
) -> None:
    from prefect.settings import PREFECT_API_URL

    bucket = make_bucket(s3_endpoint)
    home = tmp_path / "home"
    environment = {
        **{name: value for name, value in os.environ.items() if not name.startswith("RAY_")},
        **s3_endpoint.environment,
        "PATCHVEIL_HOME": str(home),
        "PATCHVEIL_DATASET_ROOT": f"s3://{bucket}/datasets",
        "PATCHVEIL_CHECKPOINT_ROOT": f"s3://{bucket}/checkpoints",
        "PREFECT_HOME": str(tmp_path / "prefect"),
        # The session's Prefect server: the scenario's flows run against it, none is started.
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    for name in ("PATCHVEIL_REGISTRY_URL", "PATCHVEIL_KEYSTORE_PASSPHRASE"):
        environment.pop(name, None)
    # A fresh process: the S3 endpoint must be in the environment before Ray starts its workers.
    run = subprocess.run(
        [sys.executable, "-m", "tests.infra.s3_scenario", str(tmp_path)],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT_S,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])

    datasets, checkpoints = f"s3://{bucket}/datasets/", f"s3://{bucket}/checkpoints/"
    assert result["dataset_uri"].startswith(datasets)
    assert result["shard_uris"] and all(uri.startswith(datasets) for uri in result["shard_uris"])
    assert set(result["shard_uris"]) <= set(result["objects"])
    assert result["checkpoint_uri"].startswith(checkpoints)
    assert result["registry_checkpoint_uri"] == result["checkpoint_uri"]
    assert result["model_card_uri"].startswith(checkpoints)
    assert result["model_card_uri"] in result["objects"]
    assert result["card_equals_registry"] and result["model_in_eval_mode"]
    assert result["model_classes"] == 10
    # The in-process run's checkpoint reached S3 whole (no folder rename there), the metadata
    # file among its objects, nothing staged left behind.
    in_process = result["in_process_checkpoint_uri"]
    assert in_process.startswith(checkpoints) and in_process.endswith("checkpoint_epoch=0001")
    assert f"{in_process}/checkpoint.json" in result["objects"]
    assert result["in_process_model_in_eval_mode"]
    assert not [uri for uri in result["objects"] if "/_tmp-" in uri]
    # Nothing went to local folders: the home keeps only the registry, logs and the tenant side.
    assert result["local_files"] == []
