"""Learned inversion: an attacker trains a network to map ciphertexts under fresh keys to images.

The attacker holds public plain images of the same kind (the train split) and the cipher's
public description (name, block size, parameters, window layout), never the victim's key. It
encrypts its own images under keys it makes itself — a fresh key per batch for shared-key
ciphers, a fresh nonce per image for per-image ones, so the network cannot learn any one key —
and trains a network to undo them. It is scored on held-out images encrypted under a victim key
it never saw.

Which network an attacker picks depends on what the cipher keeps:
- **block positions kept** (`plain`, `pixel`): a small U-Net with a global skip, since every
  output pixel depends on the input pixels around the same place;
- **block order hidden** (`conventional`, `restricted`, `invariant`, `etc`, `le`, `disposable`):
  a convolution would see a scrambled mosaic, so the attacker uses a permutation-aware decoder
  that reads blocks as tokens with no position (a transformer encoder is equivariant to their
  order), plus the public window of each block when the cipher confines blocks to windows, and
  writes each output block through a learned query for that position that cross-attends to the
  tokens (only to its own window's tokens when windows are public). In-block keyed operations
  (pixel shuffle, negative–positive, colour shuffle, rotation/flip) are learned from the fresh
  keys: a per-block group element must be inferred from the block's content and its neighbours.

Scores (held-out test images): SSIM and PSNR of the inverted images against the plain ones
(data range 255, per-channel SSIM with scikit-image's defaults), beside the same scores of the
raw ciphertext; recognisability = accuracy of an independent plain-trained classifier
(`patchveil.audit.embedding`) on the inverted images, beside its accuracy on the plain images
and on the raw ciphertexts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from patchveil.audit.embedding import EmbeddingNet, accuracy, images_to_tensor
from patchveil.audit.scoring import psnr, ssim
from patchveil.errors import PatchveilError
from patchveil.groups import window_of_blocks
from patchveil.tenants.ciphers import Cipher, create_cipher
from patchveil.tenants.keys import CipherSpec, Key

InverterKind = Literal["unet", "blocks"]
# Ciphers that leave every block where it was: a convolutional network sees the layout.
_POSITION_KEEPING = frozenset({"plain", "pixel"})
# Nonces far from any tenant's own ranges (the key store's start at 2^61 and 2^62).
_VICTIM_NONCE_BASE = 1 << 40


def attacker_model_for(spec: CipherSpec) -> InverterKind:
    """The network an attacker would pick for this cipher (see the module docstring)."""
    return "unet" if spec.name in _POSITION_KEEPING else "blocks"


def window_size(spec: CipherSpec) -> int:
    """The public window (in blocks) a block stays in; 0 when it may go anywhere."""
    window = int(spec.param_dict.get("window", 0)) if spec.name == "disposable" else 0
    return 0 if window in (0, spec.blocks_per_side) else window


class SmallUNet(nn.Module):
    """Two-level U-Net with a global skip: output = input + learned correction."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()

        def block(inputs: int, outputs: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(inputs, outputs, 3, padding=1), nn.GELU(),
                nn.Conv2d(outputs, outputs, 3, padding=1), nn.GELU(),
            )  # fmt: skip

        self.down1 = block(3, width)
        self.down2 = block(width, 2 * width)
        self.middle = block(2 * width, 4 * width)
        self.up2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
        self.merge2 = block(4 * width, 2 * width)
        self.up1 = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.merge1 = block(2 * width, width)
        self.out = nn.Conv2d(width, 3, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.down1(x)
        second = self.down2(nn.functional.max_pool2d(first, 2))
        middle = self.middle(nn.functional.max_pool2d(second, 2))
        second = self.merge2(torch.cat([self.up2(middle), second], 1))
        first = self.merge1(torch.cat([self.up1(second), first], 1))
        return x + self.out(first)


class BlockSetInverter(nn.Module):
    """Blocks as order-free tokens → per-position queries cross-attending to them → image."""

    def __init__(
        self,
        block_size: int,
        image_size: int,
        window: int = 0,
        width: int = 64,
        depth: int = 1,
        heads: int = 4,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.side = image_size // block_size
        count = self.side * self.side
        length = 3 * block_size * block_size
        self.embed = nn.Linear(length, width)
        windows = (
            np.zeros(count, dtype=np.int64)
            if window == 0
            else window_of_blocks(self.side, window).astype(np.int64)
        )
        self.register_buffer("windows", torch.from_numpy(windows), persistent=False)
        self.window_embedding = nn.Embedding(int(windows.max()) + 1, width)
        # A query may attend only to tokens of its own window (all tokens without windows).
        blocked = torch.from_numpy(windows[:, None] != windows[None, :])
        self.register_buffer(
            "memory_mask",
            torch.zeros(count, count).masked_fill(blocked, float("-inf")),
            persistent=False,
        )
        self.queries = nn.Parameter(torch.randn(count, width) * 0.02)

        def layer(kind: type[nn.Module]) -> nn.Module:
            return kind(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)

        self.encoder = nn.TransformerEncoder(
            layer(nn.TransformerEncoderLayer), depth, enable_nested_tensor=False
        )
        self.decoder = nn.TransformerDecoder(layer(nn.TransformerDecoderLayer), depth)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, length)

    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] → [B, N, 3M²], row-major block grid."""
        m, side = self.block_size, self.side
        grid = x.reshape(len(x), 3, side, m, side, m).permute(0, 2, 4, 1, 3, 5)
        return grid.reshape(len(x), side * side, 3 * m * m)

    def from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        m, side = self.block_size, self.side
        grid = tokens.reshape(len(tokens), side, side, 3, m, m).permute(0, 3, 1, 4, 2, 5)
        return grid.reshape(len(tokens), 3, side * m, side * m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(self.to_tokens(x)) + self.window_embedding(self.windows)
        memory = self.encoder(tokens)
        queries = (self.queries + self.window_embedding(self.windows)).expand(len(x), -1, -1)
        decoded = self.decoder(queries, memory, memory_mask=self.memory_mask)
        return self.from_tokens(self.out(self.norm(decoded)))


def build_inverter(spec: CipherSpec, kind: InverterKind | None = None) -> nn.Module:
    """The attacker's network for this cipher (or the named kind)."""
    kind = kind or attacker_model_for(spec)
    if kind == "unet":
        return SmallUNet()
    if kind == "blocks":
        return BlockSetInverter(spec.block_size, spec.image_size, window_size(spec))
    raise PatchveilError(f"unknown inverter {kind!r}; choose unet or blocks")


