"""Known-image linkage: which plain image of a gallery is each ciphertext's source?

The attacker (the platform, or anyone who sees ciphertext) holds a gallery of candidate plain
images and wants to confirm a guess. Every block-wise cipher here maps each ciphertext block to
one plain block through an in-block transform drawn from a known family, so a block has an
*invariant*: a value that is the same for the plain block and for every transform of it.

- A per-block group (`disposable`'s `group`: none, np, cs, rf and their products): the invariant
  is the block's orbit under the group. We take the smallest of the |G| hashes of the block's
  |G| images under the group (a canonical representative of the orbit, like the lexicographically
  smallest, but cheaper to compare). With a pixel shuffle (`px`) every image under the listed
  part of the group has its pixels sorted first (the block's multiset of colour triples).
- A fixed, unknown permutation of in-block positions with per-position negative–positive (the
  shared-key ciphers: conventional, restricted, invariant, etc, pixel): the sorted multiset of
  folded values min(v, 255 − v) of the block ("fold"); on 4-bit values for `le` ("nibble_fold").

An image is then a multiset of canonical blocks (one multiset per window when the window layout
is public), and gallery images are ranked by how many canonical blocks they share with the
ciphertext, ties broken by the distance between sorted per-block folded means. No key is used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from patchveil.groups import GROUP_NAMES, pixel_colours, window_of_blocks

FOLD = "fold"
NIBBLE_FOLD = "nibble_fold"
INVARIANTS = (*GROUP_NAMES, FOLD, NIBBLE_FOLD)
# Shared-key ciphers: one unknown in-block permutation + negation per key (or per block position).
_FOLD_CIPHERS = {"conventional", "restricted", "invariant", "etc", "pixel", "plain"}
_HASH_SEED = 20240901


@dataclass(frozen=True)
class LinkageResult:
    """How often the true source is ranked first / in the first five of the gallery."""

    invariant: str
    window: int
    gallery_size: int
    queries: int
    rank1: float
    rank5: float
    median_rank: float
    mean_shared_blocks: float  # share of the source's canonical blocks found in its ciphertext

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def invariant_of(cipher: str, params: dict[str, Any] | None = None) -> tuple[str, int]:
    """The block invariant and the public window (0: whole image) that fit a cipher's design."""
    params = params or {}
    if cipher == "disposable":
        return str(params.get("group", "np_cs")), int(params.get("window", 0))
    if cipher == "le":
        return NIBBLE_FOLD, 0
    if cipher in _FOLD_CIPHERS:
        return FOLD, 0
    raise ValueError(f"no block invariant known for cipher {cipher!r}")


def image_blocks(images: np.ndarray, block_size: int, nibbles: bool = False) -> np.ndarray:
    """uint8 [N, H, W, 3] → [N, blocks, L]: blocks in raster order, elements (row, col, channel);
    with `nibbles`, every byte becomes its high then low 4-bit value (6 channels)."""
    batch = images[None] if images.ndim == 3 else images
    count, size = batch.shape[0], batch.shape[1]
    if size % block_size:
        raise ValueError(f"block size {block_size} does not divide the image size {size}")
    if nibbles:
        batch = np.stack([batch >> 4, batch & 0x0F], axis=-1).reshape(count, size, size, 6)
    channels = batch.shape[-1]
    side = size // block_size
    grid = batch.reshape(count, side, block_size, side, block_size, channels)
    return grid.transpose(0, 1, 3, 2, 4, 5).reshape(count, side * side, -1)


def _hash_weights(length: int) -> np.ndarray:
    return np.random.default_rng(_HASH_SEED).integers(1, 2**63, length, dtype=np.uint64) | 1


