"""Tests for model encryption: a converted ViT reads one key's ciphertexts like the plain one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from patchveil.errors import PatchveilError
from patchveil.models import create_vit, images_to_tensor
from patchveil.tenants.ciphers import create_cipher
from patchveil.tenants.keys import CipherSpec, Key
from patchveil.tenants.model_encryption import encrypt_model

IMAGE_SIZE = 32


def fixed_key(name: str, block_size: int, seed: int, image_size: int = IMAGE_SIZE) -> Key:
    """A reproducible key (tests only: real keys come from `Key.generate`)."""
    secret = np.random.default_rng(seed).bytes(32)
    spec = CipherSpec(name, block_size, image_size)
    return Key("tenant-test", f"key-{seed}", 1, spec, "2025-01-01T00:00:00+00:00", secret)


def random_model(variant: str, patch_size: int) -> VisionTransformer:
    """A small untrained ViT with position embedding, class token and head scaled up, so that a
    wrong permutation would move the logits far beyond the tolerance."""
    torch.manual_seed(patch_size)
    model = create_vit(
        variant, "test", image_size=IMAGE_SIZE, patch_size=patch_size, num_classes=10
    ).eval()
    with torch.no_grad():
        for parameter in (model.pos_embed, model.cls_token, model.head.weight):
            if parameter is not None:
                parameter.normal_()
    return model


def images(count: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(
        0, 256, (count, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8
    )


def logits(model: torch.nn.Module, batch: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model(images_to_tensor(batch))


@pytest.mark.parametrize("variant", ["standard", "position_free"])
@pytest.mark.parametrize("block_size", [2, 4, 8])
@pytest.mark.parametrize("key_seed", [1, 2])
def test_encrypted_model_on_ciphertext_matches_plain_model_on_plaintext(
    variant: str, block_size: int, key_seed: int
) -> None:
    model = random_model(variant, block_size)
    cipher = create_cipher(fixed_key("conventional", block_size, key_seed))
    plain = images(seed=key_seed)
    encrypted_images = cipher.encrypt(plain)

    encrypted_model = encrypt_model(model, cipher)

    expected = logits(model, plain)
    assert (logits(encrypted_model, encrypted_images) - expected).abs().max().item() < 1e-4
    # The conversion is what makes it work: the plain model is lost on ciphertexts.
    assert (logits(model, encrypted_images) - expected).abs().max().item() > 1e-2


def test_original_model_is_untouched() -> None:
    model = random_model("standard", 4)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    encrypted_model = encrypt_model(model, create_cipher(fixed_key("conventional", 4, 3)))
    assert encrypted_model is not model
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert not torch.equal(encrypted_model.patch_embed.proj.weight, model.patch_embed.proj.weight)
    # The bias is unchanged: negative–positive is a sign flip after normalisation.
    assert torch.equal(encrypted_model.patch_embed.proj.bias, model.patch_embed.proj.bias)


def test_class_token_row_of_the_position_embedding_stays() -> None:
    model = random_model("standard", 4)
    encrypted_model = encrypt_model(model, create_cipher(fixed_key("conventional", 4, 4)))
    assert torch.equal(encrypted_model.pos_embed[:, 0], model.pos_embed[:, 0])


@pytest.mark.parametrize("reg_tokens", [0, 2])
def test_no_embed_class_models_permute_every_row(reg_tokens: int) -> None:
    torch.manual_seed(5)
    model = VisionTransformer(
        img_size=IMAGE_SIZE,
        patch_size=4,
        num_classes=10,
        embed_dim=32,
        depth=1,
        num_heads=2,
        no_embed_class=True,
        reg_tokens=reg_tokens,
    ).eval()
    with torch.no_grad():
        model.pos_embed.normal_()
        model.head.weight.normal_()
    cipher = create_cipher(fixed_key("conventional", 4, 6))
    plain = images(count=2)
    difference = logits(encrypt_model(model, cipher), cipher.encrypt(plain)) - logits(model, plain)
    assert difference.abs().max().item() < 1e-4


@pytest.mark.parametrize("cipher_name", ["le", "restricted", "etc", "pixel", "plain"])
def test_other_ciphers_are_refused(cipher_name: str) -> None:
    model = random_model("standard", 4)
    cipher = create_cipher(fixed_key(cipher_name, 4, 7))
    with pytest.raises(PatchveilError, match=f"needs a 'conventional' cipher, got '{cipher_name}'"):
        encrypt_model(model, cipher)


def test_patch_size_must_equal_block_size() -> None:
    model = random_model("standard", 4)
    cipher = create_cipher(fixed_key("conventional", 8, 8))
    with pytest.raises(PatchveilError, match="patch size 4 differs from the key's block size 8"):
        encrypt_model(model, cipher)


def test_image_size_must_equal_the_keys() -> None:
    model = random_model("position_free", 4)
    cipher = create_cipher(fixed_key("conventional", 4, 9, image_size=16))
    with pytest.raises(PatchveilError, match="image size 32 differs from the key's image size 16"):
        encrypt_model(model, cipher)


def test_only_timm_vision_transformers_are_accepted() -> None:
    cipher = create_cipher(fixed_key("conventional", 4, 10))
    with pytest.raises(PatchveilError, match="VisionTransformer"):
        encrypt_model(torch.nn.Linear(3, 3), cipher)
