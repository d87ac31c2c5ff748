"""FedAvg's aggregation: the shared weights averaged over tenants, weighted by their image counts."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from patchveil.errors import PatchveilError
from patchveil.federated.messages import ClientUpdate, Weights


def check_update(update: ClientUpdate, expected_names: Collection[str]) -> None:
    """Refuse an update that holds other names than the global model's shared ones (a lock
    parameter, another architecture) or that trained on no image."""
    names = [name for name, _ in update.weights]
    extra, missing = (
        sorted(set(names) - set(expected_names)),
        sorted(set(expected_names) - set(names)),
    )
    if extra or missing:
        raise PatchveilError(
            f"tenant {update.tenant_id!r}'s update for round {update.round_index} does not hold "
            f"exactly the shared weights: unexpected {extra[:3]}, missing {missing[:3]}; every "
            "tenant must send every parameter except the key lock's, of the same model"
        )
    if update.num_samples < 1:
        raise PatchveilError(
            f"tenant {update.tenant_id!r} trained on {update.num_samples} images in round "
            f"{update.round_index}; an update needs at least one"
        )


def weighted_average(updates: Sequence[ClientUpdate]) -> Weights:
    """Σ_k n_k·w_k / Σ_k n_k for every floating-point tensor; counters (integer buffers such as
    batch norm's `num_batches_tracked`) take their largest value."""
    if not updates:
        raise PatchveilError("a round needs at least one tenant update to average")
    names = [name for name, _ in updates[0].weights]
    for update in updates[1:]:
        check_update(update, names)
    counts = np.array([update.num_samples for update in updates], dtype=np.float64)
    shares = counts / counts.sum()
    tables = [dict(update.weights) for update in updates]
    averaged = []
    for name in names:
        values = [table[name] for table in tables]
        if np.issubdtype(values[0].dtype, np.floating):
            mean = sum(
                share * value.astype(np.float64)
                for share, value in zip(shares, values, strict=True)
            )
            averaged.append((name, np.asarray(mean, dtype=values[0].dtype)))
        else:
            averaged.append((name, np.max(np.stack(values), axis=0)))
    return tuple(averaged)
