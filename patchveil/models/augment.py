"""Augmentations in the encrypted domain: each commutes with every block cipher of one key.

With the platform's normalisation, a tenant's cipher acts on the float input as a fixed
permutation of blocks and block elements plus sign flips. Mixing two images *of the same tenant
and key* (mixup), swapping the same block positions between them (block cutmix), or zeroing
whole blocks (token dropout, 0 being mid-grey and a fixed point of every sign flip) therefore
gives the ciphertext of the same operation on the plain images. No key is needed or seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and strengths; all zero means no augmentation."""

    mixup_alpha: float = 0.0
    block_cutmix_prob: float = 0.0
    token_dropout: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.block_cutmix_prob > 0 or self.token_dropout > 0


def partner_within_group(groups: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """For each sample, the index of a random sample of the same group (tenant, key version)."""
    order = torch.randperm(len(groups), generator=generator, device=groups.device)
    # Sort a random shuffle by group, then rotate by one inside each group.
    shuffled_groups = groups[order]
    sort = torch.argsort(shuffled_groups, stable=True)
    members = order[sort]
    sorted_groups = shuffled_groups[sort]
    partner = torch.empty_like(members)
    start = 0
    counts = torch.unique_consecutive(sorted_groups, return_counts=True)[1].tolist()
    for count in counts:
        block = members[start : start + count]
        partner[block] = torch.roll(block, 1)
        start += count
    return partner


def augment_batch(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    groups: torch.Tensor,
    patch_size: int,
    config: AugmentConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment normalised inputs [N, C, H, W] and one-hot/soft targets [N, K] within groups."""
    if not config.enabled:
        return inputs, targets
    count, _, height, width = inputs.shape
    rows, cols = height // patch_size, width // patch_size
    partner = partner_within_group(groups, generator)
    if config.mixup_alpha > 0:
        beta = torch.distributions.Beta(config.mixup_alpha, config.mixup_alpha)
        weight = beta.sample((count,)).to(inputs.device)
        inputs = (
            weight.view(-1, 1, 1, 1) * inputs + (1 - weight.view(-1, 1, 1, 1)) * inputs[partner]
        )
        targets = weight.view(-1, 1) * targets + (1 - weight.view(-1, 1)) * targets[partner]
    if config.block_cutmix_prob > 0:
        apply = torch.rand(count, generator=generator) < config.block_cutmix_prob
        share = torch.rand(count, generator=generator) * 0.5
        swap = torch.rand(count, rows, cols, generator=generator) < share.view(-1, 1, 1)
        swap &= apply.view(-1, 1, 1)
        pixel_swap = swap.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2)
        pixel_swap = pixel_swap.unsqueeze(1).to(inputs.device)
        inputs = torch.where(pixel_swap, inputs[partner], inputs)
        taken = swap.float().mean(dim=(1, 2)).to(targets.device).view(-1, 1)
        targets = (1 - taken) * targets + taken * targets[partner]
    if config.token_dropout > 0:
        keep = torch.rand(count, rows, cols, generator=generator) >= config.token_dropout
        pixel_keep = keep.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2)
        inputs = inputs * pixel_keep.unsqueeze(1).to(inputs.device, inputs.dtype)
    return inputs, targets
