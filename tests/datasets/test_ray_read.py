"""Ray Data reads a published version folder as is (manifest and temporary files skipped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from patchveil.datasets import publish_version, table_to_arrays, version_uri, write_shard
from patchveil.datasets.storage import TEMPORARY_PREFIX
from tests.datasets.factories import make_table


def test_read_parquet_over_a_version_folder(tmp_path: Path, ray_session: Any) -> None:
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    folder = version_uri(str(tmp_path), "cifar", 1)
    tables = [make_table(count=3, tenant_id="acme", seed=1), make_table(count=4, tenant_id="bolt")]
    shards = [write_shard(table, folder, f"{table.column('tenant_id')[0]}-0") for table in tables]
    published = publish_version(str(tmp_path), "cifar", 1, shards)
    # What a killed writer leaves behind must not be read.
    (Path(folder) / f"{TEMPORARY_PREFIX}0-acme-1.parquet").write_bytes(b"PAR1 half a shard")

    dataset = ray.data.read_parquet(published.uri)
    assert dataset.count() == 7
    assert dataset.schema().names == [
        "image",
        "label",
        "tenant_id",
        "key_version",
        "sample_id",
        "split",
    ]
    batch = dataset.take_batch(7, batch_format="pyarrow")
    arrays = table_to_arrays(batch)
    assert arrays.images.shape == (7, 8, 8, 3)
    expected = {
        sample_id: image
        for table in tables
        for sample_id, image in zip(
            table.column("sample_id").to_pylist(), table_to_arrays(table).images, strict=True
        )
    }
    for sample_id, image in zip(arrays.sample_ids, arrays.images, strict=True):
        np.testing.assert_array_equal(image, expected[sample_id])
