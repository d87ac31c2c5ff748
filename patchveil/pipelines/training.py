"""The training flow: one shared ViT from a published encrypted dataset version, into the registry.

`train_shared_model` reads like the runbook: pick the dataset version (the newest by default),
fit the model with Ray Train on its ciphertext, write a model card next to the checkpoint, record
the model version. The flow knows nothing of tensors and never sees a key or a plain image: the
dataset holds ciphertext only and tenants keep their keys.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from patchveil.config import PlatformConfig
from patchveil.datasets import DatasetVersion, list_versions, load_manifest, storage, version_uri
from patchveil.datasets.manifest import check_dataset_name
from patchveil.datasets.schema import IMAGE, LABEL, SPLITS, images_from_column
from patchveil.errors import PatchveilError
from patchveil.models.augment import AugmentConfig
from patchveil.models.ray_train import TrainingResult, fit_shared_model, read_columns
from patchveil.models.reference import (
    REFERENCE_COUNT,
    compute_reference_embeddings,
    sample_rows,
    save_reference_embeddings,
)
from patchveil.models.training import TrainConfig
from patchveil.models.vit import ModelSpec, variant_params
from patchveil.pipelines.publishing import check_trainable
from patchveil.pipelines.ray_runtime import ensure_ray
from patchveil.protocol import INPUT_CHANNELS, input_layout_of
from patchveil.registry import Registry, RegistryError
from patchveil.reporting import provenance

MODEL_CARD_NAME = "model_card.json"
TRAIN_SPLIT, VALIDATION_SPLIT = SPLITS

# Nothing a task returns is worth keeping in Prefect's result storage; training is not retried by
# Prefect because Ray Train already resumes failed workers from the latest checkpoint.
_OPTIONS: dict[str, Any] = {"persist_result": False, "cache_policy": NO_CACHE}


def resolve_dataset_version(
    config: PlatformConfig, dataset_name: str, dataset_version: int | None = None
) -> DatasetVersion:
    """The published version asked for, or the newest published one; refused when it holds a
    removed tenant's shards (`check_trainable`)."""
    check_dataset_name(dataset_name)
    if dataset_version is not None:
        chosen = load_manifest(version_uri(config.dataset_root, dataset_name, dataset_version))
    else:
        published = list_versions(config.dataset_root, dataset_name)
        if not published:
            raise PatchveilError(
                f"dataset {dataset_name!r} has no published version under {config.dataset_root}; "
                "onboard tenants into it first (patchveil onboard ...)"
            )
        chosen = published[-1]
    with Registry.from_config(config) as registry:
        return check_trainable(registry, chosen)


def count_classes(version: DatasetVersion) -> int:
    """Number of classes: one past the largest training label (read from the label column only)."""
    labels = read_columns(version, [LABEL], split="train")
    if labels.num_rows == 0:
        raise PatchveilError(f"dataset {version.name!r} v{version.version} has no training rows")
    largest = labels.column(LABEL).to_numpy().max()
    if largest < 0:
        raise PatchveilError(
            f"dataset {version.name!r} v{version.version} has only unlabelled images (label -1)"
        )
    return int(largest) + 1


def model_spec_for(
    version: DatasetVersion,
    variant: str,
    size: str,
    num_classes: int | None = None,
    invariance_group: str | None = None,
    position_window: int | None = None,
    orbit_pool: str | None = None,
) -> ModelSpec:
    """The ViT that fits a dataset version: patch size = block size, one block per token.

    `invariance_group`, `position_window` and `orbit_pool` go to the variants that declare them.
    """
    given = {
        "invariance_group": invariance_group,
        "position_window": position_window,
        "orbit_pool": orbit_pool,
    }
    declared = variant_params(variant)
    return ModelSpec(
        variant=variant,
        size=size,
        image_size=version.image_size,
        patch_size=version.block_size,
        num_classes=num_classes or count_classes(version),
        in_chans=INPUT_CHANNELS[input_layout_of(version.cipher)],
        params=tuple(
            (name, value) for name, value in given.items() if value is not None and name in declared
        ),
    )


