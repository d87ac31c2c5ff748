"""The tenant's federated client: trains the global model with its own key lock where its data lives.

Tenant side. The client opens the tenant's key store itself, derives the key vector from the
key's keystream, and keeps the lock layers (and the key) inside: `fit` returns only the shared
weights (`patchveil.models.key_lock.shared_state`), never the lock's or the key. The lock's
weights survive an actor restart in a tenant-owned folder (`lock_state_dir`), next to nothing the
platform reads. Used as a Ray actor (`patchveil.pipelines.federated` starts it) or in process.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from patchveil.config import check_tenant_id
from patchveil.errors import PatchveilError
from patchveil.federated.local import accuracy, train_locally
from patchveil.federated.messages import ClientEvaluation, ClientInfo, ClientUpdate, RoundPlan
from patchveil.federated.weights import to_state, to_weights
from patchveil.fsutil import write_bytes_atomic
from patchveil.models.key_lock import (
    load_shared_state,
    lock_parameter_names,
    lock_state,
    set_model_key,
    shared_state,
)
from patchveil.models.small_nets import NetSpec, create_net
from patchveil.tenants.client import Tenant
from patchveil.tenants.key_lock import key_vector, lock_seed
from patchveil.tenants.keystore import KeyStore
from patchveil.tenants.loaders import LabeledImages, load_source


class FederatedClient:
    """One tenant in federated rounds: local training with its lock, shared weights out."""

    def __init__(
        self,
        tenant_id: str,
        key_store_path: str,
        source: str,
        evaluation_source: str | None = None,
        lock_state_dir: str | None = None,
        encrypt: bool = False,
        max_images: int | None = None,
    ) -> None:
        self.tenant_id = check_tenant_id(tenant_id)
        self._tenant = Tenant(self.tenant_id, KeyStore(key_store_path))
        self._source = source
        self._evaluation_source = evaluation_source
        self._lock_state_dir = Path(lock_state_dir) if lock_state_dir else None
        self._encrypt = encrypt
        self._max_images = max_images
        self._data: LabeledImages | None = None
        self._models: dict[NetSpec, nn.Module] = {}

    def __repr__(self) -> str:
        return f"FederatedClient(tenant={self.tenant_id!r})"

    def describe(self) -> ClientInfo:
        return ClientInfo(self.tenant_id, len(self._training_data()), os.getpid())

    def fit(self, plan: RoundPlan) -> ClientUpdate:
        """Load the global shared weights into the tenant's model, train on its own images,
        return the shared weights (everything but the lock)."""
        model = self._model(plan.net)
        load_shared_state(model, to_state(plan.global_weights))
        data = self._training_data()
        images = self._inputs(data.images)
        loss = train_locally(model, images, data.labels, plan.training, self._seed(plan))
        self._save_lock(plan.net, model)
        weights = to_weights(shared_state(model))
        leaked = lock_parameter_names(model) & {name for name, _ in weights}
        if leaked:  # a guard against a future edit of shared_state, not an expected path
            raise PatchveilError(f"refusing to share key-lock parameters {sorted(leaked)}")
        return ClientUpdate(self.tenant_id, plan.round_index, len(data), weights, loss)

    def evaluate(self, plan: RoundPlan) -> ClientEvaluation:
        """The global model's accuracy with this tenant's lock on its held-out images."""
        if self._evaluation_source is None:
            raise PatchveilError(
                f"tenant {self.tenant_id!r}'s federated client has no evaluation source; start "
                "it with evaluation_source=<held-out images>"
            )
        model = self._model(plan.net)
        load_shared_state(model, to_state(plan.global_weights))
        held_out = load_source(self._evaluation_source, "test")
        score = accuracy(model, self._inputs(held_out.images), held_out.labels)
        return ClientEvaluation(self.tenant_id, plan.round_index, len(held_out), score)

    # --- internals ------------------------------------------------------------------------
    def _training_data(self) -> LabeledImages:
        if self._data is None:
            data = load_source(self._source)
            if self._max_images is not None:
                data = data.subset(np.arange(min(self._max_images, len(data))))
            self._data = data
        return self._data

    def _inputs(self, images: np.ndarray) -> np.ndarray:
        """Plain images, or their encryption under the tenant's newest key (per-image ciphers
        take the image's index as nonce, as onboarding does)."""
        if not self._encrypt:
            return images
        return self._tenant.encrypt_rows(images, None, np.arange(len(images), dtype=np.int64))

    def _seed(self, plan: RoundPlan) -> int:
        digest = hashlib.sha256(f"{plan.seed}/{self.tenant_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") >> 1

    def _model(self, net: NetSpec) -> nn.Module:
        """The tenant's copy of the model: lock weights first drawn from the key, the key vector
        in every lock, and the lock weights of earlier rounds (kept across restarts)."""
        if net in self._models:
            return self._models[net]
        key = self._tenant.key()
        if net.key_lock is not None:
            with torch.random.fork_rng():
                torch.manual_seed(lock_seed(key))
                model = create_net(net)
            set_model_key(model, torch.from_numpy(key_vector(key, net.key_lock.key_dim)))
            saved = self._load_lock(net)
            if saved is not None:
                model.load_state_dict(saved, strict=False)
        else:
            model = create_net(net)
        self._models[net] = model
        return model

    def _lock_file(self, net: NetSpec) -> Path | None:
        if self._lock_state_dir is None or net.key_lock is None:
            return None
        name = hashlib.sha256(json.dumps(asdict(net), sort_keys=True).encode()).hexdigest()[:16]
        return self._lock_state_dir / f"{self.tenant_id}-lock-{name}.pt"

    def _save_lock(self, net: NetSpec, model: nn.Module) -> None:
        path = self._lock_file(net)
        if path is None:
            return
        buffer = io.BytesIO()
        torch.save(lock_state(model), buffer)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, buffer.getvalue(), mode=0o600)

    def _load_lock(self, net: NetSpec) -> dict[str, torch.Tensor] | None:
        path = self._lock_file(net)
        if path is None or not path.is_file():
            return None
        return torch.load(path, weights_only=True)
