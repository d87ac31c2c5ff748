"""The optional torch path: the keyed operations of `hazmat` on a torch device (a GPU).

Selected by `Cipher.encrypt(..., device="cuda")`; the result is the same numpy array, bit for bit,
as on the numpy path. Keys, nonces and per-image draws stay on the CPU: only the gather tables and
the chunk of images travel to the device. torch is imported on first use only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

import numpy as np

if TYPE_CHECKING:
    import torch

    from patchveil.tenants.ciphers.hazmat import GatherMask

# Device copies of gather tables, per table and device; they go when the table goes.
_DEVICE_TABLES: WeakKeyDictionary[GatherMask, dict[str, tuple[torch.Tensor, torch.Tensor]]] = (
    WeakKeyDictionary()
)


def _to_device(array: np.ndarray, device: str) -> torch.Tensor:
    import torch

    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # torch wraps only writable arrays (it never writes to this one)
        array = array.copy()
    return torch.from_numpy(array).to(device)


def _to_out(tensor: torch.Tensor, out: np.ndarray | None) -> np.ndarray:
    result = tensor.cpu().numpy()
    if out is None:
        return result
    np.copyto(out, result.reshape(out.shape))
    return out


def apply_on_device(
    table: GatherMask, flat: np.ndarray, out: np.ndarray | None, device: str
) -> np.ndarray:
    """`GatherMask.apply` on `device`: `out[:, d] = flat[:, source[d]] ^ mask[d]`."""
    tables = _DEVICE_TABLES.setdefault(table, {})
    if device not in tables:
        tables[device] = (_to_device(table.source, device), _to_device(table.mask, device))
    source, mask = tables[device]
    gathered = _to_device(flat, device).index_select(1, source)
    if table.has_mask:
        gathered.bitwise_xor_(mask)
    return _to_out(gathered, out)


def move_blocks_on_device(
    flat: np.ndarray,
    out: np.ndarray,
    block_order: np.ndarray,
    flip_values: np.ndarray | None,
    move_index: np.ndarray | None,
    element_orders: np.ndarray,
    image_size: int,
    block_size: int,
    device: str,
) -> None:
    """On `device`, what `move_and_transform_blocks` does: block j
    of image n := block `block_order[n, j]`, XOR `flip_values[n, j]`, elements in order
    `element_orders[move_index[n, j]]` (each step skipped when its array is None)."""
    count = len(flat)
    if count == 0:
        return
    side = image_size // block_size
    blocks_per_image, length = side * side, 3 * block_size * block_size
    images = _to_device(flat, device).view(count, side, block_size, side, 3 * block_size)
    blocks = images.permute(0, 1, 3, 2, 4).reshape(count, blocks_per_image, length)
    order = _to_device(block_order, device)
    blocks = blocks.gather(1, order[:, :, None].expand(count, blocks_per_image, length))
    if flip_values is not None:
        blocks.bitwise_xor_(_to_device(flip_values, device)[:, :, None])
    if move_index is not None:
        orders = _to_device(element_orders, device)[_to_device(move_index, device)]
        blocks = blocks.gather(2, orders)
    images = blocks.view(count, side, side, block_size, 3 * block_size).permute(0, 1, 3, 2, 4)
    _to_out(images.reshape(count, -1), out)
