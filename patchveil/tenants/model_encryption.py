"""Model encryption: convert a plain-trained ViT so that it reads one key's ciphertexts.

With the platform's normalisation (x = v / 127.5 − 1, the same for every channel) a
`conventional` ciphertext block is a fixed permutation and sign pattern of a plain block, and
its blocks are a fixed permutation of the plain blocks. The patch embedding `E·b + c + p_j` is
linear in the block, so permuting and negating columns of `E` and permuting the position
embedding rows gives, on `cipher.encrypt(x)`, exactly the logits the plain model gives on `x`
(Kiya et al., "model encryption").

The converted weights are key material: anyone holding both the plain and the converted model
can read the key's permutations and mask off them. This module therefore lives on the tenant's
side of the trust boundary.
"""

from __future__ import annotations

import copy

import torch
from timm.models.vision_transformer import VisionTransformer

from patchveil.errors import CipherConfigError, PatchveilError
from patchveil.tenants.ciphers.base import Cipher
from patchveil.tenants.ciphers.conventional import ConventionalCipher


def encrypt_model(model: torch.nn.Module, cipher: Cipher) -> VisionTransformer:
    """A copy of `model` that gives on `cipher.encrypt(x)` the logits `model` gives on `x`.

    `model` is a timm `VisionTransformer` (e.g. from `patchveil.models.create_vit`) with
    3 input channels whose patch size equals the key's block size and whose image size equals
    the key's; `cipher` is a `conventional` cipher. `model` itself is left untouched.
    """
    if not isinstance(cipher, ConventionalCipher):
        raise CipherConfigError(
            f"model encryption needs a 'conventional' cipher, got {getattr(cipher, 'name', cipher)!r}; "
            "other ciphers are not a fixed block permutation plus one in-block permutation and "
            "sign pattern, so no weight permutation reproduces them"
        )
    if not isinstance(model, VisionTransformer):
        raise PatchveilError(
            f"model encryption needs a timm VisionTransformer (from create_vit), "
            f"got {type(model).__name__}"
        )
    _check_geometry(model, cipher)

    encrypted = copy.deepcopy(model)
    weight = encrypted.patch_embed.proj.weight  # (D, C, M, M)
    dim, chans, size, _ = weight.shape
    element_order = torch.from_numpy(cipher.element_order.copy()).to(weight.device)
    sign = torch.where(
        torch.from_numpy(cipher.flip.copy()).to(weight.device),
        torch.tensor(-1.0, dtype=weight.dtype, device=weight.device),
        torch.tensor(1.0, dtype=weight.dtype, device=weight.device),
    )
    with torch.no_grad():
        # Columns in the cipher's (row, column, channel) element order.
        columns = weight.permute(0, 2, 3, 1).reshape(dim, -1)
        # Encrypted element e is plain element element_order[e], negated where flip[e]:
        # E'[:, e] · (±b[element_order[e]]) = E[:, element_order[e]] · b[element_order[e]].
        columns = columns[:, element_order] * sign
        weight.copy_(columns.reshape(dim, size, size, chans).permute(0, 3, 1, 2))
        if encrypted.pos_embed is not None:
            # Encrypted token j is plain token block_order[j], so it takes that token's row.
            # Rows for class/register tokens come first unless timm's no_embed_class is set.
            prefix = 0 if encrypted.no_embed_class else encrypted.num_prefix_tokens
            block_order = torch.from_numpy(cipher.block_order.copy()).to(weight.device)
            patch_rows = encrypted.pos_embed[:, prefix:][:, block_order].clone()
            encrypted.pos_embed[:, prefix:] = patch_rows
    return encrypted


def _check_geometry(model: VisionTransformer, cipher: ConventionalCipher) -> None:
    block_size = cipher.spec.block_size
    image_size = cipher.spec.image_size
    patch_size = tuple(model.patch_embed.patch_size)
    if patch_size != (block_size, block_size):
        raise PatchveilError(
            f"the model's patch size {_side(patch_size)} differs from the key's block size "
            f"{block_size}; model encryption needs a model with patch size {block_size}"
        )
    img_size = model.patch_embed.img_size
    if img_size is None or tuple(img_size) != (image_size, image_size):
        raise PatchveilError(
            f"the model's image size {_side(img_size)} differs from the key's image size "
            f"{image_size}; model encryption needs a model built for {image_size}×{image_size}"
        )
    chans = model.patch_embed.proj.weight.shape[1]
    if chans != 3:
        raise PatchveilError(
            f"the model takes {chans} input channels; model encryption needs an RGB model "
            "(in_chans=3)"
        )
    if getattr(model, "dynamic_img_size", False):
        raise PatchveilError(
            "the model resamples its position embedding (dynamic_img_size); model encryption "
            "needs a model with a fixed image size"
        )


def _side(size: tuple[int, ...] | None) -> str:
    if size is None:
        return "unset"
    return str(size[0]) if len(set(size)) == 1 else "×".join(str(s) for s in size)
