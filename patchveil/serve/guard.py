"""What the gateway does with a forward pass before answering: the clone defence's intentional
errors, result privacy's candidate sets, and the monitor's log and risk score, in one place."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from patchveil.serve.defence import CloneDefence, DefenceSettings
from patchveil.serve.model_host import Forward
from patchveil.serve.monitor import MonitorSettings, QueryMonitor, TenantRisk
from patchveil.serve.oip import CandidateOption
from patchveil.serve.result_privacy import candidate_sets


@dataclass(frozen=True)
class GuardedAnswer:
    """What the tenant is told (labels or candidate sets, confidences) and what the metrics show."""

    labels: np.ndarray
    confidences: np.ndarray
    candidates: np.ndarray | None
    error_rate: float
    risk: float
    newly_flagged: bool


class QueryGuard:
    """The defence and the monitor of one gateway (one replica holds the per-tenant state)."""

    def __init__(
        self,
        secret: bytes,
        log_path: Path,
        defence_enabled: bool = True,
        defence_settings: DefenceSettings | None = None,
        monitor_settings: MonitorSettings | None = None,
    ) -> None:
        self._secret = secret
        self._defence_enabled = defence_enabled
        self._defence_settings = defence_settings or DefenceSettings()
        self._defence: CloneDefence | None = None
        self._model_version: int | None = None
        self._log_path = log_path
        self._monitor_settings = monitor_settings or MonitorSettings()
        self.monitor = QueryMonitor(log_path, self._monitor_settings)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"QueryGuard(defence={'on' if self._defence_enabled else 'off'}, model={self._model_version})"

    def use_model(
        self, version: int, head_weight: np.ndarray, reference: np.ndarray | None = None
    ) -> None:
        """Set up the defence for a (new) model version: its confusable classes, and a hash
        fitted to its reference embeddings (and the monitor's out-of-distribution reference)
        where the checkpoint has them."""
        with self._lock:
            if version == self._model_version and self._defence is not None:
                return
            self._defence = CloneDefence.for_model(
                self._secret, self._defence_settings, head_weight, reference_embeddings=reference
            )
            if reference is not None:
                # Rebuilt from the append-only log, so per-tenant history survives the swap.
                self.monitor = QueryMonitor(self._log_path, self._monitor_settings, reference)
            self._model_version = version

    def answer(
        self,
        tenant_id: str,
        forward: Forward,
        candidates: CandidateOption | None = None,
    ) -> GuardedAnswer:
        """Defend, log and shape the answers to one request. With result privacy the log keeps
        no label (-1), only the set goes back; the result key is used here and dropped."""
        if self._defence is None:
            raise RuntimeError("use_model() must run before the first answer")
        before = self.monitor.risk(tenant_id)
        # α follows the tenant's distinct images and its risk so far (a flagged cloner gets the
        # most errors); the same image again adds nothing a cloner could learn from.
        answers = self._defence.answer(
            before.distinct_queries, forward.embeddings, forward.probabilities, risk=before.risk
        )
        labels = answers.labels if self._defence_enabled else answers.true_labels
        confidences = forward.probabilities.max(axis=1)
        sets = None
        logged = answers
        if candidates is not None:
            sets = candidate_sets(
                forward.probabilities, labels, candidates.k, candidates.result_key
            )
            logged = replace(answers, labels=np.full_like(answers.labels, -1))
        risk = self.monitor.record(
            tenant_id, forward.model_version, logged, forward.embeddings, confidences
        )
        return GuardedAnswer(
            labels=labels,
            confidences=confidences,
            candidates=sets,
            error_rate=answers.error_rate if self._defence_enabled else 0.0,
            risk=risk.risk,
            newly_flagged=risk.flagged and not before.flagged,
        )

    def usage(self, tenant_id: str) -> dict[str, Any]:
        """What a tenant may read about itself: how many images it has sent (no α, no risk:
        those would tell a cloner when to stop)."""
        return {"tenant_id": tenant_id, "images_queried": self.monitor.query_count(tenant_id)}

    def risks(self) -> list[TenantRisk]:
        return self.monitor.risks()
