"""Dealing images out to tenants (IID, Dirichlet non-IID), stratified holdout, written sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchveil.errors import PatchveilError
from patchveil.tenants.loaders import LabeledImages, default_cifar_dir, load_cifar, load_source
from patchveil.tenants.split import (
    SPLIT_SUMMARY_FILE,
    TENANT_SOURCE_FILE,
    holdout_split,
    split_among_tenants,
    write_tenant_sources,
)

TENANTS = ["hospital", "factory", "bank", "school"]


def _numbered(count: int, classes: int = 10, seed: int = 0) -> LabeledImages:
    """Images whose first three pixel values spell their own index, with random labels."""
    images = np.zeros((count, 4, 4, 3), dtype=np.uint8)
    index = np.arange(count)
    images[:, 0, 0, 0], images[:, 0, 0, 1], images[:, 0, 0, 2] = (
        index & 255, (index >> 8) & 255, index >> 16,
    )  # fmt: skip
    labels = np.random.default_rng(seed).integers(0, classes, count)
    return LabeledImages(images, labels, tuple(f"class_{c}" for c in range(classes)))


def _ids(data: LabeledImages) -> np.ndarray:
    pixels = data.images[:, 0, 0].astype(np.int64)
    return pixels[:, 0] + (pixels[:, 1] << 8) + (pixels[:, 2] << 16)


def _assert_partition(data: LabeledImages, parts: dict[str, LabeledImages]) -> None:
    ids = np.concatenate([_ids(part) for part in parts.values()])
    assert np.array_equal(np.sort(ids), np.arange(len(data))), "every image exactly once"
    for part in parts.values():
        np.testing.assert_array_equal(part.labels, data.labels[_ids(part)])
        assert part.class_names == data.class_names


def _max_class_share(parts: dict[str, LabeledImages]) -> float:
    """Mean over tenants of the share of the tenant's most common class."""
    return float(np.mean([part.class_counts().max() / len(part) for part in parts.values()]))


def test_iid_split_gives_equal_shares_of_every_image() -> None:
    data = _numbered(1003)
    parts = split_among_tenants(data, TENANTS, dirichlet_alpha=None, seed=7)
    assert list(parts) == TENANTS
    _assert_partition(data, parts)
    assert sorted(len(part) for part in parts.values()) == [250, 251, 251, 251]
    assert _max_class_share(parts) < 0.2


def test_split_is_deterministic_in_seed() -> None:
    data = _numbered(400)
    for alpha in (None, 0.5):
        first = split_among_tenants(data, TENANTS, alpha, seed=3)
        again = split_among_tenants(data, TENANTS, alpha, seed=3)
        other = split_among_tenants(data, TENANTS, alpha, seed=4)
        assert all(np.array_equal(_ids(first[t]), _ids(again[t])) for t in TENANTS)
        assert not all(np.array_equal(_ids(first[t]), _ids(other[t])) for t in TENANTS)


def test_small_alpha_is_skewed_and_large_alpha_is_not() -> None:
    data = _numbered(2000)
    skewed = split_among_tenants(data, TENANTS, dirichlet_alpha=0.05, seed=1)
    even = split_among_tenants(data, TENANTS, dirichlet_alpha=1000.0, seed=1)
    _assert_partition(data, skewed)
    _assert_partition(data, even)
    assert _max_class_share(skewed) > 0.35
    assert _max_class_share(even) < 0.15
    # With a tiny alpha most (tenant, class) cells are (nearly) empty.
    cells = np.stack([part.class_counts() for part in skewed.values()])
    assert np.mean(cells < 0.05 * cells.sum(axis=0)) > 0.5


