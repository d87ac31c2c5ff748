"""An in-process run's checkpoint folder persisted to S3 (moto on 127.0.0.1): no folder rename."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchveil.datasets import storage
from patchveil.models.checkpoint import CHECKPOINT_META_FILE
from patchveil.models.ray_train import _persist_local_checkpoint
from tests.infra.test_object_storage import make_bucket
from tests.services import S3Endpoint


def checkpoint_folder(folder: Path, epoch: int) -> Path:
    """A stand-in checkpoint folder: a nested file, a weights file, the metadata file."""
    (folder / "extra").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights-%d" % epoch)
    (folder / "extra" / "state.bin").write_bytes(b"state")
    (folder / CHECKPOINT_META_FILE).write_text(f'{{"epoch": {epoch}}}')
    return folder


@pytest.mark.s3
def test_a_local_checkpoint_folder_is_uploaded_file_by_file_and_replaces_an_older_one(
    tmp_path: Path, s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_endpoint.environment.items():
        monkeypatch.setenv(name, value)
    root = f"s3://{make_bucket(s3_endpoint)}/checkpoints"

    for attempt in (1, 2):  # the second replaces the first at the same epoch
        local = checkpoint_folder(tmp_path / f"local-{attempt}", attempt)
        uri = _persist_local_checkpoint(str(local), root, "run", epoch=1)
        assert not local.exists()

    assert uri == f"{root}/run/checkpoint_epoch=0001"
    assert storage.list_names(uri) == sorted(["extra", "model.safetensors", CHECKPOINT_META_FILE])
    assert storage.read_bytes(f"{uri}/model.safetensors") == b"weights-2"
    assert storage.read_bytes(f"{uri}/extra/state.bin") == b"state"
    assert storage.read_bytes(f"{uri}/{CHECKPOINT_META_FILE}") == b'{"epoch": 2}'
    assert storage.list_names(f"{root}/run") == ["checkpoint_epoch=0001"]  # nothing staged
