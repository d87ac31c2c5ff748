"""One frontier trial: the attack once, then a Ray Train run on the trial's ciphertext.

`frontier_trial` is the Tune function trainable (Tune over Train, as Ray Train V2 has it): it asks
the experiment for the trial's ciphertext datasets (each tenant's images under its own key, and
the validation images under a key made after training), asks it for the attack's scores on the
validation ciphertext (these do not depend on training, so they are measured once), and launches a
`TorchTrainer` whose workers run `train_func_per_worker`. Every epoch reports the own-key and
fresh-key validation accuracy with the attack's scores beside them, so ASHA can stop a weak trial
on accuracy and NSGA-II sees both objectives whenever a trial ends. Only ciphertext and numbers
pass through here: the experiment object generates and keeps the keys inside its own calls.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from patchveil.errors import PatchveilError
from patchveil.tune.objectives import (
    ACCURACY_OBJECTIVE,
    ATTACK_OBJECTIVE,
    accuracy_objective,
    attack_objective,
)
from patchveil.tune.space import PLAIN, TrialConfig, trial_config_of

NUM_CLASSES = 10
#: Attack measures every ciphered trial must report (fractions; SSIM in [-1, 1]).
ATTACK_MEASURES = ("attack_ssim", "attack_neighbour", "attack_direct", "linkage_rank1")


@dataclass(frozen=True)
class TrialData:
    """A trial's ciphertext: training rows (with the key group each row belongs to, for block
    cutmix within one key), validation rows under the tenants' own keys, and the same validation
    images under a key made after training. uint8 [N, H, W, 3] images, int labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    train_groups: np.ndarray
    validation_images: np.ndarray
    validation_labels: np.ndarray
    fresh_images: np.ndarray
    fresh_labels: np.ndarray

    def __post_init__(self) -> None:
        pairs = (
            ("train", self.train_images, self.train_labels),
            ("validation", self.validation_images, self.validation_labels),
            ("fresh", self.fresh_images, self.fresh_labels),
        )
        for name, images, labels in pairs:
            if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
                raise PatchveilError(
                    f"{name} images must be uint8 [N, H, W, C] with one label each, got "
                    f"{images.dtype} {images.shape} and {len(labels)} labels"
                )
        if len(self.train_groups) != len(self.train_images):
            raise PatchveilError("every training row needs its key group")


class TrialExperiment(Protocol):
    """The tenant and auditor side of a trial, handed in by the experimenter."""

    def prepare(self, config: TrialConfig) -> TrialData:
        """Encrypt this trial's images under fresh per-tenant keys of the trial's cipher."""

    def attack(self, config: TrialConfig, validation_ciphertexts: np.ndarray) -> dict[str, float]:
        """The strongest attack on validation ciphertexts (the auditor scores against its plain
        copies): `ATTACK_MEASURES`."""


# -- the per-worker loop -------------------------------------------------------------------------


def _in_tune_session() -> bool:
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    return bool(_in_tune_session())


def _report(metrics: dict[str, Any]) -> None:
    """Train workers report through `ray.train.report` (Tune's callback forwards rank 0's);
    the in-process loop of `num_workers=0` runs inside the Tune trial and reports to Tune."""
    if _in_tune_session():
        import ray.tune

        ray.tune.report(metrics)
    else:
        import ray.train

        ray.train.report(metrics)


def _rank_and_world() -> tuple[int, int]:
    if _in_tune_session():
        return 0, 1
    import ray.train

    context = ray.train.get_context()
    return context.get_world_rank(), context.get_world_size()


