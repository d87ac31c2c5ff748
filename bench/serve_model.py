"""A trained platform for the serve benchmarks: tenants with key stores and API tokens, and a ViT
trained on their disposable-encrypted CIFAR-10 images, recorded in a registry.

Shared by `bench/serve_*.py`, `bench/clone_*.py` and the demo's serve stage. The model is trained
in this process (the same loop Ray Train runs) and cached under `.bench-cache/` keyed by its
settings, so the benchmarks that need it do not each train it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from patchveil.config import PlatformConfig
from patchveil.models.checkpoint import save_checkpoint
from patchveil.models.training import (
    TrainConfig,
    accuracy,
    build_optimizer,
    in_memory_batches,
    train_one_epoch,
    warmup_cosine,
)
from patchveil.models.vit import ModelSpec, create_vit_from_spec
from patchveil.registry.registry import Registry
from patchveil.serve.runtime import Endpoint
from patchveil.serve.settings import ServeSettings
from patchveil.tenants.client import Tenant
from patchveil.tenants.keys import CipherSpec
from patchveil.tenants.keystore import KeyStore
from patchveil.tenants.loaders import LabeledImages, default_cifar_dir, load_source

CACHE = Path(".bench-cache")
MODEL_NAME = "cifar-disposable-w4"
BLOCK_SIZE = 4
WINDOW = 4


@dataclass(frozen=True)
class ServedPlatform:
    """What a serve benchmark needs: the home, tenant tokens, the key store, data splits."""

    home: Path
    tokens: dict[str, str]
    key_store: Path
    victim_train: LabeledImages  # the tenants' images the model was trained on
    attacker_pool: LabeledImages  # disjoint images a cloner owns
    test: LabeledImages
    plain_accuracy_note: str

    @property
    def config(self) -> PlatformConfig:
        return PlatformConfig(home=self.home)


@dataclass(frozen=True)
class ModelSettings:
    tenants: int = 3
    victim_images: int = 5000
    epochs: int = 6
    size: str = "cpu"
    seed: int = 0

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def cifar_splits(victim_images: int) -> tuple[LabeledImages, LabeledImages, LabeledImages]:
    folder = default_cifar_dir()
    if folder is None:
        raise SystemExit("the CIFAR-10 subset is missing (../shared/data/cifar-10-subset-py)")
    train, test = load_source(folder), load_source(folder, "test")
    order = np.random.default_rng(0).permutation(len(train.images))
    return (
        train.subset(order[:victim_images]),
        train.subset(order[victim_images:]),
        test,
    )


def _tenant_ids(count: int) -> list[str]:
    return [f"tenant-{index + 1}" for index in range(count)]


def _train(
    platform_home: Path, settings: ModelSettings, victim: LabeledImages
) -> dict[str, object]:
    store = KeyStore(platform_home / "tenant-keys")
    tenants = _tenant_ids(settings.tenants)
    shares = np.array_split(np.arange(len(victim.images)), settings.tenants)
    images, labels, groups = [], [], []
    spec_cipher = CipherSpec("disposable", BLOCK_SIZE, 32, (("group", "none"), ("window", WINDOW)))
    for index, (tenant_id, share) in enumerate(zip(tenants, shares, strict=True)):
        store.create(tenant_id, spec_cipher)
        images.append(Tenant(tenant_id, store).encrypt(victim.images[share]).images)
        labels.append(victim.labels[share])
        groups.append(np.full(len(share), index))
    train_images, train_labels = np.concatenate(images), np.concatenate(labels)
    train_groups = np.concatenate(groups)
    torch.manual_seed(settings.seed)
    spec = ModelSpec(
        variant="window_position",
        size=settings.size,
        image_size=32,
        patch_size=BLOCK_SIZE,
        num_classes=10,
        params=(("position_window", WINDOW),),
    )
    model = create_vit_from_spec(spec)
    config = TrainConfig(epochs=settings.epochs, batch_size=128, seed=settings.seed)
    optimizer = build_optimizer(model, config)
    steps = settings.epochs * -(-len(train_images) // config.batch_size)
    scheduler = warmup_cosine(optimizer, steps, int(steps * config.warmup_epochs / settings.epochs))
    generator = np.random.default_rng(settings.seed)
    torch_generator = torch.Generator().manual_seed(settings.seed)
    device = torch.device("cpu")
    history = []
    for epoch in range(settings.epochs):
        stats = train_one_epoch(
            model,
            in_memory_batches(
                train_images, train_labels, train_groups, config.batch_size, generator
            ),
            optimizer,
            scheduler,
            config,
            10,
            BLOCK_SIZE,
            device,
            torch_generator,
        )
        history.append({"epoch": epoch + 1, "loss": stats.loss, "train_accuracy": stats.accuracy})
        print(
            f"  serve model: epoch {epoch + 1}/{settings.epochs} loss {stats.loss:.3f}", flush=True
        )
    folder = save_checkpoint(
        platform_home / "checkpoints" / MODEL_NAME,
        model,
        optimizer,
        scheduler,
        epoch=settings.epochs,
        model_spec=spec,
        train_config=config,
        history=history,
        dataset_uri="bench/serve_model.py (in-process)",
    )
    return {"checkpoint": str(folder), "history": history}


def served_platform(settings: ModelSettings | None = None) -> ServedPlatform:
    """The cached trained platform for `settings` (trained on first use, a few minutes on CPU)."""
    settings = settings or ModelSettings()
    victim, attacker, test = cifar_splits(settings.victim_images)
    home = (CACHE / f"serve-{settings.digest()}").absolute()
    done = home / "ready.json"
    if not done.is_file():
        if home.exists():
            shutil.rmtree(home)
        home.mkdir(parents=True)
        started = time.perf_counter()
        trained = _train(home, settings, victim)
        config = PlatformConfig(home=home)
        tokens = {}
        with Registry(config.registry_url) as registry:
            for tenant_id in [*_tenant_ids(settings.tenants), "cloner", "benign-1", "benign-2"]:
                registry.upsert_tenant(
                    tenant_id, cipher="disposable", block_size=BLOCK_SIZE, image_size=32
                )
                tokens[tenant_id] = registry.issue_api_token(tenant_id)
            registry.record_model_version(
                MODEL_NAME,
                checkpoint_uri=str(trained["checkpoint"]),
                model_card={"history": trained["history"], "settings": asdict(settings)},
            )
        store = KeyStore(home / "tenant-keys")
        for tenant_id in ("cloner", "benign-1", "benign-2"):
            store.create(
                tenant_id,
                CipherSpec("disposable", BLOCK_SIZE, 32, (("group", "none"), ("window", WINDOW))),
            )
        (home / "tokens.json").write_text(json.dumps(tokens))  # bench cache only, never committed
        done.write_text(json.dumps({"seconds": time.perf_counter() - started, **asdict(settings)}))
    _ensure_reference(home, victim)
    tokens = json.loads((home / "tokens.json").read_text())
    return ServedPlatform(
        home=home,
        tokens=tokens,
        key_store=home / "tenant-keys",
        victim_train=victim,
        attacker_pool=attacker,
        test=test,
        plain_accuracy_note="",
    )


def _ensure_reference(home: Path, victim: LabeledImages, count: int = 512) -> None:
    """Reference embeddings beside the checkpoint: the model's embeddings of tenants' training
    ciphertexts (what the defence's hash and the monitor's OOD signal are fitted to)."""
    from patchveil.models.checkpoint import load_trained_model
    from patchveil.models.inference import predict_with_embeddings
    from patchveil.models.reference import REFERENCE_FILE, save_reference_embeddings

    config = PlatformConfig(home=home)
    with Registry(config.registry_url) as registry:
        record = registry.list_model_versions(MODEL_NAME)[-1]
    if (Path(record.checkpoint_uri) / REFERENCE_FILE).is_file():
        return
    model, _ = load_trained_model(record.checkpoint_uri)
    ciphertexts = Tenant("tenant-1", home / "tenant-keys").encrypt(victim.images[:count]).images
    _, embeddings = predict_with_embeddings(model, ciphertexts, torch.device("cpu"))
    save_reference_embeddings(record.checkpoint_uri, embeddings.numpy())


def served_accuracy(platform: ServedPlatform) -> float:
    """The trained model's accuracy on the test images, each under a fresh query key."""
    from patchveil.models.checkpoint import load_trained_model

    with Registry(platform.config.registry_url) as registry:
        record = registry.list_model_versions(MODEL_NAME)[-1]
    model, _ = load_trained_model(record.checkpoint_uri)
    encrypted = Tenant("benign-1", platform.key_store).encrypt_query(platform.test.images).images
    return accuracy(model, encrypted, platform.test.labels, torch.device("cpu"))


@contextlib.contextmanager
def endpoint_running(
    platform: ServedPlatform, settings: ServeSettings | None = None
) -> Iterator[Endpoint]:
    """The served model on a local Ray (4 logical CPUs) and Serve on a free 127.0.0.1 port."""
    import ray

    from patchveil.pipelines.ray_runtime import ensure_ray
    from patchveil.serve.runtime import start_endpoint, stop_endpoint, wait_until_ready

    ensure_ray(platform.config, num_cpus=4, log_level="WARNING")
    # The port is picked once Ray has started (and taken the ports it binds at start).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    settings = replace(settings or ServeSettings(), port=port)
    try:
        endpoint = start_endpoint(platform.config, MODEL_NAME, settings=settings)
        wait_until_ready(endpoint.url, timeout_s=180)
        yield endpoint
    finally:
        stop_endpoint()
        ray.shutdown()