class FreshKeys:
    """Encrypts batches under key material the victim never uses: a new key per batch for
    shared-key ciphers, new nonces (never repeated) for per-image ones."""

    def __init__(self, spec: CipherSpec, tenant_id: str = "attacker") -> None:
        self.spec = spec
        self.tenant_id = tenant_id
        self._per_image: Cipher | None = None
        self._next_nonce = 0

    def encrypt(self, images: np.ndarray) -> np.ndarray:
        if self._per_image is None:
            cipher = create_cipher(Key.generate(self.tenant_id, self.spec))
            if not cipher.per_image:
                return cipher.encrypt(images)
            self._per_image = cipher
        nonces = np.arange(self._next_nonce, self._next_nonce + len(images))
        self._next_nonce += len(images)
        return self._per_image.encrypt(images, nonces)


def victim_encrypt(spec: CipherSpec, images: np.ndarray) -> np.ndarray:
    """The held-out images under one victim key the attacker never saw."""
    cipher = create_cipher(Key.generate("victim", spec))
    if cipher.per_image:
        return cipher.encrypt(images, _VICTIM_NONCE_BASE + np.arange(len(images)))
    return cipher.encrypt(images)


def train_inverter(
    spec: CipherSpec,
    public_images: np.ndarray,
    steps: int = 500,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    kind: InverterKind | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Train the attacker's network on its own public images under fresh keys (MSE, AdamW)."""
    if len(public_images) == 0:
        raise PatchveilError("the attacker needs at least one public plain image")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_inverter(spec, kind).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=max(steps, 1), pct_start=0.1
    )
    fresh = FreshKeys(spec)
    model.train()
    for _ in range(steps):
        index = rng.choice(len(public_images), size=min(batch_size, len(public_images)))
        plain = public_images[index]
        if rng.random() < 0.5:  # a horizontal flip: more plain images at no cost
            plain = plain[:, :, ::-1]
        target = images_to_tensor(np.ascontiguousarray(plain), device)
        inputs = images_to_tensor(fresh.encrypt(np.ascontiguousarray(plain)), device)
        loss = nn.functional.mse_loss(model(inputs), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def invert(
    model: nn.Module,
    ciphertexts: np.ndarray,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """The attacker's reconstruction (uint8 [N, H, W, 3]) of each ciphertext."""
    model = model.to(device).eval()
    parts = []
    for start in range(0, len(ciphertexts), batch_size):
        output = model(images_to_tensor(ciphertexts[start : start + batch_size], device))
        pixels = output.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
        parts.append(pixels.permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros_like(ciphertexts)


def _finite_mean(values: np.ndarray, cap: float = 100.0) -> float:
    """Mean with identical images (infinite PSNR) counted at `cap` dB."""
    return float(np.minimum(values, cap).mean())


@dataclass(frozen=True)
class InversionResult:
    """How well a learned inversion undoes a cipher under a fresh key, on held-out images."""

    cipher: str
    params: dict[str, Any]
    block_size: int
    image_size: int
    model: str
    train_steps: int
    test_images: int
    ssim: float
    psnr: float
    ssim_median: float
    ciphertext_ssim: float
    ciphertext_psnr: float
    recognisability: float
    plain_accuracy: float
    ciphertext_accuracy: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def audit_inversion(
    spec: CipherSpec,
    public_images: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    classifier: EmbeddingNet,
    steps: int = 500,
    batch_size: int = 64,
    kind: InverterKind | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[InversionResult, np.ndarray, np.ndarray]:
    """Train the attacker, invert the victim's held-out ciphertexts, score them.

    Returns the result, the ciphertexts and the reconstructions (for pictures).
    """
    kind = kind or attacker_model_for(spec)
    model = train_inverter(
        spec, public_images, steps, batch_size, kind=kind, seed=seed, device=device
    )
    ciphertexts = victim_encrypt(spec, test_images)
    inverted = invert(model, ciphertexts, device=device)
    inverted_ssim = ssim(inverted, test_images)
    result = InversionResult(
        cipher=spec.name,
        params=spec.param_dict,
        block_size=spec.block_size,
        image_size=spec.image_size,
        model=kind,
        train_steps=steps,
        test_images=len(test_images),
        ssim=float(inverted_ssim.mean()),
        psnr=_finite_mean(psnr(inverted, test_images)),
        ssim_median=float(np.median(inverted_ssim)),
        ciphertext_ssim=float(ssim(ciphertexts, test_images).mean()),
        ciphertext_psnr=_finite_mean(psnr(ciphertexts, test_images)),
        recognisability=accuracy(classifier, inverted, test_labels, device=device),
        plain_accuracy=accuracy(classifier, test_images, test_labels, device=device),
        ciphertext_accuracy=accuracy(classifier, ciphertexts, test_labels, device=device),
    )
    return result, ciphertexts, inverted
