"""Small encrypted-looking shard tables for dataset tests (random bytes stand in for ciphertext)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from patchveil.datasets.schema import encrypted_batch_to_table


def make_table(
    count: int = 4,
    image_size: int = 8,
    tenant_id: str = "acme",
    key_version: int = 2,
    cipher: str = "conventional",
    block_size: int = 4,
    seed: int = 0,
) -> pa.Table:
    images = np.random.default_rng(seed).integers(
        0, 256, (count, image_size, image_size, 3), dtype=np.uint8
    )
    return encrypted_batch_to_table(
        images,
        labels=np.arange(count) % 10,
        tenant_id=tenant_id,
        key_version=key_version,
        sample_ids=[f"{tenant_id}-{seed}-{index}" for index in range(count)],
        cipher_name=cipher,
        block_size=block_size,
        image_size=image_size,
    )
