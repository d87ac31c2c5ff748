"""Clone defence by intentional errors: keyed, key-invariant wrong labels and a DAWN watermark.

Nakamura et al.: answer with a wrong label with probability α that rises with a tenant's query
volume. The decision to err and the wrong label are a keyed function (HMAC-SHA256 under the
server secret) of a locality-sensitive hash of the model's key-invariant embedding, never of the
ciphertext bytes: with per-image keys the same image arrives as different bytes each time, and a
hash of bytes would let a cloner ask again and vote the errors away. Errors are nested in α (a
code erred at α keeps erring at every larger α), so volume only ever adds errors. The same HMAC
also selects a fixed ~0.5% of codes as a watermark (DAWN), whatever α is, for ownership proofs.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import numpy as np

from patchveil.errors import PatchveilError

_DOMAIN = b"patchveil/clone-defence/v1\x00"
_UNIT = float(1 << 64)


class DefenceError(PatchveilError):
    """The defence was given settings or arrays it cannot use."""


@dataclass(frozen=True)
class DefenceSettings:
    """How the defence scales with volume. Defaults suit a CIFAR-sized demo: a normal tenant
    asks hundreds to a few thousand images (α = 0 up to `normal_volume`); a cloner asks tens of
    thousands (α = `max_error_rate` from `cloning_volume` on)."""

    normal_volume: int = 2_000
    cloning_volume: int = 20_000
    max_error_rate: float = 0.9
    # A monitor's risk above `risk_floor` raises α as volume does (Adaptive Misinformation:
    # a flagged tenant is poisoned before it reaches cloning volume).
    risk_floor: float = 0.5
    watermark_rate: float = 0.005
    lsh_bits: int = 16
    lsh_seed: int = 0
    lsh_variance_floor: float = 1e-3  # see EmbeddingHasher.fit
    confusable_k: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.normal_volume < self.cloning_volume:
            raise DefenceError(
                f"need 0 < normal_volume < cloning_volume, got {self.normal_volume} and "
                f"{self.cloning_volume}"
            )
        for name in ("max_error_rate", "watermark_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise DefenceError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.risk_floor < 1.0:
            raise DefenceError(f"risk_floor must be in [0, 1), got {self.risk_floor}")
        if not 1 <= self.lsh_bits <= 64:
            raise DefenceError(f"lsh_bits must be 1–64, got {self.lsh_bits}")
        if not 0.0 < self.lsh_variance_floor < 1.0:
            raise DefenceError(
                f"lsh_variance_floor must be in (0, 1), got {self.lsh_variance_floor}"
            )
        if self.confusable_k < 1:
            raise DefenceError(f"confusable_k must be at least 1, got {self.confusable_k}")


def smoothstep(t: float) -> float:
    """0 below 0, 1 above 1, 3t² − 2t³ between: a step with no kink at either end."""
    t = min(1.0, max(0.0, t))
    return t * t * (3.0 - 2.0 * t)


def volume_score(query_count: int, normal_volume: int, cloning_volume: int) -> float:
    """0 up to `normal_volume`, 1 from `cloning_volume`, a smooth step in log-volume between."""
    if query_count <= normal_volume:
        return 0.0
    span = np.log(cloning_volume) - np.log(normal_volume)
    return smoothstep(float((np.log(query_count) - np.log(normal_volume)) / span))


def intentional_error_rate(query_count: int, settings: DefenceSettings, risk: float = 0.0) -> float:
    """α for a tenant that has asked `query_count` images: 0 at normal use, `max_error_rate` at
    cloning volume, and at least as high as a monitor's `risk` above `risk_floor` says."""
    by_volume = volume_score(query_count, settings.normal_volume, settings.cloning_volume)
    by_risk = smoothstep((risk - settings.risk_floor) / (1.0 - settings.risk_floor))
    return settings.max_error_rate * max(by_volume, by_risk)


