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


@pytest.fixture(scope="module")
def loaded_tenant_modules() -> dict[str, tuple[int, str, str]]:
    """Per platform package: a fresh interpreter imports it and every module under it, and
    lists the tenant-side modules that got loaded. All interpreters start at once (most of their
    time is importing torch and Ray: two cores run two); (return code, stdout, stderr) each."""
    running = {
        package: subprocess.Popen(
            [sys.executable, "-c", _LOADED_TENANT_MODULES, f"patchveil.{package}", *TENANT_SIDE],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for package in PLATFORM_PACKAGES
    }
    results = {}
    for package, process in running.items():
        stdout, stderr = process.communicate(timeout=300)
        results[package] = (process.returncode, stdout, stderr)
    return results


@pytest.mark.parametrize("package", PLATFORM_PACKAGES)
def test_a_platform_package_loads_no_tenant_side_module(
    package: str, loaded_tenant_modules: dict[str, tuple[int, str, str]]
) -> None:
    """In a fresh interpreter, the package and every module under it import without loading a
    key store, a cipher, a plain-image loader or the tenant actor."""
    returncode, stdout, stderr = loaded_tenant_modules[package]
    assert returncode == 0, stderr
    assert json.loads(stdout.strip().splitlines()[-1]) == []


def test_every_cipher_declares_the_input_layout_the_platform_reads() -> None:
    """The platform learns a cipher's ciphertext layout from the protocol, by cipher name; it
    must agree with what the cipher itself declares."""
    for name in available_ciphers():
        assert cipher_class(name).input_layout == input_layout_of(name), name