def _hash_rows(rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A 64-bit linear hash of each row (wrap-around arithmetic; collisions ≈ 2⁻⁶⁴)."""
    return (rows.astype(np.uint64) * weights).sum(axis=-1, dtype=np.uint64)


def canonical_block_keys(
    images: np.ndarray, block_size: int, invariant: str, chunk_values: int = 1 << 22
) -> np.ndarray:
    """[N, H, W, 3] → uint64 [N, blocks]: equal keys ⇔ blocks equal up to the invariant's family."""
    if invariant not in INVARIANTS:
        raise ValueError(f"unknown invariant {invariant!r}; choose one of {', '.join(INVARIANTS)}")
    blocks = image_blocks(images, block_size, nibbles=invariant == NIBBLE_FOLD)
    count, per_image, length = blocks.shape
    flat = blocks.reshape(-1, length)
    weights = _hash_weights(length)
    if invariant in (FOLD, NIBBLE_FOLD):
        top = 0x0F if invariant == NIBBLE_FOLD else 0xFF
        folded = np.sort(np.minimum(flat, top - flat), axis=1)
        return _hash_rows(folded, weights).reshape(count, per_image)
    from patchveil.groups import parse_group
    from patchveil.tenants.ciphers.disposable import group_tables  # public, unkeyed tables

    orders, flips = group_tables(invariant, block_size)
    sort_pixels = parse_group(invariant).pixel_shuffle
    return orbit_keys(flat, orders, flips, chunk_values, sort_pixels).reshape(count, per_image)


def orbit_keys(
    rows: np.ndarray,
    orders: np.ndarray,
    flips: np.ndarray,
    chunk_values: int = 1 << 22,
    sort_pixels: bool = False,
) -> np.ndarray:
    """uint64 [B]: the smallest hash over a group's images `row[orders[g]] ^ flips[g]` of each
    row (the same for every row of one orbit); with `sort_pixels` each image's pixels (colour
    triples) are sorted before hashing (the orbit under any pixel order too)."""
    weights = _hash_weights(rows.shape[1] // 3 if sort_pixels else rows.shape[1])
    keys = np.empty(len(rows), dtype=np.uint64)
    step = max(1, chunk_values // (len(orders) * rows.shape[1]))
    for start in range(0, len(rows), step):
        part = rows[start : start + step]
        variants = part[:, orders] ^ flips[None]  # (B, |G|, L): the whole orbit of each row
        if sort_pixels:
            variants = np.sort(pixel_colours(variants), axis=-1)
        keys[start : start + step] = _hash_rows(variants, weights).min(axis=1)
    return keys


def folded_means(images: np.ndarray, block_size: int, invariant: str) -> np.ndarray:
    """[N, blocks] mean of min(v, top − v) per block: invariant under every family here."""
    nibbles = invariant == NIBBLE_FOLD
    blocks = image_blocks(images, block_size, nibbles=nibbles).astype(np.int16)
    top = 0x0F if nibbles else 0xFF
    return np.minimum(blocks, top - blocks).mean(axis=2)


def _window_ids(blocks_per_side: int, window: int) -> np.ndarray:
    if window in (0, blocks_per_side):
        return np.zeros(blocks_per_side**2, dtype=np.int64)
    return window_of_blocks(blocks_per_side, window).astype(np.int64)


def _sorted_per_window(values: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Sort each image's per-block values inside every window (windows then values)."""
    order = np.lexsort((values, np.broadcast_to(windows, values.shape)), axis=-1)
    return np.take_along_axis(values, order, axis=-1)


def linkage_scores(
    gallery: np.ndarray,
    ciphertexts: np.ndarray,
    block_size: int,
    invariant: str,
    window: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(shared canonical blocks [Q, G], feature distance [Q, G]): higher shared, then lower
    distance, ranks a gallery image closer to a ciphertext."""
    side = gallery.shape[1] // block_size
    windows = _window_ids(side, window)
    # The window a block sits in is public: fold it into the key so blocks only match in-window.
    salt = (windows.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    gallery_keys = canonical_block_keys(gallery, block_size, invariant) ^ salt
    query_keys = canonical_block_keys(ciphertexts, block_size, invariant) ^ salt
    shared = _shared_counts(gallery_keys, query_keys)
    gallery_features = _sorted_per_window(folded_means(gallery, block_size, invariant), windows)
    query_features = _sorted_per_window(folded_means(ciphertexts, block_size, invariant), windows)
    distance = np.stack([np.abs(gallery_features - row).sum(axis=1) for row in query_features])
    return shared, distance


def _shared_counts(gallery_keys: np.ndarray, query_keys: np.ndarray) -> np.ndarray:
    """[Q, G] size of the multiset intersection of each query's keys with each gallery image's."""
    gallery_size, per_image = gallery_keys.shape
    _, ids = np.unique(
        np.concatenate([gallery_keys.ravel(), query_keys.ravel()]), return_inverse=True
    )
    gallery_ids = ids[: gallery_keys.size].reshape(gallery_size, per_image)
    query_ids = ids[gallery_keys.size :].reshape(query_keys.shape)
    # (key id, gallery image) pairs with their multiplicity, sorted by key id.
    pair = gallery_ids * gallery_size + np.arange(gallery_size)[:, None]
    pairs, pair_counts = np.unique(pair.ravel(), return_counts=True)
    pair_key, pair_image = pairs // gallery_size, pairs % gallery_size
    shared = np.zeros((len(query_ids), gallery_size), dtype=np.int64)
    for row, query in enumerate(query_ids):
        keys, counts = np.unique(query, return_counts=True)
        low = np.searchsorted(pair_key, keys, side="left")
        lengths = np.searchsorted(pair_key, keys, side="right") - low
        total = int(lengths.sum())
        if total == 0:
            continue
        starts = np.repeat(low - np.cumsum(lengths) + lengths, lengths)
        index = starts + np.arange(total)
        common = np.minimum(pair_counts[index], np.repeat(counts, lengths))
        shared[row] = np.bincount(pair_image[index], weights=common, minlength=gallery_size)
    return shared


def true_ranks(shared: np.ndarray, distance: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Rank (1 = first) of each query's true source; ties count against the attacker."""
    rows = np.arange(len(sources))
    source_shared = shared[rows, sources][:, None]
    source_distance = distance[rows, sources][:, None]
    better = (shared > source_shared) | ((shared == source_shared) & (distance < source_distance))
    tied = (shared == source_shared) & (distance == source_distance)
    return 1 + better.sum(axis=1) + tied.sum(axis=1) - 1


def link_images(
    gallery: np.ndarray,
    ciphertexts: np.ndarray,
    sources: np.ndarray,
    block_size: int,
    invariant: str,
    window: int = 0,
) -> LinkageResult:
    """Rank the gallery for every ciphertext; `sources[q]` is the gallery index of its source."""
    sources = np.asarray(sources, dtype=np.int64)
    if len(sources) != len(ciphertexts):
        raise ValueError(f"{len(ciphertexts)} ciphertexts but {len(sources)} source indices")
    shared, distance = linkage_scores(gallery, ciphertexts, block_size, invariant, window)
    ranks = true_ranks(shared, distance, sources)
    per_image = (gallery.shape[1] // block_size) ** 2
    return LinkageResult(
        invariant=invariant,
        window=window,
        gallery_size=len(gallery),
        queries=len(ciphertexts),
        rank1=float(np.mean(ranks == 1)),
        rank5=float(np.mean(ranks <= 5)),
        median_rank=float(np.median(ranks)),
        mean_shared_blocks=float(shared[np.arange(len(sources)), sources].mean() / per_image),
    )
