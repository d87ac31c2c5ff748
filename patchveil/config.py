"""Where platform state lives: one frozen `PlatformConfig`, read from the environment.

Everything the platform keeps (registry, datasets, checkpoints, logs) sits under one home folder,
`PATCHVEIL_HOME` (default `./.patchveil`), unless a URI or database URL says otherwise. Each
tenant's key store and inbox are separate folders the platform side never reads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from patchveil.errors import PatchveilError

# The largest image side a key may be made for (pixels): 4096² RGB images are 48 MiB each, so
# anything larger is a typo, not a photograph, and would end in a huge allocation.
MAX_IMAGE_SIZE = 4096

# The Ray namespace of every named actor (tenant actors, serve apps) of the platform.
RAY_NAMESPACE = "patchveil"

HOME_ENV = "PATCHVEIL_HOME"
DATASET_ROOT_ENV = "PATCHVEIL_DATASET_ROOT"
REGISTRY_URL_ENV = "PATCHVEIL_REGISTRY_URL"
CHECKPOINT_ROOT_ENV = "PATCHVEIL_CHECKPOINT_ROOT"
LOG_DIR_ENV = "PATCHVEIL_LOG_DIR"
DEFAULT_HOME = ".patchveil"
_DERIVED = Path()  # an empty path field means "derive it from home"

# Same rule as the tenant key store: tenant ids become folder names, so no '/' and no '..'.
_TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_tenant_id(tenant_id: str) -> str:
    """Return `tenant_id` if it is safe as a folder name and a column value, else raise."""
    # fullmatch: `$` alone would accept a trailing newline ("acme\n") as part of a folder name.
    if not isinstance(tenant_id, str) or not _TENANT_ID.fullmatch(tenant_id):
        raise PatchveilError(
            f"tenant id {tenant_id!r} is not valid: use 1–64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return tenant_id


def _absolute(path: Path | str) -> Path:
    # Absolute so Ray workers and Prefect tasks with another working directory agree on it.
    return Path(path).expanduser().absolute()


@dataclass(frozen=True)
class PlatformConfig:
    """The one place for platform configuration; fields left empty are derived from `home`.

    `dataset_root` and `checkpoint_root` are URIs: a local folder or anything
    `pyarrow.fs.FileSystem.from_uri` understands (`file:///…`, `s3://bucket/prefix`).
    `registry_url` is an SQLAlchemy URL (SQLite by default, PostgreSQL in production).
    """

    home: Path = field(default_factory=lambda: _absolute(DEFAULT_HOME))
    dataset_root: str = ""
    registry_url: str = ""
    checkpoint_root: str = ""
    log_dir: Path = _DERIVED

    def __post_init__(self) -> None:
        home = _absolute(self.home)
        object.__setattr__(self, "home", home)
        if not self.dataset_root:
            object.__setattr__(self, "dataset_root", str(home / "datasets"))
        if not self.registry_url:
            object.__setattr__(self, "registry_url", f"sqlite:///{home / 'registry.db'}")
        if not self.checkpoint_root:
            object.__setattr__(self, "checkpoint_root", str(home / "checkpoints"))
        log_dir = home / "logs" if Path(self.log_dir) == _DERIVED else _absolute(self.log_dir)
        object.__setattr__(self, "log_dir", log_dir)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PlatformConfig:
        """Build the configuration from `PATCHVEIL_*` variables (default: `os.environ`)."""
        env = os.environ if environ is None else environ
        log_dir = env.get(LOG_DIR_ENV)
        return cls(
            home=_absolute(env.get(HOME_ENV) or DEFAULT_HOME),
            dataset_root=env.get(DATASET_ROOT_ENV, ""),
            registry_url=env.get(REGISTRY_URL_ENV, ""),
            checkpoint_root=env.get(CHECKPOINT_ROOT_ENV, ""),
            log_dir=Path(log_dir) if log_dir else _DERIVED,
        )

    def tenant_home(self, tenant_id: str) -> Path:
        """The tenant's own folder, `<home>/tenants/<tenant_id>`."""
        return self.home / "tenants" / check_tenant_id(tenant_id)

    def key_store_for(self, tenant_id: str) -> Path:
        """Development default for a tenant's key store: `<home>/tenants/<tenant_id>/keys`.

        Only for running everything on one machine. A real tenant keeps its key store on its own
        side (the CLI's `--key-store`); nothing on the platform side reads this folder.
        """
        return self.tenant_home(tenant_id) / "keys"

    def inbox_for(self, tenant_id: str) -> Path:
        """Where new source images for a tenant are dropped: `<home>/tenants/<tenant_id>/inbox`."""
        return self.tenant_home(tenant_id) / "inbox"
