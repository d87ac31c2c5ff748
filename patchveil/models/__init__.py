"""The platform's models: ViT variants and the fixed image preprocessing (no keys here)."""

from patchveil.models.preprocess import images_to_tensor
from patchveil.models.vit import (
    VIT_SIZES,
    ModelSpec,
    ViTDims,
    available_sizes,
    available_variants,
    create_vit,
    create_vit_from_spec,
    load_state_dict_file,
    register_variant,
)

__all__ = [
    "VIT_SIZES",
    "ModelSpec",
    "ViTDims",
    "available_sizes",
    "available_variants",
    "create_vit",
    "create_vit_from_spec",
    "images_to_tensor",
    "load_state_dict_file",
    "register_variant",
]
