"""Tests for the tenant's image files: reading `.npy`/image/folder inputs, atomic lossless writes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from patchveil.errors import ImageFormatError, PatchveilError
from patchveil.tenants import imageio
from patchveil.tenants.imageio import ImageBatch, read_images, write_images, write_png


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)


def save(path: Path, image: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(image)
    (picture.convert(mode) if mode else picture).save(path)
    return path


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- reading --------------------------------------------------------------------------------
def test_read_an_npy_batch(tmp_path: Path, images: np.ndarray) -> None:
    np.save(tmp_path / "batch.npy", images)
    batch = read_images(tmp_path / "batch.npy")
    assert batch.kind == "npy" and batch.names == ()
    assert batch.images.dtype == np.uint8 and np.array_equal(batch.images, images)


def test_read_one_image_file(tmp_path: Path, images: np.ndarray) -> None:
    batch = read_images(save(tmp_path / "scan.PNG", images[0]))
    assert (batch.kind, batch.names) == ("image", ("scan.PNG",))
    assert np.array_equal(batch.images, images[:1])


def test_read_a_folder_in_name_order_skipping_other_files(
    tmp_path: Path, images: np.ndarray
) -> None:
    folder = tmp_path / "scans"
    for name, image in zip(["c.png", "a.bmp", "b.png"], images, strict=True):
        save(folder / name, image)
    (folder / "notes.txt").write_text("not an image")
    batch = read_images(folder)
    assert (batch.kind, batch.names) == ("folder", ("a.bmp", "b.png", "c.png"))
    assert np.array_equal(batch.images, images[[1, 2, 0]])


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_images_of_other_modes_are_read_as_rgb(
    tmp_path: Path, images: np.ndarray, mode: str
) -> None:
    path = save(tmp_path / "scan.png", images[0], mode)
    batch = read_images(path)
    assert batch.images.shape == (1, 8, 8, 3) and batch.images.dtype == np.uint8
    with Image.open(path) as opened:
        assert np.array_equal(batch.images[0], np.asarray(opened.convert("RGB")))


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("x.npy", b"not a numpy file", "not a readable .npy file"),
        ("x.npy", np.zeros((2, 8, 8, 3), np.float32), "uint8 images [N, H, W, 3], got float32"),
        ("x.npy", np.zeros((8, 8, 3), np.uint8), "got uint8 [8, 8, 3]"),
        ("x.npy", np.zeros((2, 8, 8, 4), np.uint8), "got uint8 [2, 8, 8, 4]"),
        ("x.npy", np.array(["a", "b"]), "uint8 images"),
        ("x.png", b"\x89PNG\r\n\x1a\nbroken", "not a readable image"),
        ("x.gif", b"", "not a readable image"),
        ("x.txt", b"text", "expected a .npy file, an image file"),
        ("x.npz", b"", "expected a .npy file"),
    ],
)
def test_unreadable_inputs_name_the_file_and_what_was_expected(
    tmp_path: Path, name: str, content: bytes | np.ndarray, expected: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content)
    with pytest.raises(PatchveilError) as raised:
        read_images(path)
    assert expected in str(raised.value) and name in str(raised.value)


def test_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(PatchveilError, match="does not exist"):
        read_images(tmp_path / "nowhere")


def test_a_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ImageFormatError, match=r"holds no image files \(.*\.png"):
        read_images(tmp_path)


def test_a_folder_of_different_sizes(tmp_path: Path, images: np.ndarray) -> None:
    save(tmp_path / "a.png", images[0])
    save(tmp_path / "b.png", np.zeros((4, 8, 3), np.uint8))
    with pytest.raises(ImageFormatError, match="different sizes"):
        read_images(tmp_path)


# --- writing --------------------------------------------------------------------------------
def test_write_npy_like_the_input(tmp_path: Path, images: np.ndarray) -> None:
    batch = ImageBatch(images, "npy")
    write_images(tmp_path / "out" / "cipher.npy", batch, images[::-1])
    assert np.array_equal(np.load(tmp_path / "out" / "cipher.npy"), images[::-1])
    with pytest.raises(PatchveilError, match=r"cipher\.png must end in \.npy"):
        write_images(tmp_path / "cipher.png", batch, images)
    assert listing(tmp_path) == ["out"] and listing(tmp_path / "out") == ["cipher.npy"]


@pytest.mark.parametrize("suffix", [".png", ".PNG"])
def test_write_one_image_losslessly(tmp_path: Path, images: np.ndarray, suffix: str) -> None:
    write_images(
        tmp_path / f"cipher{suffix}", ImageBatch(images[:1], "image", ("a.png",)), images[:1]
    )
    with Image.open(tmp_path / f"cipher{suffix}") as opened:
        assert opened.format == "PNG"
        assert np.array_equal(np.asarray(opened), images[0])


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".webp", ".gif", ""])
def test_lossy_or_unknown_image_outputs_are_refused(
    tmp_path: Path, images: np.ndarray, suffix: str
) -> None:
    batch = ImageBatch(images[:1], "image", ("a.png",))
    with pytest.raises(PatchveilError, match="lossless"):
        write_images(tmp_path / f"cipher{suffix}", batch, images[:1])
    assert listing(tmp_path) == []


def test_write_a_folder_of_pngs_named_after_the_inputs(tmp_path: Path, images: np.ndarray) -> None:
    batch = ImageBatch(images, "folder", ("a.bmp", "b.JPG", "c.png"))
    write_images(tmp_path / "cipher", batch, images)
    assert listing(tmp_path) == ["cipher"]
    assert listing(tmp_path / "cipher") == ["a.png", "b.png", "c.png"]
    assert np.array_equal(read_images(tmp_path / "cipher").images, images)


def test_write_into_an_existing_empty_folder(tmp_path: Path, images: np.ndarray) -> None:
    (tmp_path / "cipher").mkdir()
    write_images(tmp_path / "cipher", ImageBatch(images, "folder", ("a", "b", "c")), images)
    assert listing(tmp_path) == ["cipher"] and len(listing(tmp_path / "cipher")) == 3


def test_a_non_empty_output_folder_is_left_alone(tmp_path: Path, images: np.ndarray) -> None:
    (tmp_path / "cipher").mkdir()
    (tmp_path / "cipher" / "earlier.png").write_bytes(b"keep")
    with pytest.raises(PatchveilError, match="exists and is not empty"):
        write_images(tmp_path / "cipher", ImageBatch(images, "folder", ("a", "b", "c")), images)
    assert listing(tmp_path) == ["cipher"] and listing(tmp_path / "cipher") == ["earlier.png"]


def test_inputs_that_would_share_an_output_name_are_refused(
    tmp_path: Path, images: np.ndarray
) -> None:
    batch = ImageBatch(images, "folder", ("scan.bmp", "scan.png", "other.png"))
    with pytest.raises(ImageFormatError, match=r"scan\.bmp, scan\.png would all be written as"):
        write_images(tmp_path / "cipher", batch, images)
    assert listing(tmp_path) == []


def test_a_failed_folder_write_leaves_nothing_behind(
    tmp_path: Path, images: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[Path] = []
    real_write_png = imageio.write_png

    def fail_on_the_second(path: Path, image: np.ndarray, metadata: object = None) -> None:
        if written:
            raise OSError("disk full")
        written.append(Path(path))
        real_write_png(path, image)

    monkeypatch.setattr(imageio, "write_png", fail_on_the_second)
    with pytest.raises(OSError, match="disk full"):
        write_images(tmp_path / "cipher", ImageBatch(images, "folder", ("a", "b", "c")), images)
    assert written and listing(tmp_path) == []  # neither the output nor the staging folder


def test_a_failed_npy_write_leaves_nothing_behind(
    tmp_path: Path, images: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cipher.npy").write_bytes(b"earlier result")

    def fail(stream: object, array: np.ndarray) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(imageio.np, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        write_images(tmp_path / "cipher.npy", ImageBatch(images, "npy"), images)
    assert listing(tmp_path) == ["cipher.npy"]
    assert (tmp_path / "cipher.npy").read_bytes() == b"earlier result"


def test_write_png_is_atomic_and_exact(tmp_path: Path, images: np.ndarray) -> None:
    write_png(tmp_path / "deep" / "er" / "grid.png", images[0])
    assert listing(tmp_path / "deep" / "er") == ["grid.png"]
    with Image.open(tmp_path / "deep" / "er" / "grid.png") as opened:
        assert np.array_equal(np.asarray(opened), images[0])
    # A non-contiguous view is written as the image it shows.
    write_png(tmp_path / "flipped.png", images[0][:, ::-1])
    with Image.open(tmp_path / "flipped.png") as opened:
        assert np.array_equal(np.asarray(opened), images[0][:, ::-1])


@settings(max_examples=15, deadline=None)
@given(
    kind=st.sampled_from(["npy", "image", "folder"]),
    count=st.integers(1, 3),
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_what_is_written_reads_back_exactly(
    kind: str, count: int, height: int, width: int, seed: int
) -> None:
    count = 1 if kind == "image" else count
    images = np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), np.uint8)
    names = tuple(f"img{index}.png" for index in range(count)) if kind != "npy" else ()
    target = {"npy": "out.npy", "image": "out.png", "folder": "out"}[kind]
    with tempfile.TemporaryDirectory() as folder:
        write_images(Path(folder) / target, ImageBatch(images, kind, names), images)
        batch = read_images(Path(folder) / target)
        assert batch.kind == kind and np.array_equal(batch.images, images)
