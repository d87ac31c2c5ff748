"""Demo stage 8: a cloner extracts the served model, the monitor flags it, the clone check names
the clone.

The cloner is a tenant like any other (its own key, its own token). It owns a few hundred plain
CIFAR-10 images and makes thousands of distinct queries from them (flips and shifts: each is a
new image to the model), each encrypted under a fresh key, and trains a small CNN on the labels
it gets back. The operator's monitor counts distinct images per tenant; the clone check probes
the stolen model and, as a null, models trained the same way on the same images with their true
labels (what an honest competitor with that data would have), and asks whose answers it repeats.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from patchveil.config import PlatformConfig
    from patchveil.tenants.keys import CipherSpec

CLONER = "outsider-x"
BATCH = 256


def variants(images: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` distinct variants of `images` [N, H, W, 3] (every image, mirrored or not, shifted
    by up to 4 pixels with a reflected border; shuffled, no repeats) and each one's source."""
    rng = np.random.default_rng(seed)
    shifts = [(dy, dx) for dy in range(-4, 5, 2) for dx in range(-4, 5, 2)]
    combos = [(i, flip, s) for i in range(len(images)) for flip in (0, 1) for s in shifts]
    if count > len(combos):
        raise ValueError(f"{len(images)} images give at most {len(combos)} variants")
    chosen = rng.choice(len(combos), size=count, replace=False)
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    size = images.shape[1]
    out = np.empty((count, *images.shape[1:]), dtype=np.uint8)
    sources = np.empty(count, dtype=np.int64)
    for row, index in enumerate(chosen):
        image, flip, (dy, dx) = combos[index]
        crop = padded[image, 4 + dy : 4 + dy + size, 4 + dx : 4 + dx + size]
        out[row] = crop[:, ::-1] if flip else crop
        sources[row] = image
    return out, sources


def small_cnn(classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 128),
        nn.ReLU(),
        nn.Linear(128, classes),
    )


def train_cnn(images: np.ndarray, labels: np.ndarray, epochs: int, seed: int) -> nn.Module:
    """A small CNN on plain images in [0, 1] (what a cloner, or an honest competitor, trains)."""
    torch.manual_seed(seed)
    model = small_cnn()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    inputs = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    targets = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for rows in torch.randperm(len(inputs), generator=generator).split(64):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(inputs[rows]), targets[rows]).backward()
            optimiser.step()
    return model.eval()


