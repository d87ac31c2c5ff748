"""Fixtures for the flows: real Ray, Prefect's harness, a platform home per module, CIFAR slices."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from patchveil.config import HOME_ENV, PlatformConfig
from patchveil.pipelines.tenant_handle import NAMESPACE
from patchveil.tenants.loaders import LabeledImages, default_cifar_dir, load_source


@pytest.fixture(scope="session")
def cifar_images() -> LabeledImages:
    """Real CIFAR-10 images from the shared subset (synthetic 32×32 images where it is absent)."""
    folder = default_cifar_dir()
    if folder is not None:
        data = load_source(folder)
        return data.subset(np.arange(2000))
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, (2000, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(2000, dtype=np.int64) % 10
    return LabeledImages(images, labels, tuple(f"class{label}" for label in range(10)))


def write_source(data: LabeledImages, path: Path) -> str:
    """A tenant source file (`.npz` with images, labels, class names)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        images=data.images,
        labels=data.labels,
        class_names=np.asarray(data.class_names, dtype=np.str_),
    )
    return str(path)


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory, ray_session: Any, prefect_harness: dict[str, Path]
) -> Iterator[PlatformConfig]:
    """A fresh platform home for one test module (the flows read it from PATCHVEIL_HOME).

    Tenant actors started by the module are killed at its end, so they do not hold Ray's CPUs.
    """
    home = tmp_path_factory.mktemp("platform") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(HOME_ENV, str(home))
        for name in ("PATCHVEIL_DATASET_ROOT", "PATCHVEIL_REGISTRY_URL", "PATCHVEIL_LOG_DIR"):
            patch.delenv(name, raising=False)
        patch.delenv("PATCHVEIL_KEYSTORE_PASSPHRASE", raising=False)
        config = PlatformConfig.from_env()
        assert os.environ[HOME_ENV] == str(home)
        yield config
    for actor in ray_session.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == NAMESPACE and actor["name"].startswith("tenant-"):
            ray_session.kill(ray_session.get_actor(actor["name"], namespace=NAMESPACE))
