"""Result privacy (Nakamura): answer a set of k candidate labels the tenant alone can resolve.

The endpoint hides each answer among the k − 1 classes the model finds most probable next
(deterministic: probability, then class index) and returns the k labels in an order drawn from
a per-request result key the tenant sends (`keyed_order`, HMAC-SHA256): the tenant, holding the
key, knows which position is the answer; anyone reading the response or the platform's records
without the key sees a uniformly shuffled set. Without a key the set comes back in ascending
class order and the tenant resolves it with what only it knows (its own class prior).

What this does and does not hide, honestly:
- The forward pass computes every probability, so the endpoint process knows the answer while
  it answers (brief: the platform computes every prediction). The mode keeps the answer out of
  what the platform returns and records: the response, the query log, metrics and the admin API
  must carry the set only. Against an operator who instruments the forward pass only
  homomorphic queries help.
- The result key passes through the endpoint inside the request; the endpoint must use it for
  this request and drop it (never log it). A fresh key per request limits a leaked one to that
  request.
- The set itself says the answer is one of the k most plausible classes: a guess is right at
  least 1/k of the time, more with a model of which classes are alike (Nakamura's server-side
  top-1 fell to 41.4%, not to chance). The monitor's projected embedding also carries class
  information: a classifier on the log's projections recovers much of the label.
- With intentional errors on, the hidden label is the defended one, so the decoys can include
  the model's true top-1; a cloner using this mode learns top-k membership, which is more than
  a top-1 label, so the defence should count such queries as it counts any other.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np

from patchveil.errors import PatchveilError

RESULT_KEY_BYTES = 32
_DOMAIN = b"patchveil/result-order/v1\x00"


class ResultPrivacyError(PatchveilError):
    """A result-privacy request names a set size or key the endpoint cannot use."""


def parse_result_key(text: str) -> bytes:
    """The result key of a request: 64 hex digits (32 bytes); the message never echoes it."""
    try:
        key = bytes.fromhex(text)
    except (TypeError, ValueError):
        raise ResultPrivacyError(
            f"the result key must be {2 * RESULT_KEY_BYTES} hex digits"
        ) from None
    if len(key) != RESULT_KEY_BYTES:
        raise ResultPrivacyError(
            f"the result key must be {2 * RESULT_KEY_BYTES} hex digits, got {2 * len(key)}"
        )
    return key


def keyed_order(result_key: bytes, index: int, k: int) -> np.ndarray:
    """[k]: output position j shows source item order[j]; the answer is source item 0.

    A Fisher–Yates shuffle driven by HMAC-SHA256(result_key, domain ‖ index ‖ block), so the
    tenant recomputes it from its key and the image's index in the request. 64-bit draws make
    the modulo bias negligible (< k / 2^64).
    """
    needed = max(k - 1, 0)
    words: list[int] = []
    block = 0
    while len(words) < needed:
        digest = hmac.new(
            result_key,
            _DOMAIN + index.to_bytes(8, "big") + block.to_bytes(4, "big"),
            hashlib.sha256,
        ).digest()
        words.extend(int.from_bytes(digest[i : i + 8], "big") for i in range(0, 32, 8))
        block += 1
    order = list(range(k))
    for step, i in enumerate(range(k - 1, 0, -1)):
        j = words[step] % (i + 1)
        order[i], order[j] = order[j], order[i]
    return np.asarray(order, dtype=np.int64)


def candidate_sets(
    probabilities: np.ndarray,
    labels: np.ndarray,
    k: int,
    result_key: bytes | None = None,
) -> np.ndarray:
    """[N, k] candidate labels hiding each of `labels` (the answers, after the clone defence)
    among the k − 1 most probable other classes; in the keyed order, or ascending without a key.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probabilities.ndim != 2 or labels.shape != (len(probabilities),):
        raise ResultPrivacyError(
            f"need [N, C] probabilities and N labels, got {probabilities.shape} and {labels.shape}"
        )
    classes = probabilities.shape[1]
    if not 2 <= k <= classes:
        raise ResultPrivacyError(f"the candidate set size k must be 2–{classes}, got {k}")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise ResultPrivacyError(f"labels must be class indices below {classes}")
    if result_key is not None and len(result_key) != RESULT_KEY_BYTES:
        raise ResultPrivacyError(f"the result key must be {RESULT_KEY_BYTES} bytes")
    ranked = np.argsort(-probabilities, axis=1, kind="stable")  # ties: lower class first
    source = np.empty((len(labels), k), dtype=np.int64)
    for row, (answer, order) in enumerate(zip(labels, ranked, strict=True)):
        source[row, 0] = answer
        source[row, 1:] = order[order != answer][: k - 1]
    if result_key is None:
        return np.sort(source, axis=1)
    orders = np.array(
        [keyed_order(result_key, row, k) for row in range(len(source))], dtype=np.int64
    ).reshape(-1, k)
    return np.take_along_axis(source, orders, axis=1)
