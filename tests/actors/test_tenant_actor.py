"""The tenant actor on a real Ray: its key stays inside, shards decrypt exactly, it survives restarts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from patchveil.actors import TenantActor
from patchveil.config import PlatformConfig
from patchveil.datasets import read_shard, table_to_arrays
from patchveil.errors import CipherConfigError, ImageFormatError, PatchveilError, SourceError
from patchveil.pipelines.tenant_handle import call, tenant_actor
from patchveil.protocol import ActorStats, ShardJob
from patchveil.tenants.client import Tenant
from patchveil.tenants.keystore import KeyStore
from patchveil.tenants.samples import AUGMENT_NONCE_STRIDE, nonce_of
from tests.helpers import assert_no_key_material

TENANT = "actor-a"
IMAGES = 40


def write_npz(path: Path, count: int, size: int = 32, seed: int = 0) -> Path:
    generator = np.random.default_rng(seed)
    np.savez(
        path,
        images=generator.integers(0, 256, (count, size, size, 3), dtype=np.uint8),
        labels=np.arange(count) % 4,
        class_names=np.asarray(["ant", "bee", "cat", "dog"]),
    )
    return path


@pytest.fixture(scope="module")
def setup(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("actor")
    config = PlatformConfig(home=root / "home")
    key_store = root / "keys"
    actor = tenant_actor(TENANT, str(key_store), config)
    yield {
        "actor": actor,
        "config": config,
        "key_store": key_store,
        "source": str(write_npz(root / "source.npz", IMAGES)),
        "root": root,
    }
    ray_session.kill(actor)


def wait_for_restart(actor: Any, old_pid: int, attempts: int = 120) -> ActorStats:
    """Ask the actor for its stats until a new process answers (as the flows' retries would)."""
    from ray.exceptions import RayActorError

    for _ in range(attempts):
        try:
            stats = call(actor.stats.remote(), timeout=30)
        except RayActorError:  # ActorDiedError / ActorUnavailableError while it restarts
            stats = None
        if stats is not None and stats.pid != old_pid:
            return stats
        time.sleep(0.25)
    raise AssertionError("the actor did not come back in a new process")


def plain_images(source: str) -> np.ndarray:
    return np.load(source)["images"]


def test_the_key_is_created_inside_and_never_comes_out(setup: dict[str, Any]) -> None:
    actor = setup["actor"]
    created = call(actor.ensure_key.remote("disposable", 4, 32, {"group": "np_cs"}))
    assert created.created and created.key_version == 1
    again = call(actor.ensure_key.remote("disposable", 4, 32, {"group": "np_cs"}))
    assert not again.created and again.key_id == created.key_id
    with pytest.raises(CipherConfigError, match="already has a key for cipher 'disposable'"):
        call(actor.ensure_key.remote("conventional", 4, 32))
    key = KeyStore(setup["key_store"]).load(TENANT)
    answers = [created, again, call(actor.key_info.remote()), call(actor.stats.remote())]
    assert_no_key_material(key, [repr(answer) for answer in answers])
    local = TenantActor(TENANT, str(setup["key_store"]), setup["config"])
    assert repr(local) == f"TenantActor(tenant={TENANT!r})"
    with pytest.raises(TypeError, match="cannot be pickled"):
        actor.inspect_source.remote(key)  # a key cannot even be handed to an actor


def test_a_shard_decrypts_exactly_with_augmented_variants(setup: dict[str, Any]) -> None:
    actor, source = setup["actor"], setup["source"]
    call(actor.ensure_key.remote("disposable", 4, 32, {"group": "np_cs"}))
    plan = call(actor.plan_shards.remote(source, 16, 0.25, 0))
    splits = [shard.split for shard in plan.shards]
    assert splits == ["train", "train", "validation"]
    assert sum(len(shard.indices) for shard in plan.shards) == IMAGES
    indices = plan.shards[0].indices
    folder = str(setup["root"] / "staging")
    job = ShardJob(source, indices, folder, "actor-a-train-0", "train", 2, 100, plan.fingerprint)
    info = call(actor.encrypt_shard.remote(job)).shard
    assert info.rows == 3 * len(indices) and info.key_version == 1
    arrays = table_to_arrays(read_shard(info.uri))
    assert arrays.sample_ids[0] == f"{TENANT}:{100 + indices[0]}"
    assert f"{TENANT}:{100 + indices[0]}:aug2" in set(arrays.sample_ids)
    nonces = np.array([nonce_of(TENANT, sample) for sample in arrays.sample_ids])
    assert len(set(nonces.tolist())) == len(nonces)
    assert nonces.max() >= 2 * AUGMENT_NONCE_STRIDE
    tenant = Tenant(TENANT, setup["key_store"])
    decrypted = tenant.decrypt_rows(np.array(arrays.images), 1, nonces)
    originals = plain_images(source)[list(indices)]
    assert np.array_equal(decrypted[: len(indices)], originals)
    assert not np.array_equal(decrypted[len(indices) : 2 * len(indices)], originals)
    check = call(actor.validate_sample.remote(info.uri, source, indices, 100))
    assert check.decrypts_exactly and check.differs_from_plain
    assert check.checked == 3 * min(8, len(indices))


def test_rotation_reencrypts_under_the_new_key_version(setup: dict[str, Any]) -> None:
    actor, source = setup["actor"], setup["source"]
    call(actor.ensure_key.remote("disposable", 4, 32, {"group": "np_cs"}))
    folder = str(setup["root"] / "rotation")
    job = ShardJob(source, (0, 1, 2, 3), folder, "before", "validation")
    first = call(actor.encrypt_shard.remote(job)).shard
    rotated = call(actor.rotate_key.remote())
    assert rotated.key_version == first.key_version + 1
    written = call(actor.reencrypt_shard.remote(first.uri, folder, "after"))
    after = written.shard
    assert after.key_version == rotated.key_version and written.split == "validation"
    old, new = (table_to_arrays(read_shard(info.uri)) for info in (first, after))
    assert list(new.sample_ids) == list(old.sample_ids)
    assert not np.array_equal(new.images, old.images)
    check = call(actor.validate_sample.remote(after.uri, source, [0, 1, 2, 3]))
    assert check.decrypts_exactly and check.key_version == rotated.key_version
    with pytest.raises(PatchveilError, match="already under key version"):
        call(actor.reencrypt_shard.remote(after.uri, folder, "again"))


def test_queries_come_back_encrypted(setup: dict[str, Any]) -> None:
    actor = setup["actor"]
    call(actor.ensure_key.remote("disposable", 4, 32, {"group": "np_cs"}))
    queries = plain_images(setup["source"])[:3]
    encrypted = call(actor.encrypt_queries.remote(queries))
    assert encrypted.shape == queries.shape and encrypted.dtype == np.uint8
    assert not np.array_equal(encrypted, queries)
    # Per-image nonces are fresh for every query: the same image encrypts differently twice.
    assert not np.array_equal(call(actor.encrypt_queries.remote(queries)), encrypted)


def test_bad_sources_give_one_clear_error(setup: dict[str, Any]) -> None:
    actor, root = setup["actor"], setup["root"]
    call(actor.ensure_key.remote("disposable", 4, 32, {"group": "np_cs"}))
    with pytest.raises(SourceError, match="does not exist"):
        call(actor.inspect_source.remote(str(root / "missing.npz")))
    small = write_npz(root / "small.npz", 4, size=16)
    with pytest.raises(ImageFormatError, match=r"16×16 images, but tenant 'actor-a'"):
        call(actor.plan_shards.remote(str(small), 10, 0.0, 0))
    corrupt = root / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(SourceError, match="not a readable"):
        call(actor.inspect_source.remote(str(corrupt)))


def test_a_restarted_actor_reloads_its_key_from_the_store(
    setup: dict[str, Any], ray_session: Any
) -> None:
    actor = setup["actor"]
    before = call(actor.ensure_key.remote("disposable", 4, 32, {"group": "np_cs"}))
    pid = call(actor.stats.remote()).pid
    ray_session.kill(actor, no_restart=False)
    wait_for_restart(actor, pid)
    after = call(actor.key_info.remote())
    assert after.key_id == before.key_id and after.key_version == before.key_version


def test_one_actor_name_serves_one_key_store(setup: dict[str, Any]) -> None:
    with pytest.raises(PatchveilError, match="already runs with key store"):
        tenant_actor(TENANT, str(setup["root"] / "other-keys"), setup["config"])
    assert tenant_actor(TENANT, None, setup["config"])._actor_id == setup["actor"]._actor_id
