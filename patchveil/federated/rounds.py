"""FedAvg rounds: sample tenants, send the global weights, average their updates, checkpoint.

Knows nothing of Ray or keys: `dispatch` sends each sampled tenant its plan and returns its
update, or the error that stopped it (a dead actor that did not come back). A round goes on with
the updates that arrived; a round where none arrived stops the run, and a rerun resumes from the
last checkpoint.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from patchveil.errors import PatchveilError
from patchveil.federated.averaging import check_update, weighted_average
from patchveil.federated.checkpoints import latest_round, load_round, save_round
from patchveil.federated.messages import ClientUpdate, LocalTraining, RoundPlan, Weights
from patchveil.federated.weights import to_weights
from patchveil.models.key_lock import shared_state
from patchveil.models.small_nets import NetSpec, create_net

Dispatch = Callable[[Mapping[str, RoundPlan]], Mapping[str, ClientUpdate | BaseException]]
Progress = Callable[["RoundSummary"], None]


class FederatedRoundError(PatchveilError):
    """A federated round could not complete."""


@dataclass(frozen=True)
class FederatedConfig:
    """The run: model, rounds, tenants per round and how each trains locally."""

    net: NetSpec
    rounds: int = 2
    clients_per_round: int = 2
    training: LocalTraining = field(default_factory=LocalTraining)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.clients_per_round < 1:
            raise PatchveilError(
                f"a federated run needs 1 or more rounds and tenants per round, got "
                f"rounds={self.rounds}, clients_per_round={self.clients_per_round}"
            )


@dataclass(frozen=True)
class RoundSummary:
    """What one round did (no weight, no key): who took part, on how many images, the loss."""

    round_index: int
    tenants: tuple[str, ...]
    failed: tuple[str, ...]
    num_samples: int
    train_loss: float
    seconds: float


def sample_tenants(tenant_ids: Sequence[str], count: int, seed: int, round_index: int) -> list[str]:
    """A seeded sample of `count` tenants for a round (all of them when `count` is larger)."""
    ordered = sorted(tenant_ids)
    if count >= len(ordered):
        return ordered
    digest = hashlib.sha256(f"{seed}/{round_index}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)
    picks = torch.randperm(len(ordered), generator=generator)[:count].tolist()
    return sorted(ordered[i] for i in picks)


def initial_weights(net: NetSpec, seed: int) -> Weights:
    """The global model's shared weights before round 1 (seeded; without any lock)."""
    torch.manual_seed(seed)
    return to_weights(shared_state(create_net(net)))


def run_round(
    tenant_ids: Sequence[str],
    weights: Weights,
    config: FederatedConfig,
    round_index: int,
    dispatch: Dispatch,
) -> tuple[Weights, RoundSummary]:
    started = time.monotonic()
    chosen = sample_tenants(tenant_ids, config.clients_per_round, config.seed, round_index)
    plans = {
        tenant: RoundPlan(
            round_index, config.net, weights, config.training, config.seed + round_index
        )
        for tenant in chosen
    }
    answers = dispatch(plans)
    expected = [name for name, _ in weights]
    updates: list[ClientUpdate] = []
    failed: list[str] = []
    for tenant in chosen:
        answer = answers.get(tenant)
        if isinstance(answer, ClientUpdate):
            check_update(answer, expected)
            updates.append(answer)
        else:
            failed.append(tenant)
    if not updates:
        raise FederatedRoundError(
            f"round {round_index}: no tenant returned an update (failed: {', '.join(failed)}); "
            "check the tenant actors and rerun: the run resumes from the last checkpoint"
        )
    samples = sum(update.num_samples for update in updates)
    loss = sum(update.train_loss * update.num_samples for update in updates) / samples
    summary = RoundSummary(
        round_index=round_index,
        tenants=tuple(update.tenant_id for update in updates),
        failed=tuple(failed),
        num_samples=samples,
        train_loss=loss,
        seconds=time.monotonic() - started,
    )
    return weighted_average(updates), summary


def run_rounds(
    tenant_ids: Sequence[str],
    config: FederatedConfig,
    dispatch: Dispatch,
    checkpoint_dir: Path | str,
    progress: Progress | None = None,
) -> tuple[Weights, list[RoundSummary]]:
    """Rounds `last checkpoint + 1 … config.rounds`, a checkpoint after each; the final weights."""
    if not tenant_ids:
        raise PatchveilError("a federated run needs at least one tenant")
    done = latest_round(checkpoint_dir)
    weights = (
        load_round(checkpoint_dir, done)[0] if done else initial_weights(config.net, config.seed)
    )
    summaries: list[RoundSummary] = []
    for round_index in range(done + 1, config.rounds + 1):
        weights, summary = run_round(tenant_ids, weights, config, round_index, dispatch)
        save_round(checkpoint_dir, round_index, weights, asdict(summary))
        summaries.append(summary)
        if progress is not None:
            progress(summary)
    return weights, summaries
