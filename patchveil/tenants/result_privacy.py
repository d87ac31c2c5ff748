"""The tenant's side of result privacy: a per-request result key, and resolving candidate sets.

The endpoint answers each image with k candidate labels in an order drawn from the key
(`patchveil.serve.result_privacy` says what that hides and what it does not); only the holder of
the key knows which position is the answer. Without a key, the tenant picks from the set with
its own class prior, information the platform does not have.
"""

from __future__ import annotations

import secrets

import numpy as np

from patchveil.errors import PatchveilError
from patchveil.serve.result_privacy import RESULT_KEY_BYTES, keyed_order


class ResultKeyError(PatchveilError):
    """A result key or candidate set the tenant cannot use."""


class ResultKey:
    """A fresh 32-byte secret for one request; prints without its bytes."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes | None = None) -> None:
        secret = secrets.token_bytes(RESULT_KEY_BYTES) if secret is None else bytes(secret)
        if len(secret) != RESULT_KEY_BYTES:
            raise ResultKeyError(f"a result key is {RESULT_KEY_BYTES} bytes, got {len(secret)}")
        self._secret = secret

    def request_value(self) -> str:
        """The key as the request carries it (hex); send it only inside the TLS request."""
        return self._secret.hex()

    def answer_positions(self, count: int, k: int) -> np.ndarray:
        """[count]: where the answer sits in each image's candidate list."""
        return np.asarray(
            [
                int(np.flatnonzero(keyed_order(self._secret, index, k) == 0)[0])
                for index in range(count)
            ],
            dtype=np.int64,
        )

    def __repr__(self) -> str:
        return "ResultKey(<secret>)"


def resolve(candidates: np.ndarray, key: ResultKey) -> np.ndarray:
    """[N] labels: the answer out of each [N, k] candidate list the endpoint returned for a
    request made with `key` (row i = image i of that request)."""
    candidates = np.asarray(candidates)
    if candidates.ndim != 2 or candidates.shape[1] < 2:
        raise ResultKeyError(f"candidates must be [N, k ≥ 2], got {candidates.shape}")
    positions = key.answer_positions(len(candidates), candidates.shape[1])
    return candidates[np.arange(len(candidates)), positions].astype(np.int64)


def resolve_with_prior(candidates: np.ndarray, class_prior: np.ndarray) -> np.ndarray:
    """[N] labels: in each candidate set the class the tenant's own prior [C] rates highest
    (e.g. 0 for classes it never has). Ties go to the earlier candidate."""
    candidates = np.asarray(candidates, dtype=np.int64)
    prior = np.asarray(class_prior, dtype=np.float64)
    if candidates.ndim != 2 or prior.ndim != 1:
        raise ResultKeyError("need [N, k] candidates and a [C] class prior")
    if candidates.size and (candidates.min() < 0 or candidates.max() >= len(prior)):
        raise ResultKeyError(f"candidates name classes outside the prior's {len(prior)}")
    best = prior[candidates].argmax(axis=1)
    return candidates[np.arange(len(candidates)), best]