def save_torchscript(model: nn.Module, path: Path) -> Path:
    """The model as a suspect file: TorchScript taking float [N, 3, 32, 32] in [0, 1]."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice; it still works
        torch.jit.trace(model.eval(), torch.rand(2, 3, 32, 32)).save(str(path))
    return path


@dataclass(frozen=True)
class CloneOutcome:
    queries: int
    flagged_after: int | None
    clone_accuracy: float
    agreement_with_served: float
    verdicts: dict[str, dict[str, object]]


def _register_cloner(config: PlatformConfig, spec: CipherSpec, store: Path) -> str:
    from patchveil.registry import Registry
    from patchveil.tenants.keystore import KeyStore

    KeyStore(store).create(CLONER, spec)
    with Registry.from_config(config) as registry:
        registry.upsert_tenant(
            CLONER, cipher=spec.name, block_size=spec.block_size, image_size=spec.image_size
        )
        return registry.issue_api_token(CLONER)


def _risk(url: str, operator_token: str) -> dict[str, object]:
    import httpx

    answer = httpx.get(
        f"{url}/admin/risk", headers={"Authorization": f"Bearer {operator_token}"}, timeout=30
    ).json()
    return next((t for t in answer.get("tenants", []) if t["tenant_id"] == CLONER), {})


def _extract(
    url: str, model_name: str, token: str, store: Path, queries: np.ndarray, operator_token: str
) -> tuple[np.ndarray, int | None]:
    """Send the cloner's queries; the answers, and after how many the operator saw a flag."""
    import httpx

    from patchveil.tenants.client import Tenant
    from patchveil.tenants.query_client import QueryClient, QueryError

    tenant = Tenant(CLONER, store)
    labels, flagged_after = [], None
    risk: dict[str, object] = {}
    deadline = time.monotonic() + 30  # a new token reaches the gateway within its refresh time
    with QueryClient(url, token) as client:
        for start in range(0, len(queries), BATCH):
            ciphertexts = tenant.encrypt_query(queries[start : start + BATCH]).images
            while True:
                try:
                    answer = client.infer(model_name, ciphertexts)
                    break
                except QueryError as error:  # a token the gateway does not know yet: retried
                    if "answered 401" not in str(error) or time.monotonic() > deadline:
                        raise
                    time.sleep(1.0)
            labels.append(answer.labels)
            sent = start + len(ciphertexts)
            with contextlib.suppress(httpx.HTTPError, ValueError):
                risk = _risk(url, operator_token)
                if flagged_after is None and risk.get("flagged"):
                    flagged_after = int(risk.get("flagged_at") or sent)
                    print(
                        f"  operator's monitor FLAGS {CLONER} after {flagged_after} queries "
                        f"({risk.get('distinct_queries')} distinct images; "
                        f"{'; '.join(str(a) for a in risk.get('alerts', []))})"
                    )
            if (start // BATCH) % 4 == 3 or sent == len(queries):
                print(f"  {CLONER}: {sent}/{len(queries)} queries, clone risk {risk.get('risk')}")
    return np.concatenate(labels), flagged_after


def clone_stage(
    config: PlatformConfig,
    url: str,
    model_name: str,
    operator_token: str,
    spec: CipherSpec,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    served_labels: np.ndarray,
    out: Path,
    queries: int = 3000,
    epochs: int = 8,
    nulls: int = 3,
) -> CloneOutcome:
    """Stage 8 against the running endpoint. `test_images[:probes]` are the clone check's
    probes (`served_labels` are the endpoint's answers to a tenant on them); the cloner owns
    the rest of the test images."""
    from patchveil.cli import main as cli_main
    from patchveil.tenants.keystore import KeyStore

    folder = out / "clone"
    folder.mkdir(parents=True, exist_ok=True)
    probes = len(served_labels)
    owned, owned_labels = test_images[probes:], test_labels[probes:]
    store = folder / "cloner-keys"
    token = _register_cloner(config, spec, store)
    sent, sources = variants(owned, queries, seed=0)
    print(
        f"  {CLONER} owns {len(owned)} plain images and makes {queries} distinct queries from "
        "them (flips, shifts), each encrypted under a fresh key"
    )
    stolen, flagged_after = _extract(url, model_name, token, store, sent, operator_token)
    clone = train_cnn(sent, stolen, epochs, seed=1)
    with torch.no_grad():
        probe_inputs = torch.from_numpy(test_images[:probes]).permute(0, 3, 1, 2).float() / 255
        clone_top1 = clone(probe_inputs).argmax(dim=1).numpy()
    accuracy = float((clone_top1 == test_labels[:probes]).mean())
    agreement = float((clone_top1 == served_labels).mean())
    print(
        f"  clone (small CNN, {epochs} epochs on the stolen labels): {accuracy:.1%} on the probe "
        f"images, agrees with the served model on {agreement:.1%}"
    )
    # The null: the same recipe on the same images with their true labels.
    true_labels = np.asarray(owned_labels, dtype=np.int64)[sources]
    null_files = [
        save_torchscript(train_cnn(sent, true_labels, epochs, seed=10 + n), folder / f"null-{n}.pt")
        for n in range(nulls)
    ]
    competitor = train_cnn(sent, true_labels, epochs, seed=99)
    with torch.no_grad():
        competitor_top1 = competitor(probe_inputs).argmax(dim=1).numpy()
    print(
        f"  an honest competitor (same images, true labels): "
        f"{np.mean(competitor_top1 == test_labels[:probes]):.1%} on the probe images; the "
        "stolen labels carried the defence's intentional errors once the cloner's volume rose"
    )
    honest = save_torchscript(competitor, folder / "honest.pt")
    clone_file = save_torchscript(clone, folder / "clone.pt")
    np.save(folder / "probes.npy", test_images[:probes])
    np.save(folder / "probe-labels.npy", test_labels[:probes])  # the operator's own probe set
    operator_store = folder / "operator-keys"
    KeyStore(operator_store).create("operator", spec)
    verdicts = {}
    for name, suspect in (("stolen model", clone_file), ("honest competitor", honest)):
        arguments = ["clone-check", "--model", model_name, "--suspect", str(suspect)]
        arguments += ["--probes", str(folder / "probes.npy"), "--store", str(operator_store)]
        arguments += ["--tenant", "operator", "--json"]
        arguments += ["--probe-labels", str(folder / "probe-labels.npy")]
        for null in null_files:
            arguments += ["--null", str(null)]
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            cli_main(arguments)
        verdict = json.loads(captured.getvalue().strip().splitlines()[-1])
        verdicts[name] = verdict
        shared = verdict["shared_errors"]
        print(
            f"  patchveil clone-check on the {name}: "
            f"{'CLONE' if verdict['is_clone'] else 'not a clone'} "
            f"(repeats {shared['rate']:.1%} of {shared['error_probes']} wrong answers of ours that "
            f"the honest models do not give, against their {shared['null_rate']:.1%}: p = "
            f"{shared['p_value']:.1g}, a clone at ≤ {verdict['significance']:g}; label agreement "
            f"{verdict['scores']['label_agreement']:.1%}, z {verdict['score']:.1f}; null of "
            f"{nulls} honest models)"
        )
    return CloneOutcome(queries, flagged_after, accuracy, agreement, verdicts)
