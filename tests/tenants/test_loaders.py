"""Plain-image loaders: the shared CIFAR-10 subset, synthetic layouts of every kind, and errors."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from patchveil.errors import ImageFormatError, PatchveilError, SourceError
from patchveil.tenants.loaders import (
    CIFAR_DIR_ENV,
    LabeledImages,
    default_cifar_dir,
    load_array_file,
    load_cifar,
    load_image_folder,
    load_source,
    load_tiny_imagenet,
)

CIFAR10_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
)  # fmt: skip


@pytest.fixture(scope="module")
def shared_cifar() -> Path:
    folder = default_cifar_dir()
    if folder is None:
        pytest.skip("the shared CIFAR-10 subset is not present on this machine")
    return folder


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _to_rows(images: np.ndarray) -> np.ndarray:
    """The CIFAR row layout: R plane, G plane, B plane, each row-major."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def _dump(path: Path, content: object, protocol: int = 2) -> None:
    path.write_bytes(pickle.dumps(content, protocol=protocol))


def _cifar10_dir(root: Path, rows: dict[str, int], protocol: int = 2) -> dict[str, np.ndarray]:
    """A CIFAR-10 folder with `rows[name]` random images per batch file; returns the images."""
    root.mkdir(parents=True, exist_ok=True)
    _dump(
        root / "batches.meta",
        {b"num_cases_per_batch": 10000, b"label_names": [n.encode() for n in CIFAR10_NAMES]},
    )
    written = {}
    for number, (name, count) in enumerate(rows.items()):
        images = _rng(number).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        labels = [int(label) for label in _rng(number + 50).integers(0, 10, count)]
        _dump(
            root / name,
            {b"batch_label": name.encode(), b"labels": labels, b"data": _to_rows(images)},
            protocol,
        )
        written[name] = images
    return written


# --- the real shared subset -------------------------------------------------------------------


def test_shared_cifar_train_split(shared_cifar: Path) -> None:
    train = load_cifar(shared_cifar, "train")
    assert len(train) == 8336
    assert train.images.shape == (8336, 32, 32, 3)
    assert train.images.dtype == np.uint8 and train.images.flags.c_contiguous
    assert train.labels.dtype == np.int64
    assert train.class_names == CIFAR10_NAMES
    assert train.image_size == 32
    counts = train.class_counts()
    assert counts.sum() == 8336 and counts.min() >= 807 and counts.max() <= 879
    # The first official training image is the frog; the next two are trucks.
    assert [train.class_names[label] for label in train.labels[:3]] == ["frog", "truck", "truck"]


def test_shared_cifar_test_split_and_detection(shared_cifar: Path) -> None:
    test = load_source(shared_cifar, split="test")
    assert len(test) == 1017 and test.class_names[0] == "airplane"
    counts = test.class_counts()
    assert counts.min() >= 87 and counts.max() <= 114
    # Real photos are not noise: neighbouring pixels are strongly correlated.
    image = test.images[0].astype(float)
    assert np.corrcoef(image[:, :-1].ravel(), image[:, 1:].ravel())[0, 1] > 0.5


