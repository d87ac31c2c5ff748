"""The tenant's Ray actor: holds the tenant's key and turns plain images into encrypted shards.

This is the tenant's side of the trust boundary. The actor opens the tenant's key store itself,
from its folder, and nothing that leaves it (return values, shards, logs, Ray objects) holds key
material or a plain pixel: methods return plain JSON-able dicts, or ciphertext.

Sample ids are `"<tenant_id>:<index>"`, where `index` is the tenant-local image index handed out
by the platform registry; the same integer is the nonce of per-image ciphers, so the tenant can
decrypt any row from its sample id alone. Augmented variants of a training image are
`"<tenant_id>:<index>:aug<k>"` with nonce `index + k * AUGMENT_NONCE_STRIDE`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from patchveil.config import RAY_NAMESPACE, PlatformConfig, check_tenant_id
from patchveil.datasets import storage
from patchveil.datasets.schema import (
    AUGMENTED_SUFFIX,
    SPLITS,
    ShardMetadata,
    encrypted_batch_to_table,
    table_to_arrays,
)
from patchveil.datasets.shards import read_shard, write_shard
from patchveil.errors import CipherConfigError, ImageFormatError, PatchveilError, SourceError
from patchveil.fsutil import atomic_path
from patchveil.tenants.augment import augment_variant, tenant_seed
from patchveil.tenants.ciphers import check_spec
from patchveil.tenants.client import Tenant
from patchveil.tenants.keys import CipherSpec, ParamValue
from patchveil.tenants.keystore import KeyStore
from patchveil.tenants.loaders import LabeledImages, load_source
from patchveil.tenants.sources.folders import IMAGE_SUFFIXES, read_image
from patchveil.tenants.split import holdout_mask

NAMESPACE = RAY_NAMESPACE
ACTOR_CPUS = 0.25
# Nonces of augmented variants live far above every real image index.
AUGMENT_NONCE_STRIDE = 10**9
# Query nonces are random and at least 2**62, so they never meet an image index.
_QUERY_NONCE_BASE = 2**62
_CACHED_SOURCES = 2
_VALIDATION_ROWS = 8
_SAMPLE_ID = re.compile(r"^(?P<tenant>[^:]+):(?P<index>\d+)(?::aug(?P<variant>\d+))?$")

# The tenant's inbox: images dropped in `<inbox>/<class>/<file>`; these sub-folders are ours.
INBOX_PROCESSING = "processing"
INBOX_PROCESSED = "processed"
INBOX_REJECTED = "rejected"
INBOX_RESERVED = frozenset({INBOX_PROCESSING, INBOX_PROCESSED, INBOX_REJECTED})


def actor_name(tenant_id: str) -> str:
    """The Ray actor name of a tenant, `tenant-<tenant_id>` (in namespace `patchveil`)."""
    return f"tenant-{check_tenant_id(tenant_id)}"


def sample_id(tenant_id: str, index: int, variant: int = 0) -> str:
    """`<tenant>:<index>` for an image, `<tenant>:<index>:aug<k>` for its k-th augmented variant."""
    return (
        f"{tenant_id}:{index}"
        if variant == 0
        else f"{tenant_id}:{index}{AUGMENTED_SUFFIX}{variant}"
    )


def nonce_of(tenant_id: str, sample: str) -> int:
    """The per-image nonce a sample id stands for; an error for another tenant's sample."""
    match = _SAMPLE_ID.match(sample)
    if match is None or match.group("tenant") != tenant_id:
        raise PatchveilError(
            f"sample id {sample!r} is not one of tenant {tenant_id!r}'s: expected "
            f"'{tenant_id}:<index>' or '{tenant_id}:<index>:aug<k>'"
        )
    variant = int(match.group("variant") or 0)
    return int(match.group("index")) + variant * AUGMENT_NONCE_STRIDE


