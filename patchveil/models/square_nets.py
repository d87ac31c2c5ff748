"""Networks with square activations that CKKS can evaluate: their weights, plain maths and training.

Both models are one shape, `windows → linear → square → [mean over windows] → dense → square →
dense`, which homomorphic encryption can evaluate because every step is a sum or a product:

- the CryptoNets digits model: a 3×3 convolution over the image (windows overlap, `pool="none"`);
- the bag-of-patches product model: a linear patch embedding over non-overlapping blocks, then a
  mean over patches (`pool="mean"`), so the prediction does not depend on the blocks' order and
  a disposable-encrypted image (blocks shuffled afresh per image) is classified as it is.

A window is a `kernel_size × kernel_size × channels` patch read from the image flattened in
(row, column, channel) order; `window_pixel_index` gives, for every window and every position in
it, which flattened pixel it reads. The tenant's encoder and the platform's evaluator both use it,
so they agree on the layout without sharing code that touches a key.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from patchveil.errors import PatchveilError

Pool = Literal["none", "mean"]
# CKKS decrypts a value only below q0 / scale (2**5 with the 31-bit first prime and 2**26 scale
# of the default parameters): the output layer is rescaled so training logits stay well inside.
OUTPUT_BOUND = 8.0


class SquareNetError(PatchveilError):
    """A square-activation network or its input does not have the shape it needs."""


@dataclass(frozen=True)
class InputLayout:
    """How an image is cut into windows: what both sides of a homomorphic query must agree on."""

    image_shape: tuple[int, int, int]  # height, width, channels
    kernel_size: int
    stride: int

    def __post_init__(self) -> None:
        height, width, _ = self.image_shape
        if self.kernel_size < 1 or self.stride < 1 or self.kernel_size > min(height, width):
            raise SquareNetError(
                f"a {self.kernel_size}×{self.kernel_size} window with stride {self.stride} does "
                f"not fit a {height}×{width} image; use 1 ≤ kernel_size ≤ {min(height, width)}"
            )

    @property
    def pixels(self) -> int:
        return int(np.prod(self.image_shape))

    @property
    def windows_per_side(self) -> tuple[int, int]:
        height, width, _ = self.image_shape
        return (
            (height - self.kernel_size) // self.stride + 1,
            (width - self.kernel_size) // self.stride + 1,
        )

    @property
    def windows(self) -> int:
        rows, cols = self.windows_per_side
        return rows * cols

    @property
    def window_size(self) -> int:
        return self.kernel_size * self.kernel_size * self.image_shape[2]

    def check_images(self, images: np.ndarray) -> np.ndarray:
        """Images as float64 `[N, H, W, C]`, refused with the expected shape otherwise."""
        array = np.asarray(images, dtype=np.float64)
        if array.ndim == 3 and self.image_shape[2] == 1:
            array = array[..., None]
        if array.ndim != 4 or array.shape[1:] != self.image_shape:
            raise SquareNetError(
                f"images of shape {np.shape(images)} do not fit this model; it takes "
                f"[N, {', '.join(map(str, self.image_shape))}] scaled to [0, 1]"
            )
        return array


def window_pixel_index(layout: InputLayout) -> np.ndarray:
    """`[windows, window_size]` indices into the flattened image: row-major windows, each read
    in (row, column, channel) order. Pure index arithmetic, identical on both sides."""
    height, width, channels = layout.image_shape
    rows, cols = layout.windows_per_side
    pixel = np.arange(height * width * channels).reshape(height, width, channels)
    windows = [
        pixel[
            row * layout.stride : row * layout.stride + layout.kernel_size,
            col * layout.stride : col * layout.stride + layout.kernel_size,
        ].reshape(-1)
        for row in range(rows)
        for col in range(cols)
    ]
    return np.stack(windows)


def im2col(layout: InputLayout, images: np.ndarray) -> np.ndarray:
    """`[N, windows, window_size]`: every window of every image."""
    flat = layout.check_images(images).reshape(len(images), -1)
    return flat[:, window_pixel_index(layout)]


def im2col_with_one(layout: InputLayout, images: np.ndarray) -> np.ndarray:
    """`[N, windows, window_size + 1]`: every window followed by a constant 1, the input that
    carries the biases (see `BiasFreeWeights`); the latency packing encrypts these rows."""
    windows = im2col(layout, images)
    return np.concatenate([windows, np.ones((*windows.shape[:2], 1))], axis=2)


@dataclass(frozen=True)
class SquareNet:
    """The weights of a trained square-activation network, as float64 arrays (no torch)."""

    name: str
    layout: InputLayout
    pool: Pool
    window_weight: np.ndarray  # [channels, window_size]
    window_bias: np.ndarray  # [channels]
    hidden_weight: np.ndarray  # [hidden, features]: features = channels (mean) or channels·windows
    hidden_bias: np.ndarray  # [hidden]
    output_weight: np.ndarray  # [classes, hidden]
    output_bias: np.ndarray  # [classes]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return int(self.window_weight.shape[0])

    @property
    def classes(self) -> int:
        return int(self.output_weight.shape[0])

    def to_bytes(self) -> bytes:
        """An `.npz` of arrays and a JSON header: loadable without pickle."""
        header = {
            "name": self.name,
            "pool": self.pool,
            "image_shape": list(self.layout.image_shape),
            "kernel_size": self.layout.kernel_size,
            "stride": self.layout.stride,
            "metadata": self.metadata,
        }
        buffer = io.BytesIO()
        np.savez(
            buffer, header=np.frombuffer(_json_bytes(header), dtype=np.uint8), **self._arrays()
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> SquareNet:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                header = json.loads(archive["header"].tobytes())
                arrays = {name: archive[name].astype(np.float64) for name in _ARRAY_NAMES}
            layout = InputLayout(
                tuple(header["image_shape"]), int(header["kernel_size"]), int(header["stride"])
            )
            net = cls(header["name"], layout, header["pool"], **arrays, metadata=header["metadata"])
        except (ValueError, KeyError, TypeError, OSError) as error:
            raise SquareNetError(f"not a square-net weights file ({error})") from None
        check_net(net)
        return net

    def _arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in _ARRAY_NAMES}


_ARRAY_NAMES = (
    "window_weight",
    "window_bias",
    "hidden_weight",
    "hidden_bias",
    "output_weight",
    "output_bias",
)


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, sort_keys=True).encode()


def check_net(net: SquareNet) -> SquareNet:
    """Refuse weights whose shapes do not chain (a corrupt or mismatched weights file)."""
    features = net.channels * (net.layout.windows if net.pool == "none" else 1)
    expected = {
        "window_weight": (net.channels, net.layout.window_size),
        "window_bias": (net.channels,),
        "hidden_weight": (net.hidden_bias.shape[0], features),
        "output_weight": (net.classes, net.hidden_bias.shape[0]),
        "output_bias": (net.classes,),
    }
    for name, shape in expected.items():
        if getattr(net, name).shape != shape:
            raise SquareNetError(
                f"{net.name}: {name} has shape {getattr(net, name).shape}, expected {shape}"
            )
    if net.pool not in ("none", "mean"):
        raise SquareNetError(f"{net.name}: pool {net.pool!r} is not 'none' or 'mean'")
    return net


def plain_logits(net: SquareNet, images: np.ndarray) -> np.ndarray:
    """`[N, classes]` in float64: the exact computation CKKS approximates."""
    windows = im2col(net.layout, images)  # [N, P, K]
    activations = (windows @ net.window_weight.T + net.window_bias) ** 2  # [N, P, C]
    if net.pool == "mean":
        features = activations.mean(axis=1)
    else:
        features = activations.transpose(0, 2, 1).reshape(len(windows), -1)  # channel-major
    hidden = (features @ net.hidden_weight.T + net.hidden_bias) ** 2
    return hidden @ net.output_weight.T + net.output_bias


def plain_predict(net: SquareNet, images: np.ndarray) -> np.ndarray:
    return plain_logits(net, images).argmax(axis=1)


@dataclass(frozen=True)
class BiasFreeWeights:
    """The same network with every bias moved onto a constant-1 input, so no plain value is
    ever added to a ciphertext.

    Why: TenSEAL labels a rescaled ciphertext with the nominal scale 2**scale_bits although the
    prime it divided by differs from it (by about 1e-3 with 26-bit primes), so every rescaling
    multiplies the encrypted values by a factor close to 1. A product and a plain bias added to
    it would disagree by that factor; carried by a constant 1 that goes through the very same
    operations, the bias shares the factor with everything else in its layer, and the logits
    come out all multiplied by one positive number, which leaves the argmax alone.

    Each window gets a last input fixed at 1; channel `channels` (the last) reads only it, so
    its square is 1 at every window; hidden unit `hidden` (the last) reads only that channel,
    so its square is 1 too. Mean pooling divides the hidden weights by the number of windows.
    """

    window_weight: np.ndarray  # [channels + 1, window_size + 1]
    hidden_weight: np.ndarray  # [hidden + 1, features + windows or + 1], pooling folded in
    output_weight: np.ndarray  # [classes, hidden + 1]


def bias_free_weights(net: SquareNet) -> BiasFreeWeights:
    channels, windows = net.channels, net.layout.windows
    hidden = net.hidden_bias.shape[0]
    window_weight = np.zeros((channels + 1, net.layout.window_size + 1))
    window_weight[:channels, :-1] = net.window_weight
    window_weight[:channels, -1] = net.window_bias
    window_weight[channels, -1] = 1.0
    if net.pool == "mean":
        # The evaluator sums the windows; the mean's 1/windows goes into these weights.
        hidden_weight = np.zeros((hidden + 1, channels + 1))
        hidden_weight[:hidden, :channels] = net.hidden_weight
        hidden_weight[:hidden, channels] = net.hidden_bias
        hidden_weight[hidden, channels] = 1.0
        hidden_weight /= windows
    else:
        # Channel-major features; the constant channel is 1 at every window: read its first.
        hidden_weight = np.zeros((hidden + 1, (channels + 1) * windows))
        hidden_weight[:hidden, : channels * windows] = net.hidden_weight
        hidden_weight[:hidden, channels * windows] = net.hidden_bias
        hidden_weight[hidden, channels * windows] = 1.0
    output_weight = np.concatenate([net.output_weight, net.output_bias[:, None]], axis=1)
    return BiasFreeWeights(window_weight, hidden_weight, output_weight)


# --- training ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SquareNetConfig:
    """Architecture and optimisation; the defaults train the digits model in seconds on a CPU."""

    kernel_size: int = 3
    stride: int = 1
    pool: Pool = "none"
    channels: int = 8
    hidden: int = 32
    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 1e-2
    weight_decay: float = 1e-2
    max_shift: int = 1  # augmentation: images moved by up to this many pixels each way
    seed: int = 0


class _SquareNetModule(nn.Module):
    def __init__(self, layout: InputLayout, config: SquareNetConfig, classes: int) -> None:
        super().__init__()
        self.pool = config.pool
        self.register_buffer("pixel_index", torch.from_numpy(window_pixel_index(layout)))
        features = config.channels * (layout.windows if config.pool == "none" else 1)
        self.window = nn.Linear(layout.window_size, config.channels)
        self.hidden = nn.Linear(features, config.hidden)
        self.output = nn.Linear(config.hidden, classes)
        # Squares double the exponent of every scale: small weights keep early training finite.
        for layer in (self.window, self.hidden, self.output):
            nn.init.normal_(layer.weight, std=0.5 / math.sqrt(layer.in_features))
            nn.init.zeros_(layer.bias)

    def forward(self, flat_images: torch.Tensor) -> torch.Tensor:
        activations = self.window(flat_images[:, self.pixel_index]) ** 2  # [B, P, C]
        if self.pool == "mean":
            features = activations.mean(dim=1)
        else:
            features = activations.transpose(1, 2).flatten(1)
        return self.output(self.hidden(features) ** 2)


def train_square_net(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    config: SquareNetConfig | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> SquareNet:
    """Train in plain (images `[N, H, W, C]` in [0, 1]) and return float64 weights whose output
    layer is rescaled so that no training logit exceeds `OUTPUT_BOUND` (argmax unchanged).
    `progress(epoch, mean_loss)` is called after every epoch."""
    config = config or SquareNetConfig()
    array = np.asarray(images, dtype=np.float64)
    if array.ndim == 3:
        array = array[..., None]
    layout = InputLayout(tuple(array.shape[1:]), config.kernel_size, config.stride)
    classes = int(np.max(labels)) + 1
    torch.manual_seed(config.seed)
    module = _SquareNetModule(layout, config, classes)
    targets = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    optimiser = torch.optim.AdamW(
        module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps = config.epochs * math.ceil(len(array) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, config.learning_rate, total_steps=steps
    )
    generator = torch.Generator().manual_seed(config.seed)
    module.train()
    threads = torch.get_num_threads()
    # A network this small loses more to thread hand-offs than it gains (40× on 2 busy cores).
    torch.set_num_threads(1)
    try:
        for epoch in range(1, config.epochs + 1):
            order = torch.randperm(len(array), generator=generator)
            losses = []
            for start in range(0, len(order), config.batch_size):
                batch = order[start : start + config.batch_size]
                shifted = _shift(array[batch.numpy()], config.max_shift, generator)
                loss = nn.functional.cross_entropy(module(shifted), targets[batch])
                optimiser.zero_grad()
                loss.backward()
                # Square activations can blow up a step; clipping keeps one bad batch harmless.
                nn.utils.clip_grad_norm_(module.parameters(), 1.0)
                optimiser.step()
                schedule.step()
                losses.append(loss.item())
            if progress is not None:
                progress(epoch, float(np.mean(losses)))
    finally:
        torch.set_num_threads(threads)
    return _to_square_net(name, layout, config, module, array)


def _shift(images: np.ndarray, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Flattened images, each moved by a random whole number of pixels (zeros fill in)."""
    if max_shift == 0:
        return torch.from_numpy(images.reshape(len(images), -1)).float()
    _, height, width, _ = images.shape
    padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    offsets = torch.randint(0, 2 * max_shift + 1, (len(images), 2), generator=generator).numpy()
    moved = np.stack(
        [padded[i, dy : dy + height, dx : dx + width] for i, (dy, dx) in enumerate(offsets)]
    )
    return torch.from_numpy(moved.reshape(len(images), -1)).float()


def _to_square_net(
    name: str,
    layout: InputLayout,
    config: SquareNetConfig,
    module: _SquareNetModule,
    images: np.ndarray,
) -> SquareNet:
    def numpy(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().double().numpy().copy()

    net = SquareNet(
        name=name,
        layout=layout,
        pool=config.pool,
        window_weight=numpy(module.window.weight),
        window_bias=numpy(module.window.bias),
        hidden_weight=numpy(module.hidden.weight),
        hidden_bias=numpy(module.hidden.bias),
        output_weight=numpy(module.output.weight),
        output_bias=numpy(module.output.bias),
        metadata={"epochs": str(config.epochs), "channels": str(config.channels)},
    )
    largest = float(np.abs(plain_logits(net, images)).max())
    shrink = min(1.0, OUTPUT_BOUND / largest) if largest > 0 else 1.0
    return check_net(
        SquareNet(
            **{
                **net.__dict__,
                "output_weight": net.output_weight * shrink,
                "output_bias": net.output_bias * shrink,
            }
        )
    )
