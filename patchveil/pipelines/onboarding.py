"""The onboarding flows: a tenant's images enter the shared dataset, encrypted by its own actor.

`onboard_tenant` is the runbook for one tenant; `onboard_tenants` does many at once from a YAML
or JSON file, encrypting all of them in parallel and publishing one new dataset version per
dataset. Every check that can refuse the input runs before anything is written, so bad input
leaves the dataset and the registry as they were. Onboarding the same images again changes
nothing: the registry knows their fingerprint.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from patchveil.config import PlatformConfig, check_tenant_id
from patchveil.datasets import DatasetVersion
from patchveil.datasets.manifest import check_dataset_name
from patchveil.errors import PatchveilError
from patchveil.pipelines.publishing import (
    default_dataset_name,
    latest_recorded_version,
    new_staging_uri,
    publish_and_record,
    remove_folder,
    tenant_locks,
    version_summary,
)
from patchveil.pipelines.ray_runtime import ensure_ray
from patchveil.pipelines.tenant_tasks import (
    encrypt_shard,
    ensure_key,
    inspect_source,
    plan_shards,
    start_tenant_actor,
    validate_shards,
)
from patchveil.protocol import (
    KeyInfo,
    SampleCheck,
    ShardJob,
    ShardPlan,
    ShardWritten,
    SourceInfo,
)
from patchveil.registry import NewSource, Registry, RegistryError, SourceRecord

SPLIT_SEED = 0


@dataclass(frozen=True)
class OnboardingRequest:
    """What onboarding one tenant needs; the image size is read from the source."""

    tenant_id: str
    source: str
    cipher: str
    block_size: int
    params: dict[str, Any] = field(default_factory=dict)
    key_store: str | None = None
    shard_size: int = 1000
    validation_fraction: float = 0.1
    augment_variants: int = 0
    dataset_name: str | None = None

    def __post_init__(self) -> None:
        check_tenant_id(self.tenant_id)
        if self.cipher == "plain":
            raise PatchveilError(
                "cipher 'plain' does not encrypt, and plain pixels never enter the shared "
                "dataset; choose an encrypting cipher (e.g. disposable, conventional)"
            )
        if not isinstance(self.block_size, int) or self.block_size < 1:
            raise PatchveilError(f"block size must be a positive integer, got {self.block_size!r}")
        if not isinstance(self.shard_size, int) or self.shard_size < 1:
            raise PatchveilError(f"shard size must be a positive integer, got {self.shard_size!r}")
        fraction = self.validation_fraction
        if not (
            isinstance(fraction, int | float) and math.isfinite(fraction) and 0 <= fraction < 1
        ):
            raise PatchveilError(
                f"validation fraction must lie in [0, 1) (e.g. 0.1), got {fraction!r}"
            )
        if not isinstance(self.augment_variants, int) or self.augment_variants < 0:
            raise PatchveilError(
                f"augment_variants must be 0 or more, got {self.augment_variants!r}"
            )
        if self.dataset_name is not None:
            check_dataset_name(self.dataset_name)
        object.__setattr__(self, "source", str(Path(self.source).expanduser().absolute()))
        if self.key_store is not None:
            key_store = str(Path(self.key_store).expanduser().absolute())
            object.__setattr__(self, "key_store", key_store)
        object.__setattr__(self, "params", dict(self.params or {}))

    @classmethod
    def from_mapping(cls, entry: Mapping[str, Any], base: Path) -> OnboardingRequest:
        """One tenant entry of an onboarding file; relative paths are relative to the file."""
        known = {item.name for item in fields(cls)}
        entry = {
            ("tenant_id" if name == "tenant" else name): value for name, value in entry.items()
        }
        unknown = sorted(set(entry) - known)
        missing = sorted({"tenant_id", "source", "cipher", "block_size"} - set(entry))
        if unknown or missing:
            raise PatchveilError(
                f"onboarding entry {dict(entry)!r}: "
                + (f"unknown fields {', '.join(unknown)}; " if unknown else "")
                + (f"missing fields {', '.join(missing)}; " if missing else "")
                + f"fields are {', '.join(sorted(known))}"
            )
        for name in ("source", "key_store"):
            if entry.get(name) is not None:
                entry[name] = str(base / Path(str(entry[name])).expanduser())
        return cls(**entry)


def load_onboarding_file(path: Path | str) -> list[OnboardingRequest]:
    """Tenants to onboard from YAML or JSON: a list of entries, or `{defaults: …, tenants: […]}`."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PatchveilError(f"cannot read onboarding file {path}: {error.strerror}") from None
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise PatchveilError(f"onboarding file {path} is not valid YAML/JSON: {error}") from None
    defaults: Mapping[str, Any] = {}
    if isinstance(document, Mapping):
        defaults = document.get("defaults") or {}
        document = document.get("tenants")
    if not isinstance(document, list) or not document or not isinstance(defaults, Mapping):
        raise PatchveilError(
            f"onboarding file {path} must hold a non-empty list of tenants (or a mapping with "
            "'tenants:' and optional 'defaults:'), each with tenant_id, source, cipher, block_size"
        )
    requests = []
    for entry in document:
        if not isinstance(entry, Mapping):
            raise PatchveilError(
                f"onboarding file {path}: each tenant must be a mapping, got {entry!r}"
            )
        requests.append(OnboardingRequest.from_mapping({**defaults, **entry}, path.parent))
    repeated = sorted(
        {r.tenant_id for r in requests if [q.tenant_id for q in requests].count(r.tenant_id) > 1}
    )
    if repeated:
        raise PatchveilError(
            f"onboarding file {path} lists tenants more than once: {', '.join(repeated)}"
        )
    return requests