def source_fingerprint(data: LabeledImages, hmac_key: bytes) -> str:
    """HMAC-SHA-256, under a secret of the tenant's key store, over a source's pixels, labels
    and shape: the same images give the same value, and only the tenant can compute it (the
    platform, which stores it, cannot confirm a guess of the images)."""
    digest = hmac.new(hmac_key, b"patchveil/source/v1", hashlib.sha256)
    digest.update(repr(tuple(data.images.shape)).encode())
    digest.update(np.ascontiguousarray(data.images).data)
    digest.update(data.labels.astype("<i8").tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class _Source:
    data: LabeledImages
    fingerprint: str


class TenantActor:
    """One tenant's encryption service: its key stays inside, only ciphertext comes out."""

    def __init__(
        self,
        tenant_id: str,
        key_store_path: str,
        config: PlatformConfig,
        crash_marker: str | None = None,
    ) -> None:
        self.tenant_id = check_tenant_id(tenant_id)
        self._key_store_path = str(Path(key_store_path).expanduser().absolute())
        self._config = config
        # The store is opened here, from its folder, on every (re)start of the actor.
        self._tenant = Tenant(self.tenant_id, KeyStore(self._key_store_path))
        self._sources: OrderedDict[tuple[str, int], _Source] = OrderedDict()
        self._crash_marker = crash_marker
        self._started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._counts = {"shards_written": 0, "rows_written": 0, "queries_encrypted": 0}

    def __repr__(self) -> str:
        return f"TenantActor(tenant={self.tenant_id!r})"

    # --- identity and key ---------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Which tenant, key store folder and platform home this actor serves."""
        return {
            "tenant_id": self.tenant_id,
            "key_store": self._key_store_path,
            "home": str(self._config.home),
            "pid": os.getpid(),
        }

    def ensure_key(
        self,
        cipher: str,
        block_size: int,
        image_size: int,
        params: dict[str, ParamValue] | None = None,
    ) -> dict[str, Any]:
        """Create the tenant's first key for this cipher, or check the existing key matches it."""
        wanted = check_spec(
            CipherSpec(cipher, int(block_size), int(image_size), tuple((params or {}).items()))
        )
        store = self._tenant.store
        if not store.versions(self.tenant_id):
            store.create(self.tenant_id, wanted)
            return {**self.key_info(), "created": True}
        current = self._tenant.key().spec
        if check_spec(current) != wanted:
            raise CipherConfigError(
                f"tenant {self.tenant_id!r} already has a key for cipher {_describe(current)}, "
                f"not {_describe(wanted)}; onboard it with its existing cipher, or remove the "
                "tenant first to change cipher"
            )
        return {**self.key_info(), "created": False}

    def key_info(self) -> dict[str, Any]:
        """The newest active key's id, version and cipher (never its secret)."""
        if not self._tenant.store.versions(self.tenant_id):
            return {"tenant_id": self.tenant_id, "has_key": False}
        key = self._tenant.key()
        return {
            "tenant_id": self.tenant_id,
            "has_key": True,
            "key_id": key.key_id,
            "key_version": key.version,
            "cipher": key.spec.to_json(),
            "created_at": key.created_at,
        }

    def rotate_key(self) -> dict[str, Any]:
        """Make a new key version the active one; older versions stay readable for re-encryption."""
        self._tenant.rotate_key()
        return self.key_info()

    # --- sources --------------------------------------------------------------------------
    def inspect_source(self, source: str) -> dict[str, Any]:
        """How many images a source holds, their size, class names and fingerprint."""
        loaded = self._load(source)
        data = loaded.data
        return {
            "source": str(source),
            "images": len(data),
            "image_size": data.image_size,
            "class_names": list(data.class_names),
            "labelled": data.has_labels,
            "fingerprint": loaded.fingerprint,
        }

    def plan_shards(
        self, source: str, shard_size: int, validation_fraction: float, seed: int = 0
    ) -> dict[str, Any]:
        """Split the source's image positions into train/validation shards of `shard_size`.

        The hold-out is stratified by class (`holdout_mask`) and happens here, on the tenant's
        side, because it needs the labels of the plain source.
        """
        if shard_size < 1:
            raise PatchveilError(f"shard size must be 1 or more images, got {shard_size}")
        loaded = self._load(source)
        data = loaded.data
        self._check_fits_key(source, data)
        if not data.has_labels:
            raise SourceError(
                f"source {source} has images without a label; the shared model trains on "
                "labelled images only: give every image a class"
            )
        if validation_fraction == 0:
            held_out = np.zeros(len(data), dtype=bool)
        else:
            held_out = holdout_mask(data.labels, validation_fraction, seed)
        shards = []
        for split, members in (
            ("train", np.flatnonzero(~held_out)),
            ("validation", np.flatnonzero(held_out)),
        ):
            for start in range(0, len(members), shard_size):
                chunk = members[start : start + shard_size]
                shards.append({"split": split, "indices": chunk.tolist()})
        return {
            "fingerprint": loaded.fingerprint,
            "images": len(data),
            "image_size": data.image_size,
            "class_names": list(data.class_names),
            "shards": shards,
        }

    # --- shards ---------------------------------------------------------------------------
    def encrypt_shard(
        self,
        source: str,
        indices: Sequence[int],
        folder_uri: str,
        shard_name: str,
        split: str,
        augment_variants: int = 0,
        index_offset: int = 0,
        fingerprint: str | None = None,
    ) -> dict[str, Any]:
        """Encrypt the source images at `indices` with the newest key and write one shard.

        Image `i` becomes sample `<tenant>:<index_offset + i>`. With `augment_variants=K` (train
        shards only) K crop-and-flip variants of each image are encrypted too. The shard is
        written atomically and may be rewritten (a retried task produces the same bytes).
        """
        if split not in SPLITS:
            raise PatchveilError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if augment_variants < 0 or (augment_variants and split != "train"):
            raise PatchveilError(
                "augmented variants are 0 or more, and only for training shards; got "
                f"{augment_variants} for a {split} shard"
            )
        loaded = self._load(source)
        if fingerprint is not None and loaded.fingerprint != fingerprint:
            raise SourceError(
                f"source {source} changed since its shards were planned; onboard it again"
            )
        data = loaded.data
        self._check_fits_key(source, data)
        positions = np.asarray(indices, dtype=np.int64)
        if positions.ndim != 1 or not len(positions) or positions.min() < 0:
            raise PatchveilError("a shard needs a non-empty list of image positions (0 or more)")
        if positions.max() >= len(data):
            raise PatchveilError(
                f"image position {int(positions.max())} is past the end of source {source} "
                f"({len(data)} images)"
            )
        key = self._tenant.key()
        cipher = self._tenant.cipher(key.version)
        plain = data.images[positions]
        image_indices = positions + int(index_offset)
        images = [cipher.encrypt(plain, image_indices)]
        sample_ids = [sample_id(self.tenant_id, int(index)) for index in image_indices]
        labels = [data.labels[positions]]
        seed = tenant_seed(self.tenant_id)
        for variant in range(1, augment_variants + 1):
            varied = augment_variant(plain, image_indices, variant, seed)
            images.append(cipher.encrypt(varied, image_indices + variant * AUGMENT_NONCE_STRIDE))
            sample_ids += [sample_id(self.tenant_id, int(i), variant) for i in image_indices]
            labels.append(data.labels[positions])
        table = encrypted_batch_to_table(
            np.concatenate(images),
            np.concatenate(labels),
            tenant_id=self.tenant_id,
            key_version=key.version,
            sample_ids=sample_ids,
            cipher_name=key.spec.name,
            block_size=key.spec.block_size,
            image_size=key.spec.image_size,
            split=split,
        )
        with self._crash_halfway_through_first_write():
            info = write_shard(table, folder_uri, shard_name, overwrite=True)
        self._counts["shards_written"] += 1
        self._counts["rows_written"] += info.rows
        return {**info.to_json(), "split": split}

    def reencrypt_shard(self, shard_uri: str, folder_uri: str, shard_name: str) -> dict[str, Any]:
        """Decrypt a shard with the key version it was written under, re-encrypt with the newest."""
        table = read_shard(shard_uri)
        metadata = ShardMetadata.from_schema(table.schema)
        if metadata.tenant_id != self.tenant_id:
            raise PatchveilError(
                f"shard {shard_uri} belongs to tenant {metadata.tenant_id!r}, not "
                f"{self.tenant_id!r}; only its own tenant can re-encrypt it"
            )
        arrays = table_to_arrays(table)
        splits = sorted(set(arrays.splits.tolist()))
        if len(splits) != 1:
            raise PatchveilError(f"shard {shard_uri} mixes splits {splits}; expected one")
        nonces = np.array([nonce_of(self.tenant_id, s) for s in arrays.sample_ids], np.int64)
        plain = self._tenant.decrypt(arrays.images, metadata.key_version, nonces)
        key = self._tenant.key()
        if key.version == metadata.key_version:
            raise PatchveilError(
                f"shard {shard_uri} is already under key version {key.version}; rotate the key "
                "first"
            )
        new_table = encrypted_batch_to_table(
            self._tenant.encrypt(plain, key.version, nonces),
            arrays.labels,
            tenant_id=self.tenant_id,
            key_version=key.version,
            sample_ids=arrays.sample_ids,
            cipher_name=key.spec.name,
            block_size=key.spec.block_size,
            image_size=key.spec.image_size,
            split=splits[0],
        )
        info = write_shard(new_table, folder_uri, shard_name, overwrite=True)
        self._counts["shards_written"] += 1
        self._counts["rows_written"] += info.rows
        return {**info.to_json(), "split": splits[0]}

    def validate_sample(
        self, shard_uri: str, source: str, indices: Sequence[int], index_offset: int = 0
    ) -> dict[str, Any]:
        """Check a written shard: the rows of `indices` decrypt exactly to the plain source
        images (and their augmented variants, if any), and no ciphertext equals its plain image."""
        table = read_shard(shard_uri)
        metadata = ShardMetadata.from_schema(table.schema)
        arrays = table_to_arrays(table)
        row_of = {sid: row for row, sid in enumerate(arrays.sample_ids.tolist())}
        data = self._load(source).data
        seed = tenant_seed(self.tenant_id)
        exact = differs = True
        checked = 0
        for position in list(indices)[:_VALIDATION_ROWS]:
            index = int(position) + int(index_offset)
            plain = data.images[int(position)]
            variant = 0
            while (wanted := sample_id(self.tenant_id, index, variant)) in row_of:
                expected = (
                    plain
                    if variant == 0
                    else augment_variant(plain[None], np.array([index]), variant, seed)[0]
                )
                ciphertext = arrays.images[row_of[wanted]]
                nonce = np.array([nonce_of(self.tenant_id, wanted)], np.int64)
                decrypted = self._tenant.decrypt(ciphertext[None], metadata.key_version, nonce)
                exact &= bool(np.array_equal(decrypted[0], expected))
                differs &= not bool(np.array_equal(ciphertext, expected))
                checked += 1
                variant += 1
            if variant == 0:
                raise PatchveilError(
                    f"shard {shard_uri} has no row for sample {wanted!r}; it does not hold the "
                    "images it was written for"
                )
        return {
            "rows": table.num_rows,
            "checked": checked,
            "key_version": metadata.key_version,
            "decrypts_exactly": exact,
            "differs_from_plain": differs,
        }

    # --- queries and stats ----------------------------------------------------------------
    def encrypt_queries(self, images: np.ndarray) -> np.ndarray:
        """Encrypt query images with the newest key (fresh random nonces for per-image ciphers)."""
        images = np.asarray(images)
        count = 1 if images.ndim == 3 else len(images)
        nonces = np.array(
            [_QUERY_NONCE_BASE + secrets.randbits(62) for _ in range(count)], dtype=np.int64
        )
        encrypted = self._tenant.encrypt(images, None, nonces)
        self._counts["queries_encrypted"] += count
        return encrypted

    def stats(self) -> dict[str, Any]:
        """What this actor process has done since it (re)started."""
        info = self.key_info()
        return {
            "tenant_id": self.tenant_id,
            "key_version": info.get("key_version"),
            "pid": os.getpid(),
            "started_at": self._started_at,
            "sources_cached": len(self._sources),
            **self._counts,
        }

    # --- the inbox ------------------------------------------------------------------------
    def scan_inbox(self, class_names: Sequence[str] = ()) -> dict[str, Any]:
        """Collect images dropped in the tenant's inbox into batches ready to encrypt.

        New files `<inbox>/<class>/<file>` move to `processing/<batch>/<class>/`; each batch is
        decoded into `processing/<batch>.npz` (a source like any other). `<class>` is one of
        `class_names` or an integer label. Unreadable images, images of the wrong size and
        unknown classes move to `rejected/` and are reported. Batches left by an interrupted
        run are picked up again.
        """
        inbox = self._config.inbox_for(self.tenant_id)
        processing = inbox / INBOX_PROCESSING
        rejected: list[dict[str, str]] = []
        new_files = _dropped_files(inbox)
        if new_files:
            batch = processing / (
                datetime.now(UTC).strftime("%Y%m%dT%H%M%S-") + uuid.uuid4().hex[:8]
            )
            for path in new_files:
                target = batch / path.relative_to(inbox)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
        for folder in sorted(p for p in processing.glob("*") if p.is_dir()):
            if not folder.with_suffix(".npz").exists():
                rejected += self._pack_batch(folder, list(class_names))
        batches = []
        for archive in sorted(processing.glob("*.npz")):
            batches.append(self.inspect_source(str(archive)))
        return {"batches": batches, "rejected": rejected}

    def archive_inbox_batch(self, source: str) -> str:
        """Move an encrypted and published batch's files to `processed/`; return where."""
        inbox = self._config.inbox_for(self.tenant_id)
        archive = Path(source)
        if archive.parent != inbox / INBOX_PROCESSING or archive.suffix != ".npz":
            raise PatchveilError(f"{source} is not an inbox batch of tenant {self.tenant_id!r}")
        target = inbox / INBOX_PROCESSED / archive.stem
        folder = archive.with_suffix("")
        if folder.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(folder, target)
        archive.unlink(missing_ok=True)
        self._forget(str(archive))
        return str(target)

    def _pack_batch(self, folder: Path, class_names: list[str]) -> list[dict[str, str]]:
        """Decode a batch folder into `<folder>.npz`; move files that do not fit to `rejected/`."""
        image_size = self._key_image_size()
        inbox = folder.parent.parent
        images, labels, rejected = [], [], []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relative = path.relative_to(folder)
            try:
                label = _label_for(
                    relative.parts[0] if len(relative.parts) > 1 else "", class_names
                )
                image = read_image(path)
                if image.shape[:2] != (image_size, image_size):
                    raise ImageFormatError(
                        f"{relative} is {image.shape[1]}×{image.shape[0]}; tenant "
                        f"{self.tenant_id!r} encrypts {image_size}×{image_size} images"
                    )
            except PatchveilError as error:
                target = inbox / INBOX_REJECTED / folder.name / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
                rejected.append({"file": str(relative), "reason": str(error)})
                continue
            images.append(image)
            labels.append(label)
        if not images:
            shutil.rmtree(folder, ignore_errors=True)
            return rejected
        names = class_names or [str(label) for label in range(max(labels) + 1)]
        with atomic_path(folder.with_suffix(".npz")) as temporary, open(temporary, "wb") as out:
            np.savez(
                out,
                images=np.stack(images),
                labels=np.asarray(labels, dtype=np.int64),
                class_names=np.asarray(names, dtype=np.str_),
            )
        return rejected

    # --- internals ------------------------------------------------------------------------
    def _load(self, source: str) -> _Source:
        path = Path(source).expanduser().absolute()
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            raise SourceError(f"source {source} does not exist or cannot be read") from None
        cache_key = (str(path), stamp)
        if cache_key in self._sources:
            self._sources.move_to_end(cache_key)
            return self._sources[cache_key]
        data = load_source(path)
        loaded = _Source(data, source_fingerprint(data, self._tenant.store.fingerprint_key()))
        self._sources[cache_key] = loaded
        while len(self._sources) > _CACHED_SOURCES:
            self._sources.popitem(last=False)
        return loaded

    def _forget(self, source: str) -> None:
        path = str(Path(source).expanduser().absolute())
        for cache_key in [k for k in self._sources if k[0] == path]:
            del self._sources[cache_key]

    def _key_image_size(self) -> int:
        if not self._tenant.store.versions(self.tenant_id):
            raise PatchveilError(f"tenant {self.tenant_id!r} has no key yet; onboard it first")
        return self._tenant.key().spec.image_size

    def _check_fits_key(self, source: str, data: LabeledImages) -> None:
        image_size = self._key_image_size()
        if data.image_size != image_size:
            raise ImageFormatError(
                f"source {source} holds {data.image_size}×{data.image_size} images, but tenant "
                f"{self.tenant_id!r}'s cipher encrypts {image_size}×{image_size} images; "
                f"resize the images or onboard them as another tenant"
            )

    @contextlib.contextmanager
    def _crash_halfway_through_first_write(self) -> Iterator[None]:
        """TEST ONLY: with a crash marker, kill this process half way through writing a shard.

        Fires once: the marker file records that it did, so the restarted actor writes normally.
        """
        marker = self._crash_marker
        if marker is None or Path(marker).exists():
            yield
            return
        Path(marker).write_text(str(os.getpid()))

        def write_half_then_die(stream: Any, data: memoryview) -> None:
            stream.write(data[: len(data) // 2])
            stream.flush()
            os._exit(1)

        original = storage._write_stream
        storage._write_stream = write_half_then_die
        try:
            yield
        finally:
            storage._write_stream = original


def _describe(spec: CipherSpec) -> str:
    params = ", ".join(f"{name}={value}" for name, value in spec.params)
    return f"{spec.name!r} (block size {spec.block_size}, image size {spec.image_size}" + (
        f", {params})" if params else ")"
    )


def _dropped_files(inbox: Path) -> list[Path]:
    """Image files in `<inbox>/<class>/…`, skipping hidden entries and our own sub-folders."""
    if not inbox.is_dir():
        return []
    found = []
    for path in sorted(inbox.rglob("*")):
        parts = path.relative_to(inbox).parts
        if (
            len(parts) >= 2
            and parts[0] not in INBOX_RESERVED
            and not any(part.startswith(".") for part in parts)
            and path.suffix.lower() in IMAGE_SUFFIXES
            and path.is_file()
        ):
            found.append(path)
    return found


def _label_for(class_folder: str, class_names: Sequence[str]) -> int:
    if class_folder in class_names:
        return list(class_names).index(class_folder)
    if class_folder.isdigit() and (not class_names or int(class_folder) < len(class_names)):
        return int(class_folder)
    known = ", ".join(class_names) if class_names else "integer labels"
    raise SourceError(
        f"class folder {class_folder!r} names no class of this tenant; use one of: {known}"
    )


@cache
def _remote_class() -> Any:
    import ray

    # max_task_retries=0: a call that dies with the actor fails, and the Prefect task that made
    # it retries against the restarted actor (which reloads its key from the store).
    return ray.remote(max_restarts=-1, max_task_retries=0)(TenantActor)


def tenant_actor(
    tenant_id: str,
    key_store_path: str | Path | None,
    config: PlatformConfig,
    pin_to_tenant_node: bool = False,
    *,
    crash_marker: str | None = None,
) -> Any:
    """The tenant's actor handle: the running `tenant-<id>` actor, or a new one.

    `key_store_path=None` takes the running actor as it is, or starts one on the development
    key store `config.key_store_for(tenant_id)`. With `pin_to_tenant_node` the actor needs the
    custom resource `tenant:<id>`, so on a cluster it runs only on the tenant's own node.
    `crash_marker` is for tests only (see `TenantActor._crash_halfway_through_first_write`).
    """
    import ray

    name = actor_name(tenant_id)
    if not ray.is_initialized():
        raise PatchveilError(
            "Ray is not running in this process; call patchveil.pipelines.ray_runtime.ensure_ray "
            "first"
        )
    if key_store_path is None:
        with contextlib.suppress(ValueError):
            return ray.get_actor(name, namespace=NAMESPACE)
        key_store_path = config.key_store_for(tenant_id)
    wanted = str(Path(key_store_path).expanduser().absolute())
    options: dict[str, Any] = {
        "name": name,
        "namespace": NAMESPACE,
        "get_if_exists": True,
        "num_cpus": ACTOR_CPUS,
        # Detached: the actor is the tenant's long-lived service, found by name by every flow
        # run; a non-detached one would be collected as soon as the task that started it ends.
        "lifetime": "detached",
    }
    if pin_to_tenant_node:
        options["resources"] = {f"tenant:{tenant_id}": 0.01}
    handle = _remote_class().options(**options).remote(tenant_id, wanted, config, crash_marker)
    running = call(handle.describe.remote())
    if (running["key_store"], running["home"]) != (wanted, str(config.home)):
        raise PatchveilError(
            f"actor {name} already runs with key store {running['key_store']} under platform "
            f"home {running['home']}; it cannot switch to {wanted} under {config.home}: stop it "
            "first (ray.kill) or use its key store"
        )
    return handle


def existing_tenant_actor(tenant_id: str) -> Any:
    """The running actor of a tenant (an error if there is none)."""
    import ray

    try:
        return ray.get_actor(actor_name(tenant_id), namespace=NAMESPACE)
    except ValueError:
        raise PatchveilError(
            f"no actor runs for tenant {tenant_id!r}; start it with tenant_actor(...)"
        ) from None


def call(reference: Any, timeout: float | None = None) -> Any:
    """`ray.get` that re-raises a tenant-side user error as itself, without the remote traceback."""
    import ray
    from ray.exceptions import RayTaskError

    try:
        return ray.get(reference, timeout=timeout)
    except RayTaskError as error:
        if isinstance(error.cause, PatchveilError):
            raise error.cause from None
        raise
