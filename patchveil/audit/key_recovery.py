"""Key recovery against shared-key ciphers: ciphertext-only in-block key, and known plaintext.

Every shared-key cipher here (conventional, restricted, invariant, etc, le, pixel) is a fixed
gather of an image's values followed by a fixed negation mask (see
`patchveil.tenants.ciphers.hazmat`), the same for every image of a tenant. Two attacks:

- **Ciphertext-only** (`recover_in_block_key`): when one in-block transform is shared by every
  block, all blocks of all ciphertexts are samples of the same scrambled vector. The
  correlation matrix of its positions reveals the negative–positive pattern (natural-image pixels
  of one block all correlate positively, so the signs of the leading eigenvector are the flips)
  and the pixel shuffle (matching the sign-corrected correlations to those of public plain images
  on the block lattice: a quadratic assignment, solved by restarts of best-swap local search).
  Block order is left to the jigsaw solvers. The in-block key is found only up to the
  transforms no statistic can tell apart — the block turned or mirrored, colours permuted, every
  value inverted — and it is scored as the best over those.
- **Known plaintext** (`known_plaintext_attack`): one plain/cipher pair. Blocks are paired by an
  invariant of the cipher's in-block family, the in-block transform is the one that agrees with
  every paired block, and the block order follows; positions where values tie stay ambiguous.

Both are scored against the true key table, read off the cipher by encrypting probe images
(`key_table_by_probes`, which only the key's holder can run). Pure numpy, no key is used by
the attacks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from patchveil.audit.linkage import orbit_keys
from patchveil.audit.scoring import psnr, ssim
from patchveil.tenants.ciphers.hazmat import (
    ALL_CHANNEL_PERMUTATIONS,
    block_index,
    dihedral_orders,
    join_nibbles,
    split_nibbles,
)

BYTES = "bytes"
NIBBLES = "nibbles"
SHARED = "shared"  # one in-block permutation + negation for every block
PIXEL_GROUP = "pixel"  # per pixel: a colour permutation and a negation of each value


@dataclass(frozen=True)
class CipherModel:
    """What the attacker knows of a cipher's public design (Kerckhoffs): the unit it works on,
    its block size, the in-block family (shared, or a named group per block), whether blocks move."""

    unit: str
    block_size: int
    in_block: str
    blocks_move: bool

    @property
    def channels(self) -> int:
        return 6 if self.unit == NIBBLES else 3

    @property
    def top(self) -> int:
        return 0x0F if self.unit == NIBBLES else 0xFF


def model_of(cipher: str, block_size: int) -> CipherModel:
    """The public design of a shared-key cipher, as the attacker models it."""
    if cipher in ("conventional", "restricted", "invariant"):
        return CipherModel(BYTES, block_size, SHARED, True)
    if cipher == "plain":
        return CipherModel(BYTES, block_size, SHARED, False)
    if cipher == "le":
        return CipherModel(NIBBLES, block_size, SHARED, False)
    if cipher == "etc":
        return CipherModel(BYTES, block_size, "np_cs_rf", True)
    if cipher == "pixel":
        return CipherModel(BYTES, 1, PIXEL_GROUP, False)
    raise ValueError(f"{cipher!r} is not a shared-key cipher this audit models")


def to_units(images: np.ndarray, unit: str) -> np.ndarray:
    """uint8 [N, H, W, 3] → [N, D]: the values the cipher gathers (bytes, or 4-bit values)."""
    flat = images.reshape(len(images), -1)
    return split_nibbles(flat) if unit == NIBBLES else flat


def from_units(flat: np.ndarray, unit: str, image_size: int) -> np.ndarray:
    """The inverse of `to_units`."""
    values = join_nibbles(flat) if unit == NIBBLES else flat
    return values.reshape(len(flat), image_size, image_size, 3).astype(np.uint8)


@dataclass(frozen=True, repr=False, eq=False)
class KeyTable:
    """A (recovered or true) gather + mask: cipher value d = plain value `source[d]` ^ `mask[d]`;
    `determined[d]` says the attack had no tie to break there."""

    source: np.ndarray
    mask: np.ndarray
    determined: np.ndarray

    def decrypt(self, ciphertexts: np.ndarray, unit: str) -> np.ndarray:
        """Ciphertexts [N, H, W, 3] → the images this table says they came from."""
        flat = to_units(ciphertexts, unit)
        plain = np.zeros_like(flat)
        plain[:, self.source] = flat ^ self.mask
        return from_units(plain, unit, ciphertexts.shape[1])

    def __repr__(self) -> str:
        return f"KeyTable(<{self.source.size} positions>)"


def key_table_by_probes(
    encrypt: Callable[[np.ndarray], np.ndarray], image_size: int, unit: str = BYTES
) -> KeyTable:
    """The true table of a gather + mask cipher, read by encrypting probe images (key holder only):
    an all-zero image gives the mask, images of the digits of every index give the gather."""
    shape = (1, image_size, image_size, 3)
    base = 16 if unit == NIBBLES else 256
    positions = image_size * image_size * 3 * (2 if unit == NIBBLES else 1)
    mask = to_units(encrypt(np.zeros(shape, dtype=np.uint8)), unit)[0]
    source = np.zeros(positions, dtype=np.int64)
    index = np.arange(positions, dtype=np.int64)
    for digit in range(math.ceil(math.log(positions, base))):
        probe = ((index // base**digit) % base).astype(np.uint8)[None]
        cipher = to_units(encrypt(from_units(probe, unit, image_size)), unit)[0]
        source += (cipher ^ mask).astype(np.int64) * base**digit
    return KeyTable(source, mask, np.ones(positions, dtype=bool))


# --- known plaintext --------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownPlaintextResult:
    """What one plain/cipher pair gives away: key positions, and other images decrypted."""

    key_fraction: float  # positions whose (source, mask) is recovered exactly
    determined_fraction: float  # positions the pair pins down without a tie
    pixel_exact: float  # values of the other images decrypted exactly
    images_exact: float  # other images decrypted exactly, every value
    other_images: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _blocks_of(model: CipherModel, image_size: int) -> np.ndarray:
    return block_index(image_size, model.block_size, model.channels)


def _group_tables(model: CipherModel) -> tuple[np.ndarray, np.ndarray]:
    """Element orders and masks (|G|, L) of a per-block group (public tables)."""
    if model.in_block == PIXEL_GROUP:
        moves = np.repeat(ALL_CHANNEL_PERMUTATIONS, 8, axis=0)
        patterns = (np.arange(8)[:, None] >> np.arange(3)[None] & 1).astype(np.uint8) * 0xFF
        return moves, np.tile(patterns, (len(ALL_CHANNEL_PERMUTATIONS), 1))
    from patchveil.tenants.ciphers.disposable import group_tables

    return group_tables(model.in_block, model.block_size)


def known_plaintext_attack(plain: np.ndarray, cipher: np.ndarray, model: CipherModel) -> KeyTable:
    """Recover the key table from one plain image [H, W, 3] and its ciphertext."""
    blocks = _blocks_of(model, plain.shape[0])
    plain_blocks = to_units(plain[None], model.unit)[0][blocks]
    cipher_blocks = to_units(cipher[None], model.unit)[0][blocks]
    if model.in_block == SHARED:
        block_source, element_source, element_mask, block_known, element_known = _shared_pair(
            plain_blocks, cipher_blocks, model
        )
        sources = np.take(blocks[block_source], element_source, axis=1)
        masks = np.broadcast_to(element_mask, blocks.shape)
        known = block_known[:, None] & element_known[None, :]
    else:
        sources, masks, known = _group_pair(plain_blocks, cipher_blocks, blocks, model)
    table_source = np.empty(blocks.size, dtype=np.int64)
    table_mask = np.empty(blocks.size, dtype=np.uint8)
    determined = np.empty(blocks.size, dtype=bool)
    table_source[blocks] = sources
    table_mask[blocks] = masks
    determined[blocks] = known
    return KeyTable(table_source, table_mask, determined)


def _fold_keys(rows: np.ndarray, top: int) -> np.ndarray:
    """Per row, a hash of its sorted folded values: equal under any permutation + negation."""
    folded = np.sort(np.minimum(rows, top - rows), axis=1).astype(np.uint64)
    weights = np.random.default_rng(7).integers(1, 2**63, rows.shape[1], dtype=np.uint64) | 1
    return (folded * weights).sum(axis=1, dtype=np.uint64)


def _shared_pair(
    plain_blocks: np.ndarray, cipher_blocks: np.ndarray, model: CipherModel
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shared in-block key from one pair: (block source, element source, element mask, block
    determined, element determined)."""
    count, length = plain_blocks.shape
    if model.blocks_move:
        plain_keys = _fold_keys(plain_blocks, model.top)
        cipher_keys = _fold_keys(cipher_blocks, model.top)
        values, first, counts = np.unique(plain_keys, return_index=True, return_counts=True)
        lookup = {int(v): int(i) for v, i, c in zip(values, first, counts, strict=True) if c == 1}
        pairs = [(j, lookup[key]) for j, key in enumerate(cipher_keys.tolist()) if key in lookup]
    else:
        pairs = [(j, j) for j in range(count)]
    # agreement[e, s, f]: paired blocks whose cipher element e equals plain element s (negated if f)
    agreement = np.zeros((length, length, 2), dtype=np.int64)
    for j, i in pairs:
        agreement[:, :, 0] += cipher_blocks[j][:, None] == plain_blocks[i][None, :]
        agreement[:, :, 1] += cipher_blocks[j][:, None] == (model.top - plain_blocks[i])[None, :]
    best = agreement.max(axis=2)
    flip_choice = agreement.argmax(axis=2)
    element_source, element_known = _greedy_assignment(best)
    rows = np.arange(length)
    element_mask = (flip_choice[rows, element_source] * model.top).astype(np.uint8)
    # Where the value and its negation agree equally often the flip is a guess.
    element_known &= agreement[rows, element_source, 0] != agreement[rows, element_source, 1]
    # Undo the in-block transform on every cipher block, then pair blocks by exact equality.
    undone = np.empty_like(cipher_blocks)
    undone[:, element_source] = cipher_blocks ^ element_mask
    block_source, block_known = _pair_blocks(undone, plain_blocks, model.blocks_move)
    return block_source, element_source, element_mask, block_known, element_known