@settings(max_examples=25, deadline=None)
@given(
    count=st.integers(8, 300),
    tenants=st.integers(1, 6),
    alpha=st.one_of(st.none(), st.floats(0.05, 50.0)),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_split_is_a_partition(
    count: int, tenants: int, alpha: float | None, seed: int
) -> None:
    data = _numbered(count, classes=5, seed=seed)
    tenant_ids = [f"t{n}" for n in range(tenants)]
    try:
        parts = split_among_tenants(data, tenant_ids, alpha, seed)
    except PatchveilError as error:
        assert "draws" in str(error)  # tiny alpha with many tenants can fail, loudly
        return
    _assert_partition(data, parts)
    assert min(len(part) for part in parts.values()) >= 1


def test_min_images_per_tenant_is_respected() -> None:
    data = _numbered(500)
    parts = split_among_tenants(data, TENANTS, 0.1, seed=0, min_images_per_tenant=60)
    assert min(len(part) for part in parts.values()) >= 60
    with pytest.raises(PatchveilError, match="larger alpha"):
        split_among_tenants(data, TENANTS, 0.01, seed=0, min_images_per_tenant=124)
    with pytest.raises(PatchveilError, match="0 or more"):
        split_among_tenants(data, TENANTS, None, seed=0, min_images_per_tenant=-1)
    tiny = split_among_tenants(_numbered(3), TENANTS, None, seed=0, min_images_per_tenant=0)
    assert sorted(len(part) for part in tiny.values()) == [0, 1, 1, 1]


@pytest.mark.parametrize(
    ("tenant_ids", "alpha", "message"),
    [
        ([], None, "at least one tenant"),
        (["a", "a"], None, "repeated: a"),
        (["../escape"], None, "not valid"),
        (["a", "b"], 0.0, "alpha must be a positive"),
        (["a", "b"], -1.0, "alpha must be a positive"),
        (["a", "b"], float("inf"), "alpha must be a positive"),
        (["a", "b"], float("nan"), "alpha must be a positive"),
        ([f"t{n}" for n in range(11)], None, "cannot give 11 tenants"),
    ],
)
def test_split_rejects(tenant_ids: list[str], alpha: float | None, message: str) -> None:
    with pytest.raises(PatchveilError, match=message):
        split_among_tenants(_numbered(10), tenant_ids, alpha, seed=0)


def test_non_iid_needs_labels() -> None:
    unlabelled = LabeledImages(np.zeros((8, 2, 2, 3), np.uint8), np.full(8, -1), ())
    with pytest.raises(PatchveilError, match="needs a label for every image"):
        split_among_tenants(unlabelled, ["a", "b"], 0.5, seed=0)
    parts = split_among_tenants(unlabelled, ["a", "b"], None, seed=0)
    assert [len(part) for part in parts.values()] == [4, 4]


def test_holdout_is_stratified_disjoint_and_deterministic() -> None:
    data = _numbered(1000, classes=7)
    train, validation = holdout_split(data, 0.2, seed=5)
    ids = np.concatenate([_ids(train), _ids(validation)])
    assert np.array_equal(np.sort(ids), np.arange(1000))
    expected = np.round(0.2 * data.class_counts())
    np.testing.assert_array_equal(validation.class_counts(), expected)
    again = holdout_split(data, 0.2, seed=5)[1]
    assert np.array_equal(_ids(again), _ids(validation))
    assert not np.array_equal(_ids(holdout_split(data, 0.2, seed=6)[1]), _ids(validation))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 0.001])
def test_holdout_rejects_useless_fractions(fraction: float) -> None:
    with pytest.raises(PatchveilError, match="fraction"):
        holdout_split(_numbered(50), fraction, seed=0)


def test_written_sources_load_back_with_a_summary(tmp_path: Path) -> None:
    data = _numbered(120, classes=3)
    parts = split_among_tenants(data, TENANTS[:3], 0.5, seed=11)
    written = write_tenant_sources(parts, tmp_path / "split", dirichlet_alpha=0.5, seed=11)
    assert set(written) == set(TENANTS[:3])
    for tenant_id, path in written.items():
        assert path == tmp_path / "split" / tenant_id / TENANT_SOURCE_FILE
        loaded = load_source(path)
        np.testing.assert_array_equal(loaded.images, parts[tenant_id].images)
        np.testing.assert_array_equal(loaded.labels, parts[tenant_id].labels)
        assert loaded.class_names == data.class_names
    summary = json.loads((tmp_path / "split" / SPLIT_SUMMARY_FILE).read_text())
    assert summary["dirichlet_alpha"] == 0.5 and summary["seed"] == 11
    assert summary["split"] == "dirichlet" and summary["total_images"] == 120
    hospital = summary["tenants"]["hospital"]
    assert hospital["images"] == len(parts["hospital"])
    assert list(hospital["per_class"].values()) == parts["hospital"].class_counts().tolist()
    leftovers = [p.name for p in (tmp_path / "split").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_split_of_the_shared_cifar_subset(tmp_path: Path) -> None:
    folder = default_cifar_dir()
    if folder is None:
        pytest.skip("the shared CIFAR-10 subset is not present on this machine")
    data = load_cifar(folder, "train")
    parts = split_among_tenants(data, TENANTS, dirichlet_alpha=0.5, seed=0)
    assert sum(len(part) for part in parts.values()) == 8336
    np.testing.assert_array_equal(
        sum(part.class_counts() for part in parts.values()), data.class_counts()
    )
    train, validation = holdout_split(data, 0.1, seed=0)
    assert len(validation) == pytest.approx(834, abs=10) and len(train) + len(validation) == 8336


def test_holdout_mask_marks_exactly_what_holdout_split_holds_out() -> None:
    from patchveil.tenants.split import holdout_mask

    data = _numbered(60)
    mask = holdout_mask(data.labels, 0.25, seed=3)
    train, validation = holdout_split(data, 0.25, seed=3)
    assert np.array_equal(_ids(validation), _ids(data.subset(mask)))
    assert np.array_equal(_ids(train), _ids(data.subset(~mask)))
