"""Deal one labelled image set out to tenants (IID or Dirichlet non-IID) and hold out validation.

The shuffles here use numpy's seeded generator on purpose: they decide who gets which demo
image and must be reproducible; they are not key material.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from patchveil.errors import PatchveilError
from patchveil.fsutil import atomic_path, write_bytes_atomic
from patchveil.tenants.keystore import check_tenant_id
from patchveil.tenants.loaders import UNKNOWN_LABEL, LabeledImages

TENANT_SOURCE_FILE = "images.npz"
SPLIT_SUMMARY_FILE = "split.json"
_MAX_DIRICHLET_DRAWS = 1000


def split_among_tenants(
    data: LabeledImages,
    tenant_ids: Sequence[str],
    dirichlet_alpha: float | None,
    seed: int,
    min_images_per_tenant: int = 1,
) -> dict[str, LabeledImages]:
    """Give every image to exactly one tenant: equal IID shares, or per-class Dirichlet shares.

    With `dirichlet_alpha` set, each class is divided among the tenants in proportions drawn
    from Dirichlet(alpha, …, alpha) (small alpha: each tenant sees few classes). Draws repeat,
    deterministically, until every tenant has at least `min_images_per_tenant` images.
    """
    tenants = _checked_tenants(tenant_ids)
    if min_images_per_tenant < 0:
        raise PatchveilError(
            f"min_images_per_tenant must be 0 or more, got {min_images_per_tenant}"
        )
    if len(data) < len(tenants) * min_images_per_tenant:
        raise PatchveilError(
            f"{len(data)} images cannot give {len(tenants)} tenants at least "
            f"{min_images_per_tenant} image(s) each; use fewer tenants or more images"
        )
    generator = np.random.default_rng(seed)
    if dirichlet_alpha is None:
        shares = np.array_split(generator.permutation(len(data)), len(tenants))
    else:
        shares = _dirichlet_shares(
            data, len(tenants), dirichlet_alpha, generator, min_images_per_tenant
        )
    return {
        tenant_id: data.subset(np.sort(share))
        for tenant_id, share in zip(tenants, shares, strict=True)
    }


def _dirichlet_shares(
    data: LabeledImages,
    tenant_count: int,
    alpha: float,
    generator: np.random.Generator,
    min_images_per_tenant: int,
) -> list[np.ndarray]:
    if not (alpha > 0 and math.isfinite(alpha)):
        raise PatchveilError(
            f"Dirichlet alpha must be a positive finite number (e.g. 0.5), got {alpha}"
        )
    if not data.has_labels:
        raise PatchveilError(
            "a non-IID (Dirichlet) split needs a label for every image; these images have "
            "unknown labels, so use an IID split (no alpha)"
        )
    by_class = [np.flatnonzero(data.labels == label) for label in range(len(data.class_names))]
    for _ in range(_MAX_DIRICHLET_DRAWS):
        shares: list[list[np.ndarray]] = [[] for _ in range(tenant_count)]
        for members in by_class:
            proportions = generator.dirichlet(np.full(tenant_count, alpha))
            cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(np.int64)
            for tenant, part in enumerate(np.split(generator.permutation(members), cuts)):
                shares[tenant].append(part)
        merged = [np.concatenate(parts) for parts in shares]
        if min(len(share) for share in merged) >= min_images_per_tenant:
            return merged
    raise PatchveilError(
        f"Dirichlet alpha {alpha} left some of {tenant_count} tenants with fewer than "
        f"{min_images_per_tenant} images in {_MAX_DIRICHLET_DRAWS} draws; use a larger alpha "
        "or fewer tenants"
    )


def holdout_split(
    data: LabeledImages, fraction: float, seed: int
) -> tuple[LabeledImages, LabeledImages]:
    """Split into (train, validation), taking about `fraction` of every class for validation.

    Training code tunes on the validation part, never on the test split.
    """
    chosen = holdout_mask(data.labels, fraction, seed)
    return data.subset(~chosen), data.subset(chosen)


def holdout_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which images `holdout_split` holds out for validation (a boolean mask over `labels`).

    For callers that need the positions, not copies (e.g. to plan shards by index).
    """
    if not 0 < fraction < 1:
        raise PatchveilError(
            f"validation fraction must lie strictly between 0 and 1, got {fraction}"
        )
    labels = np.asarray(labels)
    generator = np.random.default_rng(seed)
    chosen = np.zeros(len(labels), dtype=bool)
    # Unknown labels (-1) form one more stratum, so unlabelled images are held out evenly too.
    for label in np.unique(labels):
        members = generator.permutation(np.flatnonzero(labels == label))
        chosen[members[: round(fraction * len(members))]] = True
    if chosen.all() or not chosen.any():
        raise PatchveilError(
            f"a validation fraction of {fraction} of {len(labels)} images leaves the training or "
            "the validation part empty; choose a fraction that keeps both non-empty"
        )
    return chosen


def write_tenant_sources(
    parts: Mapping[str, LabeledImages],
    out_dir: Path | str,
    *,
    dirichlet_alpha: float | None = None,
    seed: int | None = None,
    source: str | None = None,
) -> dict[str, Path]:
    """Write `out_dir/<tenant_id>/images.npz` per tenant and a `split.json` summary, atomically.

    The `.npz` files hold `images`, `labels` and `class_names` and load back with
    `load_source`. Returns the path of each tenant's file.
    """
    out_dir = Path(out_dir)
    _checked_tenants(list(parts))
    written: dict[str, Path] = {}
    for tenant_id, part in parts.items():
        target = out_dir / tenant_id / TENANT_SOURCE_FILE
        # Write through an open handle: given a name, np.savez would append ".npz" to the
        # temporary name and the rename would miss it.
        with atomic_path(target) as temporary, open(temporary, "wb") as stream:
            np.savez(
                stream,
                images=part.images,
                labels=part.labels,
                class_names=np.asarray(part.class_names, dtype=np.str_),
            )
        written[tenant_id] = target
    summary = split_summary(parts, dirichlet_alpha=dirichlet_alpha, seed=seed, source=source)
    write_bytes_atomic(out_dir / SPLIT_SUMMARY_FILE, json.dumps(summary, indent=2).encode() + b"\n")
    return written


def split_summary(
    parts: Mapping[str, LabeledImages],
    *,
    dirichlet_alpha: float | None = None,
    seed: int | None = None,
    source: str | None = None,
) -> dict[str, object]:
    """What `split.json` records: tenants, images per class per tenant, alpha and seed."""
    tenants: dict[str, object] = {}
    for tenant_id, part in parts.items():
        counts = dict(zip(part.class_names, part.class_counts().tolist(), strict=True))
        unknown = int(np.count_nonzero(part.labels == UNKNOWN_LABEL))
        if unknown:
            counts["<unknown>"] = unknown
        tenants[tenant_id] = {"images": len(part), "per_class": counts}
    return {
        "source": source,
        "split": "iid" if dirichlet_alpha is None else "dirichlet",
        "dirichlet_alpha": dirichlet_alpha,
        "seed": seed,
        "total_images": sum(len(part) for part in parts.values()),
        "tenants": tenants,
    }


def _checked_tenants(tenant_ids: Sequence[str]) -> list[str]:
    tenants = [check_tenant_id(tenant_id) for tenant_id in tenant_ids]
    if not tenants:
        raise PatchveilError("give at least one tenant id to split the images among")
    duplicates = sorted({tenant_id for tenant_id in tenants if tenants.count(tenant_id) > 1})
    if duplicates:
        raise PatchveilError(f"tenant ids must be distinct; repeated: {', '.join(duplicates)}")
    return tenants