def test_shared_cifar_is_reported_partial(shared_cifar: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        load_cifar(shared_cifar, "test")
    assert "partial copy" in caplog.text and "1017 of 10000" in caplog.text
    with pytest.raises(SourceError, match="partial copy"):
        load_cifar(shared_cifar, "test", require_complete=True)


def test_default_cifar_dir_honours_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(CIFAR_DIR_ENV, str(tmp_path))
    assert default_cifar_dir() == tmp_path
    monkeypatch.setenv(CIFAR_DIR_ENV, str(tmp_path / "absent"))
    assert default_cifar_dir() is None


# --- synthetic CIFAR-10 / CIFAR-100 -----------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_rows_become_hwc(tmp_path: Path, protocol: int) -> None:
    names = [f"data_batch_{n}" for n in range(1, 6)]
    written = _cifar10_dir(tmp_path, dict.fromkeys(names, 3) | {"test_batch": 2}, protocol)
    train = load_cifar(tmp_path, "train")
    assert len(train) == 15
    np.testing.assert_array_equal(train.images, np.concatenate([written[n] for n in names]))
    np.testing.assert_array_equal(load_cifar(tmp_path, "test").images, written["test_batch"])


@settings(max_examples=20, deadline=None)
@given(pixel=st.tuples(st.integers(0, 31), st.integers(0, 31), st.integers(0, 2)))
def test_cifar_row_offset_maps_to_row_column_channel(pixel: tuple[int, int, int]) -> None:
    import tempfile

    row, column, channel = pixel
    data = np.zeros((1, 3072), dtype=np.uint8)
    data[0, channel * 1024 + row * 32 + column] = 255
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        _dump(root / "batches.meta", {b"label_names": [b"only"]})
        _dump(root / "test_batch", {b"labels": [0], b"data": data})
        image = load_cifar(root, "test").images[0]
    assert image[row, column, channel] == 255 and int(image.sum()) == 255


def test_cifar10_partial_layout_loads_present_batches(tmp_path: Path, caplog) -> None:
    _cifar10_dir(tmp_path, {"data_batch_1": 4, "data_batch_4": 2})
    with caplog.at_level(logging.WARNING):
        assert len(load_cifar(tmp_path, "train")) == 6
    assert "data_batch_2" in caplog.text
    with pytest.raises(SourceError, match="lacks train batch files data_batch_2"):
        load_cifar(tmp_path, "train", require_complete=True)
    with pytest.raises(SourceError, match="no test batch files: expected test_batch"):
        load_cifar(tmp_path, "test")


def test_cifar_parent_folder_is_detected(tmp_path: Path) -> None:
    _cifar10_dir(tmp_path / "cifar-10-batches-py", {"test_batch": 2})
    assert len(load_source(tmp_path, split="test")) == 2


def test_cifar100_layout(tmp_path: Path) -> None:
    images = _rng().integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    fine_names = [f"class_{n}".encode() for n in range(100)]
    _dump(tmp_path / "meta", {b"fine_label_names": fine_names, b"coarse_label_names": [b"c"]})
    batch = {b"data": _to_rows(images), b"fine_labels": [0, 99, 5, 5, 7], b"coarse_labels": [0] * 5}
    _dump(tmp_path / "train", batch)
    # A copy re-pickled by Python 3 with str keys loads the same way.
    _dump(tmp_path / "test", {k.decode(): v for k, v in batch.items()}, protocol=4)
    for split in ("train", "test"):
        data = load_source(tmp_path, split=split)
        assert len(data.class_names) == 100 and data.class_names[99] == "class_99"
        np.testing.assert_array_equal(data.images, images)
        assert data.labels.tolist() == [0, 99, 5, 5, 7]


def test_cifar_corrupt_pickle_names_the_file(tmp_path: Path) -> None:
    _cifar10_dir(tmp_path, {"test_batch": 3})
    whole = (tmp_path / "test_batch").read_bytes()
    (tmp_path / "test_batch").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(SourceError, match=r"test_batch is not a readable CIFAR pickle"):
        load_cifar(tmp_path, "test")


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "pwned"),))

    _cifar10_dir(tmp_path, {})
    _dump(tmp_path / "test_batch", {b"labels": [0], b"data": Exploit()})
    with pytest.raises(SourceError, match="refusing to load"):
        load_cifar(tmp_path, "test")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ({b"labels": [0], b"data": np.zeros((1, 3000), np.uint8)}, r"uint8 \[N, 3072\]"),
        ({b"labels": [0], b"data": np.zeros((1, 3072), np.float32)}, r"uint8 \[N, 3072\]"),
        ({b"labels": [0, 1], b"data": np.zeros((1, 3072), np.uint8)}, "one per row"),
        ({b"labels": [10], b"data": np.zeros((1, 3072), np.uint8)}, r"\[0, 10\)"),
        ({b"data": np.zeros((1, 3072), np.uint8)}, "no 'labels' entry"),
        ([1, 2, 3], "pickled dict"),
    ],
)
def test_cifar_bad_batches(tmp_path: Path, batch: object, message: str) -> None:
    _cifar10_dir(tmp_path, {})
    _dump(tmp_path / "test_batch", batch)
    with pytest.raises(SourceError, match=message):
        load_cifar(tmp_path, "test")