def _greedy_assignment(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A one-to-one row → column choice, best scores first; `known` where a row's best is unique."""
    rows = score.shape[0]
    top = score.max(axis=1)
    known = (score == top[:, None]).sum(axis=1) == 1
    order = np.argsort(-score, axis=None, kind="stable")
    chosen = np.full(rows, -1, dtype=np.int64)
    used = np.zeros(score.shape[1], dtype=bool)
    for flat in order:
        row, column = divmod(int(flat), score.shape[1])
        if chosen[row] < 0 and not used[column]:
            chosen[row], used[column] = column, True
    return chosen, known


def _pair_blocks(
    undone: np.ndarray, plain_blocks: np.ndarray, blocks_move: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Which plain block each decrypted cipher block is (exact match, else the nearest free one)."""
    count = len(undone)
    if not blocks_move:
        return np.arange(count), np.ones(count, dtype=bool)
    distance = np.abs(undone[:, None, :].astype(np.int16) - plain_blocks[None].astype(np.int16))
    total = distance.sum(axis=2)
    exact = (total == 0).sum(axis=1)
    chosen, _ = _greedy_assignment(-total)
    return chosen, exact == 1


def _group_pair(
    plain_blocks: np.ndarray, cipher_blocks: np.ndarray, blocks: np.ndarray, model: CipherModel
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-block group element (and source block) from one pair: sources, masks, determined."""
    orders, flips = _group_tables(model)
    count = len(blocks)
    if model.blocks_move:
        plain_keys = orbit_keys(plain_blocks, orders, flips)
        cipher_keys = orbit_keys(cipher_blocks, orders, flips)
    else:
        plain_keys = cipher_keys = np.arange(count, dtype=np.uint64)
    free: dict[int, list[int]] = {}
    for i, key in enumerate(plain_keys.tolist()):
        free.setdefault(key, []).append(i)
    sources = np.empty(blocks.shape, dtype=np.int64)
    masks = np.empty(blocks.shape, dtype=np.uint8)
    known = np.zeros(count, dtype=bool)
    unmatched = []
    for j, key in enumerate(cipher_keys.tolist()):
        candidates = free.get(key, [])
        if not candidates:
            unmatched.append(j)
            continue
        ambiguous_block = len(candidates) > 1
        i = candidates.pop(0)
        matches = np.flatnonzero(
            ((plain_blocks[i][orders] ^ flips) == cipher_blocks[j][None]).all(axis=1)
        )
        element = int(matches[0])
        known[j] = not ambiguous_block and len(matches) == 1
        sources[j], masks[j] = blocks[i][orders[element]], flips[element]
    leftover = [i for rest in free.values() for i in rest]
    for j, i in zip(unmatched, leftover, strict=False):  # no orbit match: a guess, not known
        sources[j], masks[j] = blocks[i], 0
    return sources, masks, np.repeat(known[:, None], blocks.shape[1], axis=1)


def score_known_plaintext(
    recovered: KeyTable,
    truth: KeyTable,
    other_plain: np.ndarray,
    other_ciphertexts: np.ndarray,
    unit: str,
) -> KnownPlaintextResult:
    """Score a recovered table against the true one and on other images under the same key."""
    right = (recovered.source == truth.source) & (recovered.mask == truth.mask)
    decrypted = recovered.decrypt(other_ciphertexts, unit)
    equal = decrypted == other_plain
    return KnownPlaintextResult(
        key_fraction=float(right.mean()),
        determined_fraction=float(recovered.determined.mean()),
        pixel_exact=float(equal.mean()),
        images_exact=float(equal.reshape(len(equal), -1).all(axis=1).mean()),
        other_images=len(other_plain),
    )


# --- ciphertext only --------------------------------------------------------------------------


@dataclass(frozen=True, repr=False, eq=False)
class InBlockKey:
    """A shared in-block key: cipher element e = plain element `order[e]`, negated if `flip[e]`."""

    order: np.ndarray
    flip: np.ndarray

    def undo(self, ciphertexts: np.ndarray, model: CipherModel) -> np.ndarray:
        """Apply the inverse in-block transform to every block, leaving block order as it is."""
        blocks = _blocks_of(model, ciphertexts.shape[1])
        flat = to_units(ciphertexts, model.unit)
        out = np.empty_like(flat)
        mask = (self.flip * model.top).astype(np.uint8)
        out[:, blocks[:, self.order]] = flat[:, blocks] ^ mask
        return from_units(out, model.unit, ciphertexts.shape[1])

    def __repr__(self) -> str:
        return f"InBlockKey(<{self.order.size} positions>)"


@dataclass(frozen=True)
class InBlockResult:
    """Ciphertext-only in-block recovery: positions recovered and image quality, beside chance."""

    np_recovered: float  # in-block positions whose negation is recovered
    ps_recovered: float  # in-block positions whose source position is recovered
    np_chance: float
    ps_chance: float
    ssim: float  # mean SSIM, in-block decryption vs the truth, block order left as encrypted
    psnr: float
    ciphertexts: int
    note: str = (
        "block order left to the jigsaw solvers; best over the transforms no statistic "
        "resolves (block turned/mirrored, colours permuted, all values inverted)"
    )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _correlation(samples: np.ndarray) -> np.ndarray:
    centred = samples - samples.mean(axis=0)
    spread = np.sqrt((centred**2).mean(axis=0))
    standard = centred / np.where(spread > 0, spread, 1.0)
    return standard.T @ standard / len(samples)


def _partial_correlation(correlation: np.ndarray) -> np.ndarray:
    """Partial correlations: direct links (lattice neighbours) stand out over indirect ones."""
    precision = np.linalg.pinv(correlation + 1e-3 * np.eye(len(correlation)))
    scale = np.sqrt(np.abs(np.diag(precision)))
    return -precision / np.outer(scale, scale)


def block_samples(images: np.ndarray, model: CipherModel, limit: int = 200_000) -> np.ndarray:
    """Every block of every image as one float row [N · blocks, L] (at most `limit` rows)."""
    blocks = _blocks_of(model, images.shape[1])
    rows = to_units(images, model.unit)[:, blocks].reshape(-1, blocks.shape[1])
    return rows[:limit].astype(np.float64)


def recover_in_block_key(
    ciphertexts: np.ndarray,
    reference: np.ndarray,
    model: CipherModel,
    restarts: int = 8,
    seed: int = 0,
) -> InBlockKey:
    """Ciphertext-only recovery of a shared in-block key; `reference` are public plain images of
    the same kind (the attacker's knowledge of natural-image statistics)."""
    correlation = _correlation(block_samples(ciphertexts, model))
    _, vectors = np.linalg.eigh(correlation)
    leading = vectors[:, -1]
    flip = leading < 0
    if flip.mean() > 0.5:  # the global sign is unknowable; guess fewer flips
        flip = ~flip
    signs = np.where(flip, -1.0, 1.0)
    cipher_correlation = correlation * np.outer(signs, signs)
    lattice_correlation = _correlation(block_samples(reference, model))
    order = match_to_lattice(
        cipher_correlation, lattice_correlation, restarts, np.random.default_rng(seed)
    )
    return InBlockKey(order, flip)


def match_to_lattice(
    cipher_correlation: np.ndarray,
    lattice_correlation: np.ndarray,
    restarts: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """The lattice site of each cipher position: a quadratic assignment maximising
    Σ A[a,b]·B[φa,φb], first on correlations (Frank–Wolfe relaxation, FAQ), then refined by
    pairwise swaps on partial correlations (which single out the direct lattice neighbours)."""
    correlations = [_zero_diagonal(cipher_correlation), _zero_diagonal(lattice_correlation)]
    partials = [
        _zero_diagonal(_partial_correlation(cipher_correlation)),
        _zero_diagonal(_partial_correlation(lattice_correlation)),
    ]
    best_order, best_value = np.arange(len(cipher_correlation)), -np.inf
    for _ in range(restarts):
        order = _frank_wolfe_assignment(*correlations, rng)
        order = _swap_search(*correlations, order)
        order = _swap_search(*partials, order)
        value = float((partials[0] * partials[1][np.ix_(order, order)]).sum())
        if value > best_value:
            best_order, best_value = order, value
    return best_order


def _zero_diagonal(matrix: np.ndarray) -> np.ndarray:
    out = matrix.copy()
    np.fill_diagonal(out, 0.0)
    return out


def _swap_search(a: np.ndarray, b: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Best-improvement pairwise swaps of Σ A[a,b]·B[φa,φb] (symmetric, zero diagonals)."""
    order = order.copy()
    while True:
        permuted = b[np.ix_(order, order)]
        product = a @ permuted
        diagonal = np.diag(product)
        gain = 2 * (product + product.T - diagonal[:, None] - diagonal[None, :]) + 4 * a * permuted
        first, second = np.unravel_index(int(np.argmax(gain)), gain.shape)
        if gain[first, second] <= 1e-9:
            return order
        order[[first, second]] = order[[second, first]]


def _frank_wolfe_assignment(
    a: np.ndarray, b: np.ndarray, rng: np.random.Generator, steps: int = 30
) -> np.ndarray:
    """FAQ (Vogelstein et al. 2015): maximise trace(A P B Pᵀ) over doubly stochastic P from a
    randomised start, then round P to the nearest permutation."""
    size = len(a)
    plan = 0.5 / size + 0.5 * np.eye(size)[rng.permutation(size)]
    for _ in range(steps):
        gradient = a @ plan @ b + a @ plan @ b
        direction = np.eye(size)[max_assignment(gradient)] - plan
        curvature = np.sum(a @ direction @ b * direction)
        slope = 2 * np.sum(a @ plan @ b * direction)
        if curvature < 0:
            step = min(1.0, max(0.0, -slope / (2 * curvature)))
        else:
            step = 1.0 if curvature + slope > 0 else 0.0
        if step == 0.0:
            break
        plan = plan + step * direction
    return max_assignment(plan)


def max_assignment(score: np.ndarray) -> np.ndarray:
    """The column for each row of a square matrix maximising the total (Hungarian method with
    potentials, O(n³))."""
    cost = -np.asarray(score, dtype=np.float64)
    size = len(cost)
    row_potential = np.zeros(size + 1)
    column_potential = np.zeros(size + 1)
    row_of = np.zeros(size + 1, dtype=np.int64)  # row matched to column j (1-based; 0: none)
    previous = np.zeros(size + 1, dtype=np.int64)
    for row in range(1, size + 1):
        row_of[0] = row
        column = 0
        slack = np.full(size + 1, np.inf)
        used = np.zeros(size + 1, dtype=bool)
        while True:
            used[column] = True
            current_row = row_of[column]
            reduced = cost[current_row - 1] - row_potential[current_row] - column_potential[1:]
            free = ~used[1:]
            better = free & (reduced < slack[1:])
            slack[1:][better] = reduced[better]
            previous[1:][better] = column
            candidates = np.where(free, slack[1:], np.inf)
            next_column = int(np.argmin(candidates)) + 1
            delta = candidates[next_column - 1]
            row_potential[row_of[used]] += delta
            column_potential[used] -= delta
            slack[1:][free] -= delta
            column = next_column
            if row_of[column] == 0:
                break
        while column:
            prior = previous[column]
            row_of[column] = row_of[prior]
            column = prior
    assignment = np.zeros(size, dtype=np.int64)
    assignment[row_of[1:] - 1] = np.arange(size)
    return assignment


def _ambiguities(model: CipherModel) -> np.ndarray:
    """In-block orders of the transforms no statistic resolves: 8 turns/mirrors × 6 colour
    orders, shape (48, L)."""
    size, channels = model.block_size, model.channels
    geometry = dihedral_orders(size, channels)
    per_colour = channels // 3
    grid = np.arange(size * size * channels).reshape(size * size, 3, per_colour)
    colours = np.stack([grid[:, list(p), :].reshape(-1) for p in ALL_CHANNEL_PERMUTATIONS])
    return np.take_along_axis(
        np.repeat(colours, len(geometry), axis=0), np.tile(geometry, (len(colours), 1)), axis=1
    )


def true_in_block(truth: KeyTable, model: CipherModel, image_size: int) -> tuple[np.ndarray, ...]:
    """Per cipher block: the in-block source offset and negation of each element (blocks, L),
    and the plain block it came from (blocks,)."""
    blocks = _blocks_of(model, image_size)
    offset = np.empty(blocks.size, dtype=np.int64)
    block_of = np.empty(blocks.size, dtype=np.int64)
    offset[blocks] = np.arange(blocks.shape[1])[None]
    block_of[blocks] = np.arange(len(blocks))[:, None]
    sources = truth.source[blocks]
    return offset[sources], truth.mask[blocks] != 0, block_of[sources[:, 0]]


def score_in_block_key(
    recovered: InBlockKey,
    truth: KeyTable,
    ciphertexts: np.ndarray,
    model: CipherModel,
    seed: int = 0,
) -> InBlockResult:
    """Score a recovered in-block key against the truth, best over the unresolvable transforms."""
    image_size = ciphertexts.shape[1]
    true_offset, true_flip, _ = true_in_block(truth, model, image_size)
    ambiguities = _ambiguities(model)

    def best(key: InBlockKey) -> tuple[float, float, np.ndarray, bool]:
        outcome = (-1.0, 0.0, ambiguities[0], False)
        for order in ambiguities:
            inverse = np.argsort(order)
            ps = float((key.order[None] == inverse[true_offset]).mean())
            for inverted in (False, True):
                np_share = float((key.flip[None] == (true_flip ^ inverted)).mean())
                if ps + np_share > outcome[0] + outcome[1]:
                    outcome = (ps, np_share, order, inverted)
        return outcome

    ps, np_share, order, inverted = best(recovered)
    rng = np.random.default_rng(seed)
    length = recovered.order.size
    chance = best(InBlockKey(rng.permutation(length), rng.random(length) < 0.5))
    # The truth seen through the same unresolvable transform: what the attacker should get.
    blocks = _blocks_of(model, image_size)
    exact = to_units(_undo_true(truth, ciphertexts, model), model.unit)
    reference = np.empty_like(exact)
    reference[:, blocks] = exact[:, blocks][:, :, order] ^ np.uint8(model.top * inverted)
    reference_images = from_units(reference, model.unit, image_size)
    attempt = recovered.undo(ciphertexts, model)
    return InBlockResult(
        np_recovered=np_share,
        ps_recovered=ps,
        np_chance=chance[1],
        ps_chance=chance[0],
        ssim=float(ssim(attempt, reference_images).mean()),
        psnr=float(psnr(attempt, reference_images).mean()),
        ciphertexts=len(ciphertexts),
    )


def _undo_true(truth: KeyTable, ciphertexts: np.ndarray, model: CipherModel) -> np.ndarray:
    """The exact in-block decryption of every block, each left where the cipher put it."""
    image_size = ciphertexts.shape[1]
    blocks = _blocks_of(model, image_size)
    offset, flip, _ = true_in_block(truth, model, image_size)
    flat = to_units(ciphertexts, model.unit)
    out = np.empty_like(flat)
    rows = np.arange(len(blocks))[:, None]
    out[:, blocks[rows, offset]] = flat[:, blocks] ^ (flip * model.top).astype(np.uint8)
    return from_units(out, model.unit, image_size)
