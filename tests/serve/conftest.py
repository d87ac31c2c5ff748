"""A running query endpoint for the serve tests: a platform home with two model versions of a small
ViT, tenants with API tokens and key stores, and Ray Serve on a free 127.0.0.1 port."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from patchveil.config import PlatformConfig
from patchveil.models.checkpoint import save_checkpoint
from patchveil.models.inference import predict_with_embeddings
from patchveil.models.reference import save_reference_embeddings
from patchveil.models.training import TrainConfig
from patchveil.models.vit import ModelSpec, create_vit_from_spec
from patchveil.registry.registry import Registry
from patchveil.tenants.keys import CipherSpec
from patchveil.tenants.keystore import KeyStore

MODEL_NAME = "serve-test"
IMAGE_SIZE = 16
BLOCK_SIZE = 4
TENANTS = ("acme", "globex", "initech", "burst")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def register_model(registry: Registry, root: Path, version_seed: int) -> None:
    """A random-weight position-free ViT checkpoint, recorded as the next version."""
    torch.manual_seed(version_seed)
    spec = ModelSpec(
        variant="position_free",
        size="test",
        image_size=IMAGE_SIZE,
        patch_size=BLOCK_SIZE,
        num_classes=10,
    )
    model = create_vit_from_spec(spec)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer)
    folder = save_checkpoint(
        root / f"v{version_seed}",
        model,
        optimizer,
        scheduler,
        epoch=1,
        model_spec=spec,
        train_config=TrainConfig(epochs=1),
        history=[],
        dataset_uri="none",
    )
    images = torch.randint(0, 256, (64, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.uint8).numpy()
    _, embeddings = predict_with_embeddings(model, images, torch.device("cpu"))
    save_reference_embeddings(str(folder), embeddings.numpy())
    registry.record_model_version(MODEL_NAME, checkpoint_uri=str(folder), model_card={"test": True})


@dataclass
class RunningEndpoint:
    url: str
    config: PlatformConfig
    tokens: dict[str, str]
    operator_token: str
    key_store: Path


def serving(
    tmp_path_factory: pytest.TempPathFactory, serve_he: bool = False, **overrides: Any
) -> Iterator[RunningEndpoint]:
    """An endpoint on a fresh platform home: the tenants of `TENANTS` with tokens and key stores,
    two model versions, version 1 served with this module's limits and `overrides` of them; with
    `serve_he`, also the tiny homomorphic model at /v2/models/tiny-he."""
    from patchveil.serve.runtime import start_endpoint, stop_endpoint, wait_until_ready
    from patchveil.serve.settings import ServeSettings

    home = tmp_path_factory.mktemp("serve-home")
    config = PlatformConfig(home=home)
    key_store = home / "tenant-keys"
    store = KeyStore(key_store)
    tokens = {}
    with Registry(config.registry_url) as registry:
        for tenant in TENANTS:
            registry.upsert_tenant(
                tenant, cipher="disposable", block_size=BLOCK_SIZE, image_size=IMAGE_SIZE
            )
            tokens[tenant] = registry.issue_api_token(tenant)
            store.create(
                tenant, CipherSpec("disposable", BLOCK_SIZE, IMAGE_SIZE, (("group", "none"),))
            )
        register_model(registry, home / "checkpoints", 1)
        register_model(registry, home / "checkpoints", 2)
    if serve_he:
        from tests.serve.he_fixtures import save_tiny_he_model

        save_tiny_he_model(home)
    settings = ServeSettings(
        **{
            "port": free_port(),
            "he_models": None if serve_he else (),
            "he_cpus": 0.5,
            "he_max_body_bytes": 12 << 20,  # the tiny model's throughput body is 10.9 MB
            "he_max_context_bytes": 8 << 20,  # a public context without Galois keys is 4.4 MB
            "max_images_per_request": 64,
            "max_body_bytes": 1 << 20,
            "images_per_second": 100.0,
            "burst_images": 300,
            "model_cpus": 0.5,
            "token_refresh_s": 0.5,
            **overrides,
        }
    )
    started = start_endpoint(config, MODEL_NAME, version=1, settings=settings)
    try:
        wait_until_ready(started.url)
        assert started.operator_token
        yield RunningEndpoint(started.url, config, tokens, started.operator_token, key_store)
    finally:
        stop_endpoint()


@pytest.fixture(scope="module")
def endpoint(
    tmp_path_factory: pytest.TempPathFactory, ray_session: Any, request: pytest.FixtureRequest
) -> Iterator[RunningEndpoint]:
    """The default layout (the model in a deployment of its own, behind Serve's proxy). A module
    that sets SERVE_HE = True also gets the tiny homomorphic model."""
    yield from serving(tmp_path_factory, bool(getattr(request.module, "SERVE_HE", False)))
