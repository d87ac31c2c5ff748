"""The trust boundary is checkable from the imports: platform packages load no tenant-side code."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from patchveil.protocol import input_layout_of
from patchveil.tenants.ciphers import available_ciphers, cipher_class

# Every package that runs on the platform's side (serve/, tune/, federated/ once they exist).
PLATFORM_PACKAGES = [
    name
    for name in ("datasets", "registry", "models", "pipelines", "serve", "tune", "federated")
    if importlib.util.find_spec(f"patchveil.{name}") is not None
]
TENANT_SIDE = ("patchveil.tenants", "patchveil.actors")

_LOADED_TENANT_MODULES = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(module.name)
print(json.dumps(sorted(
    name for name in sys.modules if name.startswith(tuple(sys.argv[2:]))
)))
"""


@pytest.mark.parametrize("package", PLATFORM_PACKAGES)
def test_a_platform_package_loads_no_tenant_side_module(package: str) -> None:
    """In a fresh interpreter, the package and every module under it import without loading a
    key store, a cipher, a plain-image loader or the tenant actor."""
    completed = subprocess.run(
        [sys.executable, "-c", _LOADED_TENANT_MODULES, f"patchveil.{package}", *TENANT_SIDE],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == []


def test_every_cipher_declares_the_input_layout_the_platform_reads() -> None:
    """The platform learns a cipher's ciphertext layout from the protocol, by cipher name; it
    must agree with what the cipher itself declares."""
    for name in available_ciphers():
        assert cipher_class(name).input_layout == input_layout_of(name), name