@flow(name="onboard-tenant", persist_result=False)
def onboard_tenant(
    tenant_id: str,
    source: str,
    cipher: str,
    block_size: int,
    params: dict[str, Any] | None = None,
    key_store: str | None = None,
    shard_size: int = 1000,
    validation_fraction: float = 0.1,
    augment_variants: int = 0,
    dataset_name: str | None = None,
) -> dict[str, Any]:
    """Onboard one tenant: its actor encrypts its images into a new dataset version.

    Returns the tenant's result (dataset version, rows, key version, and its API token the
    first time: shown once, stored only hashed).
    """
    request = OnboardingRequest(
        tenant_id=tenant_id,
        source=source,
        cipher=cipher,
        block_size=block_size,
        params=params or {},
        key_store=key_store,
        shard_size=shard_size,
        validation_fraction=validation_fraction,
        augment_variants=augment_variants,
        dataset_name=dataset_name,
    )
    return onboard(PlatformConfig.from_env(), [request])["tenants"][0]


@flow(name="onboard-tenants", persist_result=False)
def onboard_tenants(config_file: str) -> dict[str, Any]:
    """Onboard every tenant listed in a YAML/JSON file, in parallel, into one new version."""
    return onboard(PlatformConfig.from_env(), load_onboarding_file(config_file))


def onboard(config: PlatformConfig, requests: Sequence[OnboardingRequest]) -> dict[str, Any]:
    """The onboarding story for one or more tenants (call it from a flow)."""
    ensure_ray(config)
    published: list[DatasetVersion] = []
    with (
        Registry.from_config(config) as registry,
        tenant_locks(config, [request.tenant_id for request in requests]),
    ):
        onboardings = prepare(config, registry, requests)  # every refusal happens here
        todo = [onboarding for onboarding in onboardings if not onboarding.already_done]
        try:
            for onboarding in todo:
                onboarding.split_into_shards(registry)
            encrypt_all(todo)
            for onboarding in todo:
                onboarding.validate()
            for onboarding in todo:
                register(registry, onboarding)
            published = publish_by_dataset(config, registry, todo)
        finally:
            for onboarding in todo:
                remove_folder(onboarding.staging_uri)
        results = [onboarding.result(registry) for onboarding in onboardings]
    return {"tenants": results, "datasets": [version_summary(v) for v in published]}