def confusable_classes(head_weight: np.ndarray, k: int) -> np.ndarray:
    """[classes, k]: for each class the k others whose classifier rows are most alike (cosine).

    A wrong label among these is plausible (a cloner cannot spot it as noise) and needs no data;
    it is fixed per model version. Ties go to the lower class index.
    """
    weight = np.asarray(head_weight, dtype=np.float64)
    if weight.ndim != 2 or weight.shape[0] < 2:
        raise DefenceError(f"head_weight must be [classes ≥ 2, D], got shape {weight.shape}")
    if not 1 <= k < weight.shape[0]:
        raise DefenceError(f"k must be 1–{weight.shape[0] - 1} for {weight.shape[0]} classes")
    unit = weight / np.maximum(np.linalg.norm(weight, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    # A stable sort of -similarity keeps the lower index first among equals.
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k].astype(np.int64)


class EmbeddingHasher:
    """Random-hyperplane LSH of the key-invariant embedding: `bits` signs of projections.

    Two embeddings at angle θ differ in each bit with probability θ/π, so the same image under
    another key keeps its code with probability ≈ (1 − θ/π)^bits. The invariant ViT gives the
    same embedding up to float noise (measured: ~1e-7 relative under fresh per-image keys), so
    every code survives; 16 bits spread distinct images over 65,536 codes.

    Spread needs `fit` on reference (training) embeddings: ViT embeddings fill a few directions,
    and hyperplanes through the origin then put many images in one code (a random-weight
    position-free ViT on CIFAR: 12% of images in the largest code, so one watermarked code would
    alter 12% of all answers). Centred and whitened over the directions holding at least
    `floor` × the largest variance, measured on that model with 16 bits: 91% of 400 test images
    alone in their code, the largest code 0.7%, and a cloner's near-duplicates (±1 grey level of
    pixel noise) keep their code 92% of the time (±4: 80%), so voting over them fails. A lower
    floor spreads codes more but lets small perturbations re-roll them (1e-6: 43% kept).
    """

    def __init__(
        self,
        dim: int,
        bits: int = 16,
        seed: int = 0,
        center: np.ndarray | None = None,
        whitening: np.ndarray | None = None,
    ) -> None:
        if dim < 1 or not 1 <= bits <= 64:
            raise DefenceError(f"need dim ≥ 1 and 1 ≤ bits ≤ 64, got dim={dim}, bits={bits}")
        self.dim = dim
        self.bits = bits
        self.seed = seed
        self._center = np.zeros(dim) if center is None else np.asarray(center, np.float64)
        self._whitening = np.eye(dim) if whitening is None else np.asarray(whitening, np.float64)
        if self._center.shape != (dim,) or self._whitening.shape[0] != dim:
            raise DefenceError(f"center must be [{dim}] and whitening [{dim}, r]")
        # The hyperplanes are not secret: codes only matter through the keyed HMAC.
        rng = np.random.default_rng(seed)
        self._planes = rng.standard_normal((self._whitening.shape[1], bits))
        self._weights = np.left_shift(np.uint64(1), np.arange(bits, dtype=np.uint64))

    @classmethod
    def fit(
        cls,
        reference: np.ndarray,
        bits: int = 16,
        seed: int = 0,
        floor: float = 1e-3,
    ) -> EmbeddingHasher:
        """A hasher centred and whitened on reference embeddings [M, D] (a fixed sample of the
        training data: the same sample gives the same codes after every restart). Directions
        with variance below `floor` × the largest are dropped: whitening them would blow small
        perturbations up into new codes.
        """
        reference = np.asarray(reference, dtype=np.float64)
        if reference.ndim != 2 or len(reference) < 2 or not np.isfinite(reference).all():
            raise DefenceError(
                f"reference embeddings must be finite [M ≥ 2, D], got {reference.shape}"
            )
        center = reference.mean(axis=0)
        variances, directions = np.linalg.eigh(np.cov(reference - center, rowvar=False))
        kept = variances > floor * variances.max()
        directions = directions[:, kept]
        # eigh's sign per direction is arbitrary; fix it so every machine hashes alike.
        pivots = np.abs(directions).argmax(axis=0)
        directions = directions * np.sign(directions[pivots, np.arange(directions.shape[1])])
        return cls(reference.shape[1], bits, seed, center, directions / np.sqrt(variances[kept]))

    def codes(self, embeddings: np.ndarray) -> np.ndarray:
        """[N] uint64 codes of [N, dim] embeddings."""
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise DefenceError(f"embeddings must be [N, {self.dim}], got {embeddings.shape}")
        signs = ((embeddings - self._center) @ self._whitening @ self._planes) > 0
        return (signs.astype(np.uint64) * self._weights).sum(axis=1, dtype=np.uint64)

    def __repr__(self) -> str:
        return (
            f"EmbeddingHasher(dim={self.dim}, bits={self.bits}, seed={self.seed}, "
            f"whitened_dims={self._whitening.shape[1]})"
        )


@dataclass(frozen=True)
class DefendedAnswers:
    """One batch's answers: `labels` go back to the tenant; the rest is for the log."""

    labels: np.ndarray  # [N] int64, what the tenant gets
    true_labels: np.ndarray  # [N] int64, the model's top-1
    altered: np.ndarray  # [N] bool, labels != true_labels (an intentional error or a watermark)
    watermarked: np.ndarray  # [N] bool, chosen by the watermark
    error_rate: float  # α this batch was answered with
    codes: tuple[str, ...]  # hex LSH codes of the embeddings


@dataclass(frozen=True)
class _Draws:
    err: np.ndarray  # [N] uniform in [0, 1)
    watermark: np.ndarray  # [N] uniform in [0, 1)
    wrong_choice: np.ndarray  # [N] uint64
    watermark_choice: np.ndarray  # [N] uint64


class CloneDefence:
    """Intentional errors and the watermark for one model version, keyed by the server secret."""

    def __init__(
        self,
        secret: bytes,
        settings: DefenceSettings,
        confusable: np.ndarray,
        hasher: EmbeddingHasher,
    ) -> None:
        if len(secret) < 16:
            raise DefenceError("the server secret must be at least 16 bytes")
        confusable = np.asarray(confusable, dtype=np.int64)
        if confusable.ndim != 2 or confusable.shape[1] < 1:
            raise DefenceError(f"confusable must be [classes, k ≥ 1], got {confusable.shape}")
        self._secret = bytes(secret)
        self.settings = settings
        self.confusable = confusable
        self.hasher = hasher

    @classmethod
    def for_model(
        cls,
        secret: bytes,
        settings: DefenceSettings,
        head_weight: np.ndarray,
        reference_embeddings: np.ndarray | None = None,
    ) -> CloneDefence:
        """The defence for a model version: confusable classes from its head, an LSH fitted on
        `reference_embeddings` (a fixed sample of training embeddings; strongly advised, see
        `EmbeddingHasher`), else plain hyperplanes through the origin."""
        head_weight = np.asarray(head_weight)
        if reference_embeddings is None:
            hasher = EmbeddingHasher(head_weight.shape[1], settings.lsh_bits, settings.lsh_seed)
        else:
            hasher = EmbeddingHasher.fit(
                reference_embeddings,
                settings.lsh_bits,
                settings.lsh_seed,
                floor=settings.lsh_variance_floor,
            )
        return cls(secret, settings, confusable_classes(head_weight, settings.confusable_k), hasher)

    def __repr__(self) -> str:
        return (
            f"CloneDefence(secret=<hidden>, classes={self.confusable.shape[0]}, "
            f"confusable_k={self.confusable.shape[1]}, {self.hasher!r})"
        )

    def _draws(self, codes: np.ndarray) -> _Draws:
        width = (self.hasher.bits + 7) // 8
        digests = b"".join(
            hmac.digest(self._secret, _DOMAIN + int(code).to_bytes(width, "big"), "sha256")
            for code in codes
        )
        words = np.frombuffer(digests, dtype=">u8").reshape(-1, 4)
        words = words.astype(np.uint64)
        return _Draws(
            err=words[:, 0] / _UNIT,
            watermark=words[:, 1] / _UNIT,
            wrong_choice=words[:, 2],
            watermark_choice=words[:, 3],
        )

    def answer(
        self,
        query_count: int,
        embeddings: np.ndarray,
        probabilities: np.ndarray,
        risk: float = 0.0,
    ) -> DefendedAnswers:
        """Defend one batch. `query_count` is the tenant's images before this batch; α is taken
        at the batch's end, so one huge batch cannot slip through at its start's α."""
        probabilities = np.asarray(probabilities)
        if probabilities.ndim != 2 or probabilities.shape[1] != self.confusable.shape[0]:
            raise DefenceError(
                f"probabilities must be [N, {self.confusable.shape[0]}], got {probabilities.shape}"
            )
        if len(embeddings) != len(probabilities):
            raise DefenceError(
                f"{len(embeddings)} embeddings but {len(probabilities)} probability rows"
            )
        alpha = intentional_error_rate(query_count + len(probabilities), self.settings, risk)
        codes = self.hasher.codes(embeddings)
        draws = self._draws(codes)
        true_labels = probabilities.argmax(axis=1).astype(np.int64)
        k = np.uint64(self.confusable.shape[1])
        choices = self.confusable[true_labels]
        rows = np.arange(len(true_labels))
        wrong = choices[rows, (draws.wrong_choice % k).astype(np.int64)]
        watermark_label = choices[rows, (draws.watermark_choice % k).astype(np.int64)]
        watermarked = draws.watermark < self.settings.watermark_rate
        erred = draws.err < alpha
        labels = np.where(watermarked, watermark_label, np.where(erred, wrong, true_labels))
        width = (self.hasher.bits + 3) // 4
        return DefendedAnswers(
            labels=labels.astype(np.int64),
            true_labels=true_labels,
            altered=labels != true_labels,
            watermarked=watermarked,
            error_rate=alpha,
            codes=tuple(f"{int(code):0{width}x}" for code in codes),
        )

    def watermark(
        self, embeddings: np.ndarray, probabilities: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(mask, labels) of the watermark on probe inputs: which probes fall in a watermarked
        code and the label the served model gave there (for `ownership.watermark_hits`)."""
        answers = self.answer(0, embeddings, probabilities)
        return answers.watermarked, answers.labels
