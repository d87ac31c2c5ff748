"""The tenant's Ray actor: holds the tenant's key and turns plain images into encrypted shards.

This is the tenant's side of the trust boundary. The actor opens the tenant's key store itself,
from its folder, and nothing that leaves it (return values, shards, logs, Ray objects) holds key
material or a plain pixel: methods return the messages of `patchveil.protocol`, or ciphertext.
The platform starts and finds it through `patchveil.pipelines.tenant_handle`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from patchveil.config import PlatformConfig, check_tenant_id
from patchveil.datasets.schema import (
    SPLITS,
    ShardMetadata,
    encrypted_batch_to_table,
    table_to_arrays,
)
from patchveil.datasets.shards import ShardInfo, read_shard, write_shard
from patchveil.errors import CipherConfigError, ImageFormatError, PatchveilError, SourceError
from patchveil.protocol import (
    ActorDescription,
    ActorStats,
    InboxScan,
    KeyInfo,
    PlannedShard,
    SampleCheck,
    ShardJob,
    ShardPlan,
    ShardWritten,
    SourceInfo,
)
from patchveil.tenants import inbox
from patchveil.tenants.augment import augment_variant, tenant_seed
from patchveil.tenants.ciphers import check_spec
from patchveil.tenants.client import Tenant
from patchveil.tenants.keys import CipherSpec, ParamValue
from patchveil.tenants.keystore import KeyStore
from patchveil.tenants.loaders import LabeledImages, load_source
from patchveil.tenants.samples import AUGMENT_NONCE_STRIDE, nonce_of, query_nonces, sample_id
from patchveil.tenants.split import holdout_mask

_CACHED_SOURCES = 2
_VALIDATION_ROWS = 8


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
    ) -> None:
        self.tenant_id = check_tenant_id(tenant_id)
        self._key_store_path = str(Path(key_store_path).expanduser().absolute())
        self._config = config
        # The store is opened here, from its folder, on every (re)start of the actor.
        self._tenant = Tenant(self.tenant_id, KeyStore(self._key_store_path))
        self._sources: OrderedDict[tuple[str, int], _Source] = OrderedDict()
        self._started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._counts = {"shards_written": 0, "rows_written": 0, "queries_encrypted": 0}

    def __repr__(self) -> str:
        return f"TenantActor(tenant={self.tenant_id!r})"

    # --- identity and key ---------------------------------------------------------------
    def describe(self) -> ActorDescription:
        """Which tenant, key store folder and platform home this actor serves."""
        return ActorDescription(
            tenant_id=self.tenant_id,
            key_store=self._key_store_path,
            home=str(self._config.home),
            pid=os.getpid(),
        )

    def ensure_key(
        self,
        cipher: str,
        block_size: int,
        image_size: int,
        params: dict[str, ParamValue] | None = None,
    ) -> KeyInfo:
        """Create the tenant's first key for this cipher, or check the existing key matches it."""
        wanted = check_spec(
            CipherSpec(cipher, int(block_size), int(image_size), tuple((params or {}).items()))
        )
        store = self._tenant.store
        if not store.versions(self.tenant_id):
            store.create(self.tenant_id, wanted)
            return replace(self.key_info(), created=True)
        current = self._tenant.key().spec
        if check_spec(current) != wanted:
            raise CipherConfigError(
                f"tenant {self.tenant_id!r} already has a key for cipher {_describe(current)}, "
                f"not {_describe(wanted)}; onboard it with its existing cipher, or remove the "
                "tenant first to change cipher"
            )
        return self.key_info()

    def key_info(self) -> KeyInfo:
        """The newest active key's id, version and cipher (never its secret)."""
        if not self._tenant.store.versions(self.tenant_id):
            return KeyInfo(tenant_id=self.tenant_id, has_key=False)
        key = self._tenant.key()
        return KeyInfo(
            tenant_id=self.tenant_id,
            has_key=True,
            key_id=key.key_id,
            key_version=key.version,
            cipher=key.spec.name,
            block_size=key.spec.block_size,
            image_size=key.spec.image_size,
            params=tuple(key.spec.param_dict.items()),
            created_at=key.created_at,
        )

    def rotate_key(self) -> KeyInfo:
        """Make a new key version the active one; older versions stay readable for re-encryption."""
        self._tenant.rotate_key()
        return self.key_info()

    # --- sources --------------------------------------------------------------------------
    def inspect_source(self, source: str) -> SourceInfo:
        """How many images a source holds, their size, class names and fingerprint."""
        loaded = self._load(source)
        data = loaded.data
        return SourceInfo(
            source=str(source),
            images=len(data),
            image_size=data.image_size,
            class_names=tuple(data.class_names),
            labelled=data.has_labels,
            fingerprint=loaded.fingerprint,
        )

    def plan_shards(
        self, source: str, shard_size: int, validation_fraction: float, seed: int = 0
    ) -> ShardPlan:
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
        shards: list[PlannedShard] = []
        for split, members in (
            ("train", np.flatnonzero(~held_out)),
            ("validation", np.flatnonzero(held_out)),
        ):
            for start in range(0, len(members), shard_size):
                chunk = members[start : start + shard_size]
                shards.append(PlannedShard(split, tuple(int(i) for i in chunk)))
        return ShardPlan(
            fingerprint=loaded.fingerprint,
            images=len(data),
            image_size=data.image_size,
            class_names=tuple(data.class_names),
            shards=tuple(shards),
        )

    # --- shards ---------------------------------------------------------------------------
    def encrypt_shard(self, job: ShardJob) -> ShardWritten:
        """Encrypt the job's source images with the newest key and write one shard.

        Image `i` becomes sample `<tenant>:<index_offset + i>`. With `augment_variants=K` (train
        shards only) K crop-and-flip variants of each image are encrypted too. The shard is
        written atomically and may be rewritten (a retried task produces the same bytes).
        """
        source, split, augment_variants = job.source, job.split, job.augment_variants
        if split not in SPLITS:
            raise PatchveilError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if augment_variants < 0 or (augment_variants and split != "train"):
            raise PatchveilError(
                "augmented variants are 0 or more, and only for training shards; got "
                f"{augment_variants} for a {split} shard"
            )
        loaded = self._load(source)
        if job.fingerprint is not None and loaded.fingerprint != job.fingerprint:
            raise SourceError(
                f"source {source} changed since its shards were planned; onboard it again"
            )
        data = loaded.data
        self._check_fits_key(source, data)
        positions = np.asarray(job.indices, dtype=np.int64)
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
        image_indices = positions + int(job.index_offset)
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
        info = self._write_shard(table, job)
        self._counts["shards_written"] += 1
        self._counts["rows_written"] += info.rows
        return ShardWritten(info, split)

    def reencrypt_shard(self, shard_uri: str, folder_uri: str, shard_name: str) -> ShardWritten:
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
        plain = self._tenant.decrypt_rows(arrays.images, metadata.key_version, nonces)
        key = self._tenant.key()
        if key.version == metadata.key_version:
            raise PatchveilError(
                f"shard {shard_uri} is already under key version {key.version}; rotate the key "
                "first"
            )
        new_table = encrypted_batch_to_table(
            self._tenant.encrypt_rows(plain, key.version, nonces),
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
        return ShardWritten(info, splits[0])

    def validate_sample(
        self, shard_uri: str, source: str, indices: Sequence[int], index_offset: int = 0
    ) -> SampleCheck:
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
                decrypted = self._tenant.decrypt_rows(ciphertext[None], metadata.key_version, nonce)
                exact &= bool(np.array_equal(decrypted[0], expected))
                differs &= not bool(np.array_equal(ciphertext, expected))
                checked += 1
                variant += 1
            if variant == 0:
                raise PatchveilError(
                    f"shard {shard_uri} has no row for sample {wanted!r}; it does not hold the "
                    "images it was written for"
                )
        return SampleCheck(
            rows=table.num_rows,
            checked=checked,
            key_version=metadata.key_version,
            decrypts_exactly=exact,
            differs_from_plain=differs,
        )

    # --- queries and stats ----------------------------------------------------------------
    def encrypt_queries(self, images: np.ndarray) -> np.ndarray:
        """Encrypt query images with the newest key (fresh random nonces for per-image ciphers)."""
        images = np.asarray(images)
        count = 1 if images.ndim == 3 else len(images)
        encrypted = self._tenant.encrypt_rows(images, None, query_nonces(count))
        self._counts["queries_encrypted"] += count
        return encrypted

    def stats(self) -> ActorStats:
        """What this actor process has done since it (re)started."""
        info = self.key_info()
        return ActorStats(
            tenant_id=self.tenant_id,
            key_version=info.key_version if info.has_key else None,
            pid=os.getpid(),
            started_at=self._started_at,
            sources_cached=len(self._sources),
            **self._counts,
        )

    # --- the inbox ------------------------------------------------------------------------
    def scan_inbox(self, class_names: Sequence[str] = ()) -> InboxScan:
        """Collect images dropped in the tenant's inbox into batches ready to encrypt.

        New files `<inbox>/<class>/<file>` become a batch, decoded into a source like any other
        (`patchveil.tenants.inbox`). `<class>` is one of `class_names` or an integer label.
        Unreadable images, images of the wrong size and unknown classes move to `rejected/` and
        are reported. Batches left by an interrupted run are picked up again.
        """
        folder = self._config.inbox_for(self.tenant_id)
        inbox.move_new_files(folder)
        rejected = []
        for batch in inbox.unpacked_batches(folder):
            rejected += inbox.pack_batch(
                batch, list(class_names), self._key_image_size(), self.tenant_id
            )
        batches = tuple(self.inspect_source(str(a)) for a in inbox.packed_batches(folder))
        return InboxScan(batches=batches, rejected=tuple(rejected))

    def archive_inbox_batch(self, source: str) -> str:
        """Move an encrypted and published batch's files to `processed/`; return where."""
        target = inbox.archive_batch(self._config.inbox_for(self.tenant_id), source, self.tenant_id)
        self._forget(source)
        return str(target)

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

    def _write_shard(self, table: pa.Table, job: ShardJob) -> ShardInfo:
        """Write a new shard (a seam: tests/faults.py crashes an actor half way through it)."""
        return write_shard(table, job.folder_uri, job.shard_name, overwrite=True)


def _describe(spec: CipherSpec) -> str:
    params = ", ".join(f"{name}={value}" for name, value in spec.params)
    return f"{spec.name!r} (block size {spec.block_size}, image size {spec.image_size}" + (
        f", {params})" if params else ")"
    )