def prepare(
    config: PlatformConfig, registry: Registry, requests: Sequence[OnboardingRequest]
) -> list[_Onboarding]:
    """Start the actors, read the sources, refuse conflicts, make sure every tenant has a key."""
    for request in requests:
        start_tenant_actor(request.tenant_id, request.key_store, config)
    sources = [inspect_source(request.tenant_id, request.source) for request in requests]
    for request, source in zip(requests, sources, strict=True):
        check_registration(registry, request, source)
    onboardings = []
    for request, source in zip(requests, sources, strict=True):
        key = ensure_key(
            request.tenant_id,
            request.cipher,
            request.block_size,
            source.image_size,
            request.params,
        )
        existing = registry.find_source(request.tenant_id, source.fingerprint)
        onboardings.append(_Onboarding(request, source, key, config, existing))
    return onboardings


def encrypt_all(onboardings: Sequence[_Onboarding]) -> None:
    """Every tenant's actor encrypts its shards; all tenants at once."""
    submitted = [onboarding.submit_shards() for onboarding in onboardings]
    for onboarding, futures in zip(onboardings, submitted, strict=True):
        onboarding.shards = [future.result() for future in futures]


def publish_by_dataset(
    config: PlatformConfig, registry: Registry, onboardings: Sequence[_Onboarding]
) -> list[DatasetVersion]:
    """One new version per dataset holding every onboarded tenant's new shards."""
    logger = get_run_logger()
    published = []
    for dataset_name in sorted({onboarding.dataset_name for onboarding in onboardings}):
        members = [o for o in onboardings if o.dataset_name == dataset_name]
        staged = [written.shard for o in members for written in o.shards]
        version = publish_and_record(
            config, registry, dataset_name, staged, sources=[o.new_source() for o in members]
        )
        logger.info(
            "dataset %s version %d published with %d new shards",
            dataset_name,
            version.version,
            len(staged),
        )
        published.append(version)
    return published


def check_registration(registry: Registry, request: OnboardingRequest, source: SourceInfo) -> None:
    """Refuse, before anything changes, a tenant registered with another cipher or image size."""
    known = {tenant.tenant_id: tenant for tenant in registry.list_tenants()}
    tenant = known.get(request.tenant_id)
    if tenant is None:
        return
    if (tenant.cipher, tenant.block_size) != (request.cipher, request.block_size):
        raise RegistryError(
            f"tenant {request.tenant_id!r} is registered with cipher {tenant.cipher}, block size "
            f"{tenant.block_size}; onboard it with those, or remove the tenant first to change "
            "its cipher"
        )
    if tenant.image_size != source.image_size:
        size = source.image_size
        raise RegistryError(
            f"tenant {request.tenant_id!r} encrypts {tenant.image_size}×{tenant.image_size} "
            f"images, but {request.source} holds {size}×{size} images; resize them to "
            f"{tenant.image_size}×{tenant.image_size}"
        )


def register(registry: Registry, onboarding: _Onboarding) -> None:
    """Register (or confirm) the tenant with its cipher geometry and key version."""
    request, key = onboarding.request, onboarding.key
    registry.upsert_tenant(
        request.tenant_id,
        cipher=request.cipher,
        block_size=request.block_size,
        image_size=key.image_size,
        key_version=key.key_version,
    )


