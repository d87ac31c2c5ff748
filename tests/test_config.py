"""Tests for the platform configuration: one home, derived defaults, environment overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from patchveil.config import PlatformConfig, check_tenant_id
from patchveil.errors import PatchveilError


def test_defaults_live_under_home(tmp_path: Path) -> None:
    config = PlatformConfig(home=tmp_path)
    assert config.home == tmp_path
    assert config.dataset_root == str(tmp_path / "datasets")
    assert config.registry_url == f"sqlite:///{tmp_path / 'registry.db'}"
    assert config.checkpoint_root == str(tmp_path / "checkpoints")
    assert config.log_dir == tmp_path / "logs"


def test_tenant_folders_are_separate_from_platform_state(tmp_path: Path) -> None:
    config = PlatformConfig(home=tmp_path)
    assert config.key_store_for("acme") == tmp_path / "tenants" / "acme" / "keys"
    assert config.inbox_for("acme") == tmp_path / "tenants" / "acme" / "inbox"
    platform_side = [Path(config.dataset_root), Path(config.checkpoint_root), config.log_dir]
    for folder in platform_side:
        assert not config.key_store_for("acme").is_relative_to(folder)


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", ".hidden", "x" * 65])
def test_tenant_ids_that_could_escape_a_folder_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(PatchveilError, match="tenant id"):
        PlatformConfig(home=tmp_path).key_store_for(bad)
    with pytest.raises(PatchveilError):
        check_tenant_id(bad)


def test_from_env_reads_home_and_overrides(tmp_path: Path) -> None:
    config = PlatformConfig.from_env(
        {
            "PATCHVEIL_HOME": str(tmp_path / "home"),
            "PATCHVEIL_REGISTRY_URL": "postgresql://registry@db/patchveil",
            "PATCHVEIL_DATASET_ROOT": "s3://bucket/datasets",
        }
    )
    assert config.home == tmp_path / "home"
    assert config.registry_url == "postgresql://registry@db/patchveil"
    assert config.dataset_root == "s3://bucket/datasets"
    assert config.checkpoint_root == str(tmp_path / "home" / "checkpoints")


def test_from_env_default_home_is_absolute_dot_patchveil(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = PlatformConfig.from_env({})
    assert config.home == tmp_path / ".patchveil"
    assert config.home.is_absolute()


def test_config_is_frozen(tmp_path: Path) -> None:
    config = PlatformConfig(home=tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.home = tmp_path / "other"  # type: ignore[misc]