@task(name="fit-shared-model", task_run_name="fit {run_name}", **_OPTIONS)
def fit_task(
    dataset_uri: str,
    model_spec: dict[str, Any],
    train_config: dict[str, Any],
    storage_path: str,
    run_name: str,
    num_workers: int,
    use_gpu: bool,
    max_failures: int,
    cpus_per_worker: float = 1.0,
    echo_progress: bool = False,
) -> dict[str, Any]:
    """Train on the version's ciphertext with Ray Train; the checkpoint and per-epoch metrics."""
    result = fit_shared_model(
        dataset_uri,
        ModelSpec.from_json(model_spec),
        TrainConfig.from_json(train_config),
        storage_path=storage_path,
        run_name=run_name,
        num_workers=num_workers,
        use_gpu=use_gpu,
        max_failures=max_failures,
        cpus_per_worker=cpus_per_worker,
        echo_progress=echo_progress,
    )
    return result.to_json()


def model_card(
    model_name: str,
    version: DatasetVersion,
    model_spec: ModelSpec,
    train_config: TrainConfig,
    result: TrainingResult,
    *,
    num_workers: int,
    use_gpu: bool,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """What a model is and how well it does, per tenant, with the provenance of the figures."""
    final = result.final_metrics
    return {
        "model_name": model_name,
        "dataset": {
            "name": version.name,
            "version": version.version,
            "uri": version.uri,
            "cipher": version.cipher,
            "block_size": version.block_size,
            "image_size": version.image_size,
            "tenants": version.key_versions,
            "rows": version.rows,
        },
        "model_spec": model_spec.to_json(),
        "train_config": train_config.to_json(),
        "tenant_accuracy": dict(result.tenant_accuracy),
        "val_accuracy": final.get("val_accuracy"),
        "epochs": [dict(epoch) for epoch in result.epochs],
        "train_seconds": result.seconds,
        "checkpoint_uri": result.checkpoint_path,
        "num_workers": num_workers,
        "use_gpu": use_gpu,
        **provenance(command),
    }


@task(name="write-model-card", **_OPTIONS)
def write_model_card(card: dict[str, Any], checkpoint_uri: str) -> str:
    """Write the card as `model_card.json` beside the checkpoint folder, atomically."""
    card_uri = storage.join_uri(storage.parent_uri(checkpoint_uri), MODEL_CARD_NAME)
    storage.write_bytes_atomic(card_uri, (json.dumps(card, indent=2) + "\n").encode())
    return card_uri


@task(name="write-reference-embeddings", **_OPTIONS)
def write_reference_task(
    checkpoint_uri: str, dataset_uri: str, unpack_nibbles: bool, count: int = REFERENCE_COUNT
) -> dict[str, Any]:
    """The trained model's embeddings of up to `count` of the version's held-out ciphertexts
    (its training rows where it holds none), saved beside the checkpoint for the endpoint."""

    from patchveil.models.checkpoint import load_trained_model

    version = load_manifest(dataset_uri)
    split = VALIDATION_SPLIT
    table = read_columns(version, [IMAGE], split)
    if table.num_rows < 2:
        split = TRAIN_SPLIT
        table = read_columns(version, [IMAGE], split)
    images = np.asarray(images_from_column(table.column(IMAGE)))
    chosen = images[sample_rows(len(images), count)]
    model, _ = load_trained_model(checkpoint_uri)
    embeddings = compute_reference_embeddings(model, chosen, unpack_nibbles=unpack_nibbles)
    uri = save_reference_embeddings(checkpoint_uri, embeddings)
    return {"uri": uri, "rows": len(chosen), "split": split}


@task(name="record-model-version", task_run_name="record {model_name}", **_OPTIONS)
def record_model(
    config: PlatformConfig, model_name: str, card: dict[str, Any], checkpoint_uri: str
) -> dict[str, Any]:
    """Record the model version; linked to its dataset version where the registry knows it."""
    dataset = card["dataset"]
    with Registry.from_config(config) as registry:
        try:
            registry.get_dataset_version(dataset["name"], dataset["version"])
            link = {"dataset_name": dataset["name"], "dataset_version": dataset["version"]}
        except RegistryError:
            link = {}  # published outside the onboarding flows: the card still names it
        record = registry.record_model_version(
            model_name, checkpoint_uri=checkpoint_uri, model_card=card, **link
        )
    return {
        "name": record.name,
        "version": record.version,
        "dataset_linked": bool(link),
        "created_at": record.created_at.isoformat(),
    }


@flow(name="train-shared-model", persist_result=False)
def train_shared_model(
    dataset_name: str,
    dataset_version: int | None = None,
    variant: str = "standard",
    size: str = "cpu",
    epochs: int = TrainConfig.epochs,
    batch_size: int = TrainConfig.batch_size,
    learning_rate: float = TrainConfig.learning_rate,
    weight_decay: float = TrainConfig.weight_decay,
    warmup_epochs: float = TrainConfig.warmup_epochs,
    label_smoothing: float = TrainConfig.label_smoothing,
    mixup_alpha: float = AugmentConfig.mixup_alpha,
    block_cutmix_prob: float = AugmentConfig.block_cutmix_prob,
    token_dropout: float = AugmentConfig.token_dropout,
    seed: int = TrainConfig.seed,
    num_classes: int | None = None,
    num_workers: int = 1,
    use_gpu: bool = False,
    max_failures: int = 2,
    model_name: str | None = None,
    invariance_group: str | None = None,
    cpus_per_worker: float = 1.0,
    position_window: int | None = None,
    orbit_pool: str | None = None,
    echo_progress: bool = False,
) -> dict[str, Any]:
    """Train the shared ViT on a dataset version's ciphertext and record it in the registry.

    Returns a JSON-able summary: model name and version, checkpoint and card locations, the
    dataset version used, per-tenant validation accuracy and training time. `echo_progress`:
    one line per epoch on this process's stdout, whether or not Ray forwards workers' output.
    """
    logger = get_run_logger()
    config = PlatformConfig.from_env()
    version = resolve_dataset_version(config, dataset_name, dataset_version)
    spec = model_spec_for(
        version, variant, size, num_classes, invariance_group, position_window, orbit_pool
    )
    train_config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        label_smoothing=label_smoothing,
        seed=seed,
        unpack_nibbles=input_layout_of(version.cipher) == "nibbles",
        augment=AugmentConfig(
            mixup_alpha=mixup_alpha,
            block_cutmix_prob=block_cutmix_prob,
            token_dropout=token_dropout,
        ),
    )
    name = model_name or f"{version.name}-{variant}-{size}"
    run_name = f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    logger.info(
        "training %s on dataset %s v%d (%s, %d rows, tenants %s), run %s",
        name,
        version.name,
        version.version,
        version.cipher,
        version.rows,
        ", ".join(version.tenant_ids),
        run_name,
    )
    ensure_ray(config)
    result = TrainingResult.from_json(
        fit_task(
            version.uri,
            spec.to_json(),
            train_config.to_json(),
            config.checkpoint_root,
            run_name,
            num_workers,
            use_gpu,
            max_failures,
            cpus_per_worker,
            echo_progress,
        )
    )
    card = model_card(
        name, version, spec, train_config, result, num_workers=num_workers, use_gpu=use_gpu
    )
    card_uri = write_model_card(card, result.checkpoint_path)
    reference = write_reference_task(
        result.checkpoint_path, version.uri, train_config.unpack_nibbles
    )
    logger.info(
        "reference embeddings for the endpoint: %d %s rows", reference["rows"], reference["split"]
    )
    record = record_model(config, name, card, result.checkpoint_path)
    logger.info(
        "model %s v%d: validation accuracy %s", name, record["version"], result.tenant_accuracy
    )
    return {
        "model_name": record["name"],
        "model_version": record["version"],
        "checkpoint_uri": result.checkpoint_path,
        "model_card_uri": card_uri,
        "reference_embeddings_uri": reference["uri"],
        "dataset": {"name": version.name, "version": version.version, "uri": version.uri},
        "tenant_accuracy": dict(result.tenant_accuracy),
        "val_accuracy": result.final_metrics.get("val_accuracy"),
        "epochs": len(result.epochs),
        "train_seconds": result.seconds,
    }


__all__ = [
    "MODEL_CARD_NAME",
    "count_classes",
    "model_card",
    "model_spec_for",
    "resolve_dataset_version",
    "train_shared_model",
]
