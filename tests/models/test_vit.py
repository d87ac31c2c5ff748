"""Tests for the ViT variants, their factory and spec, and the fixed preprocessing."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import patchveil.models
from patchveil.errors import ImageFormatError, PatchveilError
from patchveil.groups import window_of_blocks
from patchveil.models import (
    VIT_SIZES,
    ModelSpec,
    available_sizes,
    available_variants,
    create_vit,
    create_vit_from_spec,
    images_to_tensor,
)
from patchveil.tenants.ciphers.hazmat import block_index

IMAGE_SIZE = 32
PATCH_SIZE = 4


def small_vit(variant: str, **overrides: int | str) -> torch.nn.Module:
    torch.manual_seed(0)
    args = {"image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "num_classes": 10, **overrides}
    return create_vit(variant, "test", **args).eval()


def random_images(count: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(
        0, 256, (count, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8
    )


def scramble_blocks(images: np.ndarray, block_size: int, order: np.ndarray) -> np.ndarray:
    """Block j of the result is block order[j] of the input, in pixel space."""
    blocks = block_index(images.shape[1], block_size)
    flat = images.reshape(len(images), -1)
    out = np.empty_like(flat)
    out[:, blocks] = flat[:, blocks[order]]
    return out.reshape(images.shape)


def logits(model: torch.nn.Module, images: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model(images_to_tensor(images))


# --- factory and variants ----------------------------------------------------------------


@pytest.mark.parametrize("variant", ["standard", "position_free"])
def test_every_variant_classifies_a_batch(variant: str) -> None:
    model = small_vit(variant)
    out = logits(model, random_images(count=3))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()


def test_registered_variants_and_sizes() -> None:
    assert {"standard", "position_free"} <= set(available_variants())
    assert {"cpu", "tiny", "small", "base", "test"} <= set(available_sizes())
    # timm's vit_{tiny,small,base}_patch16_224 dimensions.
    assert (VIT_SIZES["tiny"].embed_dim, VIT_SIZES["tiny"].num_heads) == (192, 3)
    assert (VIT_SIZES["small"].embed_dim, VIT_SIZES["small"].num_heads) == (384, 6)
    assert (VIT_SIZES["base"].embed_dim, VIT_SIZES["base"].num_heads) == (768, 12)
    assert all(VIT_SIZES[name].depth == 12 for name in ("tiny", "small", "base"))
    assert (VIT_SIZES["cpu"].depth, VIT_SIZES["cpu"].embed_dim) == (6, 192)


def test_cpu_size_builds_for_cifar() -> None:
    model = create_vit("standard", "cpu", image_size=32, patch_size=4, num_classes=10)
    assert len(model.blocks) == 6
    assert model.pos_embed.shape == (1, 1 + 64, 192)


def test_standard_has_position_embedding_and_class_token() -> None:
    model = small_vit("standard")
    num_patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    assert model.cls_token is not None
    assert model.pos_embed.shape == (1, 1 + num_patches, 64)
    assert model.global_pool == "token"


def test_position_free_has_no_position_embedding_at_all() -> None:
    model = small_vit("position_free")
    assert model.pos_embed is None
    assert model.cls_token is None
    assert model.global_pool == "avg"
    names = [name for name, _ in model.named_parameters()]
    assert not [name for name in names if "pos_embed" in name or "cls_token" in name]


def test_overrides_change_the_dimensions() -> None:
    model = small_vit("standard", depth=1, embed_dim=32, num_heads=4)
    assert len(model.blocks) == 1
    assert model.embed_dim == 32
    assert model.blocks[0].attn.num_heads == 4


def test_in_chans_six_for_unpacked_nibbles() -> None:
    model = small_vit("position_free", in_chans=6)
    out = model(images_to_tensor(random_images(count=2), unpack_nibbles=True))
    assert out.shape == (2, 10)


# --- block scrambling ----------------------------------------------------------------------


def test_position_free_is_invariant_to_block_scrambling() -> None:
    model = small_vit("position_free")
    images = random_images(count=4, seed=1)
    order = np.random.default_rng(2).permutation((IMAGE_SIZE // PATCH_SIZE) ** 2)
    scrambled = scramble_blocks(images, PATCH_SIZE, order)
    assert not np.array_equal(scrambled, images)
    difference = (logits(model, scrambled) - logits(model, images)).abs().max().item()
    assert difference < 1e-5


def test_standard_is_not_invariant_to_block_scrambling() -> None:
    model = small_vit("standard")
    with torch.no_grad():  # timm's head init (std 0.02) keeps an untrained model's logits tiny
        model.head.weight.normal_()
    images = random_images(count=4, seed=1)
    order = np.random.default_rng(2).permutation((IMAGE_SIZE // PATCH_SIZE) ** 2)
    scrambled = scramble_blocks(images, PATCH_SIZE, order)
    difference = (logits(model, scrambled) - logits(model, images)).abs().max().item()
    assert difference > 1e-2


# --- errors --------------------------------------------------------------------------------


def test_unknown_variant_lists_the_choices() -> None:
    with pytest.raises(PatchveilError, match=r"position_free.*standard"):
        create_vit("swin", "test", image_size=32, patch_size=4, num_classes=10)


def test_unknown_size_lists_the_choices() -> None:
    with pytest.raises(PatchveilError, match=r"huge.*cpu"):
        create_vit("standard", "huge", image_size=32, patch_size=4, num_classes=10)


def test_patch_size_must_divide_image_size() -> None:
    with pytest.raises(PatchveilError, match="patch size 5 does not divide image size 32"):
        create_vit("standard", "test", image_size=32, patch_size=5, num_classes=10)


@pytest.mark.parametrize(
    ("field", "value"), [("num_classes", 0), ("image_size", -32), ("in_chans", 1.5)]
)
def test_geometry_must_be_positive_integers(field: str, value: object) -> None:
    args = {"image_size": 32, "patch_size": 4, "num_classes": 10, field: value}
    with pytest.raises(PatchveilError, match=field):
        create_vit("standard", "test", **args)


def test_heads_must_divide_embedding() -> None:
    with pytest.raises(PatchveilError, match="embed_dim 64 is not divisible by num_heads 3"):
        create_vit("standard", "test", image_size=32, patch_size=4, num_classes=10, num_heads=3)


# --- spec ----------------------------------------------------------------------------------


def test_spec_round_trips_through_json() -> None:
    spec = ModelSpec("position_free", "test", 32, 4, 10, in_chans=6, depth=1, mlp_ratio=3.0)
    text = json.dumps(spec.to_json())
    assert ModelSpec.from_json(json.loads(text)) == spec
    plain = ModelSpec("standard", "cpu", 32, 4, 10)
    assert "depth" not in plain.to_json()
    assert ModelSpec.from_json(plain.to_json()) == plain


def test_spec_rejects_unknown_and_missing_fields() -> None:
    data = ModelSpec("standard", "test", 32, 4, 10).to_json()
    with pytest.raises(PatchveilError, match="patchsize"):
        ModelSpec.from_json({**data, "patchsize": 4})
    del data["num_classes"]
    with pytest.raises(PatchveilError, match="num_classes"):
        ModelSpec.from_json(data)


def test_spec_builds_the_same_architecture_as_the_factory() -> None:
    spec = ModelSpec("standard", "test", 32, 4, 10, depth=1)
    from_spec = create_vit_from_spec(spec).state_dict()
    direct = small_vit("standard", depth=1).state_dict()
    assert {name: value.shape for name, value in from_spec.items()} == {
        name: value.shape for name, value in direct.items()
    }
    assert spec.dims.depth == 1
    assert spec.num_patches == 64


# --- pretrained weights ---------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_weights_load_from_a_local_file(tmp_path: Path, suffix: str) -> None:
    source = small_vit("standard")
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        safetensors_torch = pytest.importorskip("safetensors.torch")
        safetensors_torch.save_file(source.state_dict(), str(path))
    else:
        torch.save(source.state_dict(), path)
    torch.manual_seed(123)  # a different initialisation, overwritten by the file
    loaded = create_vit(
        "standard", "test", image_size=32, patch_size=4, num_classes=10, pretrained_path=path
    ).eval()
    images = random_images(count=2)
    assert torch.equal(logits(loaded, images), logits(source, images))


def test_pretrained_checkpoint_wrapping_a_state_dict_loads(tmp_path: Path) -> None:
    source = small_vit("position_free")
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": source.state_dict(), "epoch": 3}, path)
    loaded = create_vit(
        "position_free", "test", image_size=32, patch_size=4, num_classes=10, pretrained_path=path
    )
    assert torch.equal(loaded.head.weight, source.head.weight)


def test_missing_pretrained_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.pth"
    with pytest.raises(PatchveilError, match=r"absent\.pth"):
        create_vit(
            "standard", "test", image_size=32, patch_size=4, num_classes=10, pretrained_path=path
        )


def test_pretrained_shape_mismatch_names_the_tensor(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    torch.save(small_vit("standard").state_dict(), path)
    with pytest.raises(PatchveilError, match=r"head\.weight \[10, 64\] \(model needs \[7, 64\]\)"):
        create_vit(
            "standard", "test", image_size=32, patch_size=4, num_classes=7, pretrained_path=path
        )


def test_pretrained_weights_of_another_variant_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    torch.save(small_vit("standard").state_dict(), path)
    with pytest.raises(PatchveilError, match=r"unexpected .*cls_token"):
        create_vit(
            "position_free",
            "test",
            image_size=32,
            patch_size=4,
            num_classes=10,
            pretrained_path=path,
        )


# --- preprocessing --------------------------------------------------------------------------


def test_images_to_tensor_normalises_every_channel_the_same_way() -> None:
    images = np.array([[[[0, 255, 51]]]], dtype=np.uint8)
    out = images_to_tensor(images)
    assert out.dtype == torch.float32
    assert out.shape == (1, 3, 1, 1)
    assert out.flatten().tolist() == pytest.approx([-1.0, 1.0, 51 / 127.5 - 1])


def test_negative_positive_is_an_exact_sign_flip() -> None:
    values = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    assert torch.equal(images_to_tensor(255 - values), -images_to_tensor(values))
    nibbles = images_to_tensor(values, unpack_nibbles=True)
    flipped = images_to_tensor(values ^ 0xFF, unpack_nibbles=True)  # 15 − v on both nibbles
    assert torch.equal(flipped, -nibbles)


def test_unpack_nibbles_shape_order_and_range() -> None:
    images = random_images(count=2)
    images[0, 0, 0] = [0xA5, 0x0F, 0xF0]
    out = images_to_tensor(images, unpack_nibbles=True)
    assert out.shape == (2, 6, IMAGE_SIZE, IMAGE_SIZE)
    assert out.min() >= -1.0 and out.max() <= 1.0
    nibbles = [0xA, 0x5, 0x0, 0xF, 0xF, 0x0]  # R high, R low, G high, G low, B high, B low
    assert out[0, :, 0, 0].tolist() == pytest.approx([v / 7.5 - 1 for v in nibbles])


def test_torch_and_numpy_inputs_agree() -> None:
    images = random_images(count=2)
    assert torch.equal(images_to_tensor(torch.from_numpy(images)), images_to_tensor(images))
    as_double = images_to_tensor(images, dtype=torch.float64)
    assert as_double.dtype == torch.float64


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((2, 8, 8, 3), dtype=np.float32),
        np.zeros((8, 8, 3), dtype=np.uint8),
        np.zeros((2, 3, 8, 8), dtype=np.uint8),
        [[0, 1, 2]],
    ],
)
def test_images_to_tensor_rejects_wrong_input(images: object) -> None:
    with pytest.raises(ImageFormatError):
        images_to_tensor(images)  # type: ignore[arg-type]


# --- trust boundary -------------------------------------------------------------------------


def test_models_package_never_imports_tenant_code() -> None:
    package = Path(patchveil.models.__file__).parent
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not [n for n in names if n.startswith("patchveil.tenants")], source.name


# --- window_position: the coarse layout kept, the order inside each window ignored -----------


def window_order(blocks_per_side: int, window: int, seed: int) -> np.ndarray:
    """A random block order that moves every block only inside its own window."""
    windows = window_of_blocks(blocks_per_side, window)
    order = np.arange(blocks_per_side**2)
    generator = np.random.default_rng(seed)
    for number in np.unique(windows):
        members = np.flatnonzero(windows == number)
        order[members] = generator.permutation(members)
    return order


@pytest.mark.parametrize("window", [2, 4])
def test_window_position_ignores_the_order_inside_a_window_only(window: int) -> None:
    model = small_vit("window_position", position_window=window)
    with torch.no_grad():
        model.head.weight.normal_()
        model.window_embed.normal_()
    images = random_images(count=4, seed=1)
    side = IMAGE_SIZE // PATCH_SIZE
    inside = scramble_blocks(images, PATCH_SIZE, window_order(side, window, seed=3))
    assert not np.array_equal(inside, images)
    assert (logits(model, inside) - logits(model, images)).abs().max().item() < 1e-5
    anywhere = scramble_blocks(images, PATCH_SIZE, np.random.default_rng(4).permutation(side**2))
    assert (logits(model, anywhere) - logits(model, images)).abs().max().item() > 1e-3


def test_window_position_needs_a_window_that_divides_the_grid() -> None:
    with pytest.raises(PatchveilError, match="position_window"):
        ModelSpec("window_position", "test", 32, 4, 10)
    with pytest.raises(PatchveilError, match="'position_free' has no parameter position_window"):
        ModelSpec("position_free", "test", 32, 4, 10, params=(("position_window", 2),))
    with pytest.raises(PatchveilError, match="does not divide the 8 blocks"):
        ModelSpec("window_position", "test", 32, 4, 10, params=(("position_window", 3),))
    spec = ModelSpec("window_position", "test", 32, 4, 10, params=(("position_window", 4),))
    assert ModelSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_variant_parameters_are_declared_beside_the_variant_and_checked() -> None:
    invariant = ModelSpec("invariant", "test", 32, 4, 10)
    assert invariant.param("invariance_group") == "np_cs"  # its default, filled in
    with pytest.raises(PatchveilError, match="unknown invariance group 'xy'"):
        ModelSpec("invariant", "test", 32, 4, 10, params=(("invariance_group", "xy"),))
    with pytest.raises(PatchveilError, match=r"position_window='four' .* must be a int"):
        ModelSpec("window_position", "test", 32, 4, 10, params=(("position_window", "four"),))
    # A spec written when these were top-level fields still loads, as the same spec.
    legacy = {"variant": "window_position", "size": "test", "image_size": 32, "patch_size": 4}
    legacy |= {"num_classes": 10, "position_window": 4, "invariance_group": "rf"}
    params = (("position_window", 4), ("invariance_group", "rf"))
    assert ModelSpec.from_json(legacy) == ModelSpec(
        "window_position", "test", 32, 4, 10, params=params
    )
