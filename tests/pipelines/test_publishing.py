"""Staging folders: named after the time they were made; crashed runs' folders are swept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from patchveil.config import PlatformConfig
from patchveil.pipelines.publishing import (
    STAGING_FOLDER,
    new_staging_uri,
    sweep_stale_staging,
)


def test_stale_staging_folders_are_swept_and_fresh_ones_kept(tmp_path: Path) -> None:
    config = PlatformConfig(home=tmp_path)
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    old = Path(new_staging_uri(config, "demo", now=now - timedelta(days=2)))
    fresh = Path(new_staging_uri(config, "demo", now=now - timedelta(hours=1)))
    foreign = old.parent / "kept-by-hand"
    for folder in (old, fresh, foreign):
        folder.mkdir(parents=True)
        (folder / "shard.parquet").write_bytes(b"x")
    assert old.parent.name == STAGING_FOLDER
    assert old.name.startswith("20261121T120000Z-")

    assert sweep_stale_staging(config, "demo", now=now) == [old.name]
    assert not old.exists()
    assert fresh.exists() and foreign.exists()
    assert sweep_stale_staging(config, "demo", now=now) == []
    assert sweep_stale_staging(config, "never-published", now=now) == []
