"""Square-activation networks: windows, the plain maths CKKS mirrors, training, weights files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from patchveil.models.digits import DigitsError, load_mnist, load_uci_digits, read_idx
from patchveil.models.square_nets import (
    InputLayout,
    SquareNet,
    SquareNetConfig,
    SquareNetError,
    bias_free_weights,
    im2col,
    im2col_with_one,
    plain_logits,
    plain_predict,
    train_square_net,
    window_pixel_index,
)


def random_net(pool: str, layout: InputLayout, seed: int = 0) -> SquareNet:
    rng = np.random.default_rng(seed)
    channels, hidden, classes = 3, 4, 5
    features = channels * (layout.windows if pool == "none" else 1)
    return SquareNet(
        "random",
        layout,
        pool,  # type: ignore[arg-type]
        rng.normal(size=(channels, layout.window_size)),
        rng.normal(size=channels),
        rng.normal(size=(hidden, features)),
        rng.normal(size=hidden),
        rng.normal(size=(classes, hidden)),
        rng.normal(size=classes),
    )


def bias_free_logits(net: SquareNet, images: np.ndarray) -> np.ndarray:
    """What the evaluator computes, in plain arithmetic."""
    weights = bias_free_weights(net)
    activations = (im2col_with_one(net.layout, images) @ weights.window_weight.T) ** 2
    if net.pool == "mean":
        features = activations.sum(axis=1)
    else:
        features = activations.transpose(0, 2, 1).reshape(len(images), -1)
    return ((features @ weights.hidden_weight.T) ** 2) @ weights.output_weight.T


def test_windows_read_pixels_row_by_row_channel_last() -> None:
    layout = InputLayout((4, 4, 2), kernel_size=2, stride=2)
    index = window_pixel_index(layout)
    assert index.shape == (4, 8) and layout.windows == 4
    # Window 1 is the top-right block: rows 0-1, columns 2-3, both channels.
    assert index[1].tolist() == [4, 5, 6, 7, 12, 13, 14, 15]
    image = np.arange(32, dtype=float).reshape(1, 4, 4, 2)
    assert im2col(layout, image)[0, 1].tolist() == [4, 5, 6, 7, 12, 13, 14, 15]
    with pytest.raises(SquareNetError, match="does not fit a 4×4 image"):
        InputLayout((4, 4, 1), kernel_size=5, stride=1)


@pytest.mark.parametrize("pool", ["none", "mean"])
def test_biases_moved_onto_a_constant_one_compute_the_same_logits(pool: str) -> None:
    layout = InputLayout((6, 6, 1), kernel_size=3, stride=1)
    net, images = random_net(pool, layout), np.random.default_rng(1).random((7, 6, 6, 1))
    np.testing.assert_allclose(bias_free_logits(net, images), plain_logits(net, images))


def test_bag_of_patches_ignores_the_order_of_blocks() -> None:
    """Mean pooling over non-overlapping blocks: a disposable cipher's block shuffle (block order
    only) changes nothing, which is why the product model works on fresh-key ciphertexts."""
    layout = InputLayout((8, 8, 3), kernel_size=4, stride=4)
    net = random_net("mean", layout)
    image = np.random.default_rng(2).random((1, 8, 8, 3))
    blocks = image.reshape(2, 4, 2, 4, 3).transpose(0, 2, 1, 3, 4).reshape(4, 4, 4, 3)
    shuffled = blocks[[3, 0, 2, 1]].reshape(2, 2, 4, 4, 3).transpose(0, 2, 1, 3, 4)
    np.testing.assert_allclose(
        plain_logits(net, shuffled.reshape(1, 8, 8, 3)), plain_logits(net, image)
    )


def test_training_learns_digits_and_bounds_the_logits() -> None:
    train, test = load_uci_digits()
    assert (
        train.images.shape[1:] == (8, 8, 1) and 0 <= train.images.min() <= train.images.max() <= 1
    )
    config = SquareNetConfig(kernel_size=4, stride=2, channels=4, hidden=16, epochs=6)
    net = train_square_net("digits", train.images[:600], train.labels[:600], config)
    assert np.mean(plain_predict(net, test.images) == test.labels) > 0.7  # chance: 0.1
    assert np.abs(plain_logits(net, train.images[:600])).max() <= 8.0 + 1e-9


def test_weights_travel_as_npz_without_pickle() -> None:
    net = random_net("none", InputLayout((6, 6, 1), 3, 1))
    data = net.to_bytes()
    assert not data.startswith(b"\x80")  # a zip, never a pickle
    back = SquareNet.from_bytes(data)
    assert back.layout == net.layout and back.pool == net.pool
    np.testing.assert_array_equal(back.hidden_weight, net.hidden_weight)
    with pytest.raises(SquareNetError, match="not a square-net weights file"):
        SquareNet.from_bytes(b"junk")


def write_idx(path: Path, array: np.ndarray) -> None:
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += b"".join(struct.pack(">I", size) for size in array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as file:
        file.write(header + array.tobytes())


def test_mnist_idx_files_are_read_plain_or_gzipped(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([7, 2, 1], dtype=np.uint8))
    np.testing.assert_array_equal(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), images)
    split = load_mnist(tmp_path, "test")
    assert split.images.shape == (3, 28, 28, 1) and split.labels.tolist() == [7, 2, 1]
    assert split.images.max() <= 1.0
    with pytest.raises(DigitsError, match="no train-images-idx3-ubyte"):
        load_mnist(tmp_path, "train")
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DigitsError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