def train_func_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's per-worker loop for a frontier trial: the platform's training functions on
    this worker's share of the ciphertext, validation under own and fresh keys every epoch."""
    import ray
    import torch

    from patchveil.models.augment import AugmentConfig
    from patchveil.models.training import (
        TrainConfig,
        accuracy,
        build_optimizer,
        in_memory_batches,
        pick_device,
        train_one_epoch,
        warmup_cosine,
    )
    from patchveil.models.vit import create_vit_from_spec

    trial = TrialConfig.from_json(config["trial"])
    data: TrialData = ray.get(config["data"])
    constant: dict[str, float] = dict(config["constant_metrics"])
    seed = int(config["seed"])
    rank, world = _rank_and_world()
    distributed = world > 1
    device = pick_device(bool(config["use_gpu"]))
    if not _in_tune_session():
        import ray.train.torch

        device = ray.train.torch.get_device()

    torch.manual_seed(seed)
    spec = trial.model_spec(NUM_CLASSES)
    model = create_vit_from_spec(spec)
    if distributed:
        import ray.train.torch

        model = ray.train.torch.prepare_model(model)
        network = model.module
    else:
        model.to(device)
        network = model
    train_config = TrainConfig(
        epochs=trial.epochs,
        batch_size=int(config["batch_size"]),
        learning_rate=trial.learning_rate,
        seed=seed,
        augment=AugmentConfig(block_cutmix_prob=trial.block_cutmix),
    )
    optimizer = build_optimizer(network, train_config)
    mine = np.arange(rank, len(data.train_images), world)
    steps = max(1, math.ceil(len(mine) / train_config.batch_size))
    scheduler = warmup_cosine(
        optimizer, steps * trial.epochs, round(steps * train_config.warmup_epochs)
    )
    numpy_generator = np.random.default_rng(seed + rank)
    torch_generator = torch.Generator().manual_seed(seed + rank)
    for epoch in range(1, trial.epochs + 1):
        stats = train_one_epoch(
            model,
            in_memory_batches(
                data.train_images[mine],
                data.train_labels[mine],
                data.train_groups[mine],
                train_config.batch_size,
                numpy_generator,
            ),
            optimizer,
            scheduler,
            train_config,
            NUM_CLASSES,
            trial.block_size,
            device,
            torch_generator,
        )
        own = accuracy(network, data.validation_images, data.validation_labels, device)
        fresh = accuracy(network, data.fresh_images, data.fresh_labels, device)
        _report(
            {
                **constant,
                "epoch": epoch,
                "train_loss": stats.loss,
                "epoch_seconds": stats.seconds,
                "own_key_accuracy": own,
                "fresh_key_accuracy": fresh,
                ACCURACY_OBJECTIVE: accuracy_objective(own, fresh),
            }
        )


# -- the Tune function trainable -----------------------------------------------------------------


def trial_attack_metrics(
    experiment: TrialExperiment, config: TrialConfig, data: TrialData, attack_images: int
) -> dict[str, float]:
    """The attack's scores on the first `attack_images` validation ciphertexts, and the attack
    objective; a plain reference is not attacked (its "ciphertext" is the image)."""
    if config.cipher == PLAIN:
        return {}
    scores = experiment.attack(config, data.validation_images[:attack_images])
    missing = [name for name in ATTACK_MEASURES if name not in scores]
    if missing:
        raise PatchveilError(f"the attack returned no {', '.join(missing)}")
    metrics = {name: float(scores[name]) for name in ATTACK_MEASURES}
    metrics[ATTACK_OBJECTIVE] = attack_objective(
        metrics["attack_ssim"], metrics["attack_neighbour"]
    )
    return metrics


def frontier_trial(
    tune_config: Mapping[str, Any],
    *,
    experiment: TrialExperiment,
    num_workers: int = 0,
    cpus_per_worker: float = 1.0,
    use_gpu: bool = False,
    batch_size: int = 128,
    attack_images: int = 24,
    seed: int = 0,
    storage_path: str,
) -> None:
    """Ray Tune function trainable: prepare, attack once, then train with Ray Train."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    config = trial_config_of(tune_config)
    start = time.perf_counter()
    data = experiment.prepare(config)
    attack_start = time.perf_counter()
    constant = trial_attack_metrics(experiment, config, data, attack_images)
    constant["attack_seconds"] = time.perf_counter() - attack_start
    constant["prepare_seconds"] = attack_start - start
    callbacks = []
    if num_workers > 0:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    else:
        import torch

        # The in-process loop runs in this trial's actor: use the cores Tune gave it.
        torch.set_num_threads(max(1, int(cpus_per_worker)))
    trial_id = ray.tune.get_context().get_trial_id() if _in_tune_session() else "local"
    trainer = TorchTrainer(
        train_func_per_worker,
        train_loop_config={
            "trial": config.to_json(),
            "data": ray.put(data),
            "constant_metrics": constant,
            "seed": seed,
            "batch_size": batch_size,
            "use_gpu": use_gpu,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=f"frontier-train-{trial_id}", storage_path=storage_path, callbacks=callbacks
        ),
    )
    trainer.fit()