def test_cifar_bad_split_and_missing_root(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        load_cifar(tmp_path / "absent")
    _cifar10_dir(tmp_path, {"test_batch": 1})
    with pytest.raises(SourceError, match="'train' or 'test'"):
        load_cifar(tmp_path, "validation")


# --- image folders and Tiny ImageNet ----------------------------------------------------------


def _save(path: Path, image: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(image)
    (picture.convert(mode) if mode else picture).save(path)


def test_image_folder_labels_follow_sorted_class_names(tmp_path: Path) -> None:
    cat = _rng(1).integers(0, 256, (2, 8, 6, 3), dtype=np.uint8)
    ant = _rng(2).integers(0, 256, (8, 6, 3), dtype=np.uint8)
    _save(tmp_path / "cat" / "b.png", cat[1])
    _save(tmp_path / "cat" / "a.png", cat[0])
    _save(tmp_path / "ant" / "nested" / "x.bmp", ant)
    _save(tmp_path / "bee" / "grey.png", np.full((8, 6, 3), 77, np.uint8), mode="L")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    _save(tmp_path / ".hidden" / "skip.png", ant)
    data = load_source(tmp_path)
    assert data.class_names == ("ant", "bee", "cat")
    assert data.labels.tolist() == [0, 1, 2, 2]
    np.testing.assert_array_equal(data.images[0], ant)
    np.testing.assert_array_equal(data.images[1], np.full((8, 6, 3), 77, np.uint8))  # L → RGB
    np.testing.assert_array_equal(data.images[2:], cat)
    with pytest.raises(ImageFormatError, match="not square"):
        _ = data.image_size


def test_image_folder_reads_jpeg(tmp_path: Path) -> None:
    _save(tmp_path / "only" / "photo.jpg", np.full((16, 16, 3), 120, np.uint8))
    data = load_image_folder(tmp_path)
    assert data.images.shape == (1, 16, 16, 3) and abs(int(data.images.mean()) - 120) <= 2


def test_image_folder_size_mismatch_names_file_and_sizes(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "1.png", np.zeros((8, 8, 3), np.uint8))
    _save(tmp_path / "a" / "2.png", np.zeros((8, 8, 3), np.uint8))
    _save(tmp_path / "b" / "3.png", np.zeros((10, 12, 3), np.uint8))
    with pytest.raises(SourceError, match=r"3\.png is 12×10 .* are 8×8"):
        load_image_folder(tmp_path)


def test_image_folder_corrupt_image_names_file(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "1.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "a" / "2.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(SourceError, match=r"2\.png is not a readable image"):
        load_image_folder(tmp_path)


def test_empty_or_unknown_sources(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="holds no images"):
        load_image_folder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(SourceError, match=r"matches no known layout; expected a CIFAR"):
        load_source(tmp_path)
    with pytest.raises(SourceError, match=r"readme\.txt is a file of unknown kind"):
        load_source(tmp_path / "readme.txt")
    with pytest.raises(SourceError, match=r"absent does not exist; expected"):
        load_source(tmp_path / "absent")
    with pytest.raises(SourceError, match="split must be one of"):
        load_source(tmp_path, split="val")
    assert isinstance(SourceError("x"), PatchveilError)


def _tiny_imagenet(root: Path) -> dict[str, np.ndarray]:
    wnids = ["n02", "n01", "n03"]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text(
        "n01\tgoldfish, Carassius auratus\nn02\tcat\nn03\tgoldfish, another\nn99\tunused\n"
    )
    images = {}
    for number, wnid in enumerate(sorted(wnids)):
        images[wnid] = _rng(number).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
        for index, image in enumerate(images[wnid]):
            _save(root / "train" / wnid / "images" / f"{wnid}_{index}.png", image)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("ignored\n")
    lines = []
    for index, wnid in enumerate(["n03", "n01"]):
        _save(root / "val" / "images" / f"val_{index}.png", images[wnid][0])
        lines.append(f"val_{index}.png\t{wnid}\t0\t0\t7\t7")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return images


def test_tiny_imagenet_train_and_val(tmp_path: Path) -> None:
    images = _tiny_imagenet(tmp_path)
    train = load_source(tmp_path)
    assert train.class_names == ("goldfish (n01)", "cat", "goldfish (n03)")
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(train.images[4:], images["n03"])
    val = load_source(tmp_path, split="test")
    assert val.labels.tolist() == [2, 0]
    np.testing.assert_array_equal(val.images, [images["n03"][0], images["n01"][0]])
    assert len(load_tiny_imagenet(tmp_path, "val")) == 2


def test_tiny_imagenet_errors(tmp_path: Path) -> None:
    _tiny_imagenet(tmp_path)
    with pytest.raises(SourceError, match="'train' or 'val'"):
        load_tiny_imagenet(tmp_path, "test")
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.png\tn77\t0\t0\t1\t1\n")
    with pytest.raises(SourceError, match="line 1: expected"):
        load_tiny_imagenet(tmp_path, "val")
    (tmp_path / "val" / "val_annotations.txt").write_text("missing.png\tn01\n")
    with pytest.raises(SourceError, match=r"missing\.png does not exist"):
        load_tiny_imagenet(tmp_path, "val")
    with pytest.raises(SourceError, match="not a Tiny ImageNet folder"):
        load_tiny_imagenet(tmp_path / "train")


# --- array files ------------------------------------------------------------------------------


def test_npy_has_unknown_labels(tmp_path: Path) -> None:
    images = _rng().integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "batch.npy", images)
    data = load_source(tmp_path / "batch.npy")
    np.testing.assert_array_equal(data.images, images)
    assert data.labels.tolist() == [-1, -1, -1] and data.class_names == ()
    assert not data.has_labels


def test_npz_with_and_without_names(tmp_path: Path) -> None:
    images = _rng().integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "named.npz", images=images, labels=np.array([1, 0, 1], np.int32),
             class_names=np.array(["dog", "cat"]))  # fmt: skip
    named = load_array_file(tmp_path / "named.npz")
    assert named.class_names == ("dog", "cat") and named.labels.dtype == np.int64
    np.savez(tmp_path / "numbered.npz", images=images, labels=np.array([0, 2, 2]))
    assert load_array_file(tmp_path / "numbered.npz").class_names == ("0", "1", "2")
    np.savez(tmp_path / "bare.npz", images=images)
    assert load_array_file(tmp_path / "bare.npz").labels.tolist() == [-1, -1, -1]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"pixels": np.zeros((1, 4, 4, 3), np.uint8)}, "no 'images' array .* pixels"),
        ({"images": np.zeros((1, 4, 4, 3), np.float32)}, r"uint8 \[N, H, W, 3\], got float32"),
        ({"images": np.zeros((1, 3, 4, 4), np.uint8)}, "channels first"),
        ({"images": np.zeros((2, 4, 4, 3), np.uint8), "labels": np.zeros(3, int)}, "one integer"),
        ({"images": np.zeros((1, 4, 4, 3), np.uint8), "labels": np.zeros(1)}, "1-D integers"),
        (
            {"images": np.zeros((1, 4, 4, 3), np.uint8), "labels": [3], "class_names": ["a"]},
            r"\[0, 1\)",
        ),
        (
            {
                "images": np.zeros((1, 4, 4, 3), np.uint8),
                "class_names": np.array([b"a", 1], object),
            },
            r"not a readable \.npz",
        ),
    ],
)
def test_bad_npz(tmp_path: Path, arrays: dict[str, object], message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(SourceError, match=message) as raised:
        load_array_file(tmp_path / "bad.npz")
    assert "bad.npz" in str(raised.value)


def test_bad_array_files(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(SourceError, match=r"junk\.npz is not a readable"):
        load_array_file(tmp_path / "junk.npz")
    np.savez(tmp_path / "archive.npz", images=np.zeros((1, 4, 4, 3), np.uint8))
    (tmp_path / "archive.npz").rename(tmp_path / "archive.npy")
    with pytest.raises(SourceError, match=r"is an \.npz archive"):
        load_array_file(tmp_path / "archive.npy")
    with pytest.raises(SourceError, match="does not exist"):
        load_array_file(tmp_path / "absent.npy")


# --- LabeledImages ----------------------------------------------------------------------------


def test_labeled_images_normalises_and_subsets() -> None:
    images = np.asfortranarray(_rng().integers(0, 256, (4, 2, 2, 3), dtype=np.uint8))
    data = LabeledImages(images, np.array([0, 1, 1, -1], np.int16), ["a", "b"])
    assert data.images.flags.c_contiguous and data.labels.dtype == np.int64
    assert data.class_names == ("a", "b") and data.image_size == 2 and len(data) == 4
    assert data.class_counts().tolist() == [1, 2]
    picked = data.subset([3, 0])
    assert picked.labels.tolist() == [-1, 0]
    np.testing.assert_array_equal(picked.images, images[[3, 0]])
    assert data.subset(data.labels == 1).labels.tolist() == [1, 1]
    assert "n=4" in repr(data)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((2, 4, 4, 3), np.float32), np.zeros(2, int), "uint8"),
        (np.zeros((2, 4, 4), np.uint8), np.zeros(2, int), r"\[N, H, W, 3\]"),
        (np.zeros((2, 4, 4, 3), np.uint8), np.zeros(3, int), "one integer per image"),
        (np.zeros((2, 4, 4, 3), np.uint8), np.zeros(2), "must be integers"),
        (np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 2]), r"\[0, 2\)"),
        (np.zeros((2, 4, 4, 3), np.uint8), np.array([0, -2]), r"\[0, 2\)"),
        ([[0]], np.zeros(1, int), "numpy arrays"),
    ],
)
def test_labeled_images_rejects(images: object, labels: np.ndarray, message: str) -> None:
    with pytest.raises(ImageFormatError, match=message):
        LabeledImages(images, labels, ("a", "b"))  # type: ignore[arg-type]


def test_a_folder_written_by_data_split_is_a_source(tmp_path: Path) -> None:
    """`patchveil data split --out tenants/` writes tenants/<id>/images.npz: the folder loads."""
    from patchveil.tenants.split import split_among_tenants, write_tenant_sources

    images = np.random.default_rng(0).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    data = LabeledImages(images, np.arange(12) % 3, ("a", "b", "c"))
    parts = split_among_tenants(data, ["t1", "t2"], None, seed=0)
    paths = write_tenant_sources(parts, tmp_path / "tenants", seed=0, source="test")
    loaded = load_source(paths["t1"].parent)
    assert np.array_equal(loaded.images, parts["t1"].images)
    assert loaded.class_names == ("a", "b", "c")