@dataclass
class _Onboarding:
    """One tenant's way through the flow (platform-side bookkeeping only: no key, no pixel)."""

    request: OnboardingRequest
    source: SourceInfo
    key: KeyInfo
    config: PlatformConfig
    existing: SourceRecord | None = None
    plan: ShardPlan | None = None
    jobs: list[ShardJob] = field(default_factory=list)
    shards: list[ShardWritten] = field(default_factory=list)
    validation: dict[str, SampleCheck] = field(default_factory=dict)
    index_offset: int = 0
    staging_uri: str = ""

    @property
    def tenant_id(self) -> str:
        return self.request.tenant_id

    @property
    def dataset_name(self) -> str:
        return self.request.dataset_name or default_dataset_name(
            self.request.cipher, self.request.block_size, self.key.image_size
        )

    @property
    def already_done(self) -> bool:
        """These very images of this tenant were onboarded before."""
        return self.existing is not None

    def split_into_shards(self, registry: Registry) -> None:
        """Split the source into shards (tenant-side) and give its images their indices."""
        request = self.request
        self.index_offset = registry.next_image_index(self.tenant_id)
        plan = plan_shards(
            self.tenant_id,
            request.source,
            request.shard_size,
            request.validation_fraction,
            SPLIT_SEED,
        )
        self.plan = plan
        self.staging_uri = new_staging_uri(self.config, self.dataset_name)
        self.jobs = shard_jobs(
            self.tenant_id,
            request.source,
            plan,
            self.key.key_version,
            self.staging_uri,
            augment_variants=request.augment_variants,
            index_offset=self.index_offset,
        )

    def submit_shards(self) -> list[Any]:
        return [encrypt_shard.submit(self.tenant_id, job) for job in self.jobs]

    def validate(self) -> None:
        self.validation = validate_shards(self.tenant_id, self.jobs, self.shards)

    def new_source(self) -> NewSource:
        assert self.plan is not None, "split_into_shards comes first"
        return NewSource(
            tenant_id=self.tenant_id,
            fingerprint=self.plan.fingerprint,
            kind="onboarding",
            source=self.request.source,
            images=self.plan.images,
            first_index=self.index_offset,
            class_names=self.plan.class_names,
        )

    def result(self, registry: Registry) -> dict[str, Any]:
        """The tenant's JSON result; issues its API token if it has none yet (shown once)."""
        dataset_name = self.existing.dataset_name if self.existing else self.dataset_name
        current = latest_recorded_version(self.config, registry, dataset_name)
        token = None
        if not registry.get_tenant(self.tenant_id).has_api_token:
            token = registry.issue_api_token(self.tenant_id)
        return {
            "tenant_id": self.tenant_id,
            "status": "already_onboarded" if self.existing else "onboarded",
            "dataset": dataset_name,
            "dataset_version": current.version if current else None,
            "dataset_uri": current.uri if current else None,
            "images": self.source.images,
            "rows": sum(shard.rows for shard in self.shards),
            "shards": [shard.name for shard in self.shards],
            "key_version": self.key.key_version,
            "cipher": self.key.cipher_json(),
            "validation": (
                validation_summary(self.shards, self.validation) if self.validation else {}
            ),
            "inbox": str(self.config.inbox_for(self.tenant_id)),
            "api_token": token,
        }


def shard_jobs(
    tenant_id: str,
    source: str,
    plan: ShardPlan,
    key_version: int,
    staging_uri: str,
    *,
    augment_variants: int = 0,
    index_offset: int = 0,
) -> list[ShardJob]:
    """One job per planned shard, named `<tenant>-<fingerprint[:10]>-<split>-<n>-k<key version>`;
    training shards get the augmented variants."""
    jobs, counters = [], {"train": 0, "validation": 0}
    for shard in plan.shards:
        split = shard.split
        name = f"{tenant_id}-{plan.fingerprint[:10]}-{split}-{counters[split]:04d}-k{key_version}"
        counters[split] += 1
        jobs.append(
            ShardJob(
                source=source,
                indices=shard.indices,
                folder_uri=staging_uri,
                shard_name=name,
                split=split,
                augment_variants=augment_variants if split == "train" else 0,
                index_offset=index_offset,
                fingerprint=plan.fingerprint,
            )
        )
    return jobs


def validation_summary(
    shards: Sequence[ShardWritten], checks: Mapping[str, SampleCheck]
) -> dict[str, Any]:
    """The validation part of a JSON result: rows written and each split's sample check."""
    return {
        "rows": sum(shard.rows for shard in shards),
        "samples": {split: check.to_json() for split, check in checks.items()},
    }


__all__ = [
    "OnboardingRequest",
    "check_registration",
    "load_onboarding_file",
    "onboard",
    "onboard_tenant",
    "onboard_tenants",
    "shard_jobs",
    "validation_summary",
]
