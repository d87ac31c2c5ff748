"""The strong ciphertext-only jigsaw solver: MGC seams, confident merges first, swap refinement.

Of the published kind (Gallagher, CVPR 2012, and its successors), written here from the method:

1. *Compatibility*: the Mahalanobis gradient compatibility (MGC) of every pair of pieces for the
   left–right and top–bottom relations: the colour gradient across the seam is scored by its
   Mahalanobis distance to the gradients just inside each piece's border, both ways (mixed with
   a linear-prediction error, see `dissimilarities`). For the merge order each score is divided by
   the second best alternative (a confidence) and best buddies (each the other's best match)
   are found.
2. *Placement*: pairs are merged most confident first (best buddies before the rest), Kruskal
   style, into clusters with relative offsets; a merge that makes two pieces overlap (or, by
   default, outgrows the frame) is refused. The largest cluster is trimmed into the frame (an
   offset search, and a trim search when it is larger than the frame) and the holes are filled
   greedily with the best-fitting remaining pieces.
3. *Refinement*: the best cyclic shift of the whole grid, then pairwise swaps (and, with a
   group, re-orientations) that lower the total cost, until none does. The total cost is the
   seam dissimilarity plus, for every piece edge on the frame's edge, half its best seam there
   (`border_costs`: a picture with a dark surround wraps round the frame less often; the
   retina photograph comes back ~94% in place under 3 keys of 4, shifted under the fourth).
4. *Several runs*: steps 2–3 run with the prediction error weighted differently in the merge
   order, then with that order perturbed by seeded noise (`merge_runs`); the arrangement with the
   lowest total cost wins, so the choice needs the ciphertext only. On 8×8 CIFAR puzzles the
   runs' best puts ~20 points more of the blocks in place than one run.

Window-aware: with `disposable`'s public window layout (`window=w`) each w×w window is its own
puzzle placed into its own window. Group-aware: with a per-block group (`np`, `cs`, `rf` and their
products) every piece is expanded into its |G| versions and at most one is used per piece;
clusters are re-oriented as a whole when they merge ("type 2" puzzles for `rf`, colour variants
for `cs`/`np`). The solver sees ciphertexts and public parameters only (block size, window,
group name). Pure numpy.

Pixel shuffles (`px` groups): a piece's pixels come in a random order, so no seam exists to
measure; what is left of a piece is its multiset of colours. The seams are then scored from that
(`set_seam_parts`): the best seam two such pieces could form (the pixels of each nearest to the
other's, M of them, as if the attacker could lay them along the shared edge) and the distance of
their mean colours. Both are the same in every direction, so the arrangement is found up to a
turn or mirror of the whole picture (the scoring forgives that).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from patchveil.audit.jigsaw import group_versions, solve_each_window
from patchveil.errors import PatchveilError
from patchveil.groups import parse_group

#: Gallagher's dummy gradients: keep each border's gradient covariance invertible.
DUMMY_GRADIENTS = np.array(
    [
        [0, 0, 0],
        [1, 1, 1],
        [-1, -1, -1],
        [0, 0, 1],
        [0, 1, 0],
        [1, 0, 0],
        [-1, 0, 0],
        [0, -1, 0],
        [0, 0, -1],
    ],
    dtype=np.float64,
)
#: How many best partners of every piece (per relation, both ways) become merge candidates.
CANDIDATES_PER_PIECE = 4
#: Offsets of the largest cluster tried in the frame, at most.
MAX_OFFSETS = 16
#: The weight of the linear-prediction error beside MGC (see `dissimilarities`).
PREDICTION_WEIGHT = 0.5
#: Kruskal runs per puzzle without a group, and with one (each |G| times dearer).
MERGE_RUNS = 8
GROUP_MERGE_RUNS = 1
#: The prediction weights of the runs' merge orders, in turn (the first: PREDICTION_WEIGHT).
RUN_WEIGHTS = (0.5, 0.25, 1.0, 0.125, 2.0)
#: The log-normal noise on the merge costs of the runs after the first len(RUN_WEIGHTS).
RUN_NOISE = 0.08
#: The weight of the frame-edge cost of a piece edge (its best seam; see `border_costs`).
BORDER_WEIGHT = 0.5
#: The two relations: the second piece's offset from the first (right of it, below it).
OFFSETS = ((0, 1), (1, 0))


@dataclass(frozen=True)
class PieceGroup:
    """The elements of a block group as moves on pieces: `orders`/`flips` as the cipher applies
    them, `compose[g, h]` the element "g, then h", `turn[g]` the 2×2 map of g on block positions
    (a piece that g turns must move the same way in its cluster)."""

    orders: np.ndarray
    flips: np.ndarray
    compose: np.ndarray
    turn: np.ndarray

    @property
    def size(self) -> int:
        return len(self.orders)


def piece_group(group: str, block_size: int) -> PieceGroup:
    """The public group `group` acting on `block_size`-pixel pieces (3 channels)."""
    from patchveil.tenants.ciphers.disposable import group_tables

    orders, flips = group_tables(group, block_size)
    count = len(orders)
    keys = {
        (order.tobytes(), flip.tobytes()): index
        for index, (order, flip) in enumerate(zip(orders, flips, strict=True))
    }
    compose = np.empty((count, count), dtype=np.int64)
    for first in range(count):
        for second in range(count):
            order = orders[first][orders[second]]
            flip = flips[first][orders[second]] ^ flips[second]
            compose[first, second] = keys[(order.tobytes(), flip.tobytes())]
    centre = (block_size - 1) / 2
    pixels = np.arange(block_size * block_size)
    out = np.stack(np.divmod(pixels, block_size), axis=1) - centre  # output pixel (row, column)
    candidates = [
        np.array(matrix)
        for matrix in (
            [[1, 0], [0, 1]], [[0, 1], [-1, 0]], [[-1, 0], [0, -1]], [[0, -1], [1, 0]],
            [[1, 0], [0, -1]], [[0, 1], [1, 0]], [[-1, 0], [0, 1]], [[0, -1], [-1, 0]],
        )
    ]  # fmt: skip
    turn = np.empty((count, 2, 2), dtype=np.int64)
    for element in range(count):
        source = orders[element][pixels * 3] // 3  # the input pixel each output pixel reads
        read = np.stack(np.divmod(source, block_size), axis=1) - centre
        turn[element] = next(m for m in candidates if np.allclose(out @ m.T, read))
    return PieceGroup(orders, flips, compose, turn)


def one_sided_mgc(edge: np.ndarray, inner: np.ndarray, other_edge: np.ndarray) -> np.ndarray:
    """[owner, other]: the Mahalanobis distance of the gradients from each owner's border pixels
    (`edge`, [S, M, C]) to every other piece's facing border (`other_edge`), under the mean and
    covariance of the gradients just inside the owner's border (`edge − inner`), summed along it."""
    gradients = edge - inner
    mean = gradients.mean(axis=1)
    samples = np.concatenate(
        [gradients, np.broadcast_to(DUMMY_GRADIENTS, (len(edge), *DUMMY_GRADIENTS.shape))], axis=1
    )
    centred = samples - samples.mean(axis=1, keepdims=True)
    covariance = np.einsum("skc,skd->scd", centred, centred) / (samples.shape[1] - 1)
    weight = np.linalg.inv(covariance)
    expected = edge + mean[:, None]  # where the other's border should be
    # (o − e)ᵀ W (o − e) summed over the border, expanded so that every pair is matrix products.
    outer = np.einsum("skc,skd->scd", other_edge, other_edge)
    weighted = np.einsum("icd,ikd->ikc", weight, expected)
    quadratic = np.einsum("icd,jcd->ij", weight, outer)
    cross = weighted.reshape(len(edge), -1) @ other_edge.reshape(len(edge), -1).T
    constant = np.einsum("ikc,ikc->i", expected, weighted)
    return np.maximum(quadratic - 2 * cross + constant[:, None], 0.0)


def mgc_dissimilarities(pieces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right, down) [S, S]: the MGC dissimilarity of putting piece j right of / below piece i
    ([S, M, M, C] pieces), both ways round."""
    x = pieces.astype(np.float64)

    def left_right(y: np.ndarray) -> np.ndarray:
        return (
            one_sided_mgc(y[:, :, -1], y[:, :, -2], y[:, :, 0])
            + one_sided_mgc(y[:, :, 0], y[:, :, 1], y[:, :, -1]).T
        )

    return left_right(x), left_right(x.transpose(0, 2, 1, 3))


def prediction_errors(pieces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right, down) [S, S]: the squared error of predicting each border across the seam from
    the two pixels nearest it in the other piece (linear extrapolation), both ways: the cost of
    `jigsaw.edge_costs`, computed as matrix products."""
    x = pieces.astype(np.float64)
    count = len(x)

    def left_right(y: np.ndarray) -> np.ndarray:
        near_a, inner_a = y[:, :, -1].reshape(count, -1), y[:, :, -2].reshape(count, -1)
        near_b, inner_b = y[:, :, 0].reshape(count, -1), y[:, :, 1].reshape(count, -1)
        guess_b, guess_a = 2 * near_a - inner_a, 2 * near_b - inner_b
        squares = (guess_b**2).sum(1)[:, None] + (near_b**2).sum(1)[None]
        squares += (guess_a**2).sum(1)[None] + (near_a**2).sum(1)[:, None]
        error = squares - 2 * guess_b @ near_b.T - 2 * near_a @ guess_a.T
        np.fill_diagonal(error, np.inf)
        return np.maximum(error, 0.0)

    return left_right(x), left_right(x.transpose(0, 2, 1, 3))


def seam_parts(pieces: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per relation (right, down): (√MGC, √linear-prediction error) [S, S], each scaled by its
    median (a piece beside itself: infinite)."""
    out = []
    for gradient, prediction in zip(
        mgc_dissimilarities(pieces), prediction_errors(pieces), strict=True
    ):
        gradient, prediction = np.sqrt(gradient), np.sqrt(prediction)
        finite = np.isfinite(prediction)
        np.fill_diagonal(gradient, np.inf)
        out.append(
            (
                gradient / (np.median(gradient[finite]) + 1e-9),
                prediction / (np.median(prediction[finite]) + 1e-9),
            )
        )
    return out


#: At most this many pixels of a pixel-shuffled piece enter the nearest-pixel seam (evenly
#: spaced ranks by brightness, the piece's colour quantiles): 16 = every pixel of a 4-px block.
SET_SEAM_PIXELS = 16


def colour_quantiles(pieces: np.ndarray, count: int = SET_SEAM_PIXELS) -> np.ndarray:
    """[S, M, M, C] → [S, k, C] float: each piece's pixels sorted by brightness, k ≤ `count`
    of them at evenly spaced ranks (all of them when the piece has no more)."""
    pixels = pieces.reshape(len(pieces), -1, pieces.shape[-1]).astype(np.float64)
    order = np.argsort(pixels.sum(axis=2), axis=1, kind="stable")
    ranked = np.take_along_axis(pixels, order[..., None], axis=1)
    if ranked.shape[1] <= count:
        return ranked
    picks = np.linspace(0, ranked.shape[1] - 1, count).round().astype(int)
    return ranked[:, picks]


def set_seam_parts(pieces: np.ndarray, chunk: int = 64) -> list[tuple[np.ndarray, np.ndarray]]:
    """`seam_parts` for pieces whose pixels are shuffled ([S, M, M, C]): per relation (the same
    matrix for right and down) the nearest-pixel seam and the mean-colour distance [S, S], each
    scaled by its median (a piece beside itself: infinite).

    The nearest-pixel seam of (i, j): for every pixel of j its distance to the nearest pixel of
    i, the M smallest averaged, and the same from i to j; the mean of both ways."""
    side = pieces.shape[1]
    colours = colour_quantiles(pieces)
    count, taken = colours.shape[0], min(side, colours.shape[1])
    seam = np.empty((count, count))
    for start in range(0, count, chunk):
        part = colours[start : start + chunk]  # [c, k, C]
        # distance of every pixel of every piece j to every pixel of piece i: [c, S, k_i, k_j]
        gaps = np.sqrt(
            ((part[:, None, :, None, :] - colours[None, :, None, :, :]) ** 2).sum(axis=-1)
        )
        to_j = np.sort(gaps.min(axis=2), axis=-1)[..., :taken].mean(axis=-1)
        to_i = np.sort(gaps.min(axis=3), axis=-1)[..., :taken].mean(axis=-1)
        seam[start : start + chunk] = (to_j + to_i) / 2
    means = pieces.reshape(count, -1, pieces.shape[-1]).astype(np.float64).mean(axis=1)
    colour = np.sqrt(((means[:, None] - means[None]) ** 2).sum(axis=-1))
    out = []
    for matrix in (seam, colour):
        matrix = matrix.copy()
        np.fill_diagonal(matrix, np.inf)
        finite = np.isfinite(matrix)
        out.append(matrix / (np.median(matrix[finite]) + 1e-9))
    return [(out[0], out[1]), (out[0].copy(), out[1].copy())]


def dissimilarities(pieces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(right, down) [S, S]: the seam dissimilarity the solver uses: √MGC plus half the √ of the
    linear-prediction error (`prediction_errors`), each scaled by its median. The square roots
    keep one bad seam from dominating a sum; on 4-pixel CIFAR blocks the mix reassembles ~10
    points more of a whole image than MGC alone (4 border pixels make a noisy covariance)."""
    (right, right_prediction), (down, down_prediction) = seam_parts(pieces)
    return right + PREDICTION_WEIGHT * right_prediction, down + PREDICTION_WEIGHT * down_prediction


def normalised(dissimilarity: np.ndarray, piece_of: np.ndarray) -> np.ndarray:
    """Each dissimilarity divided by the second best alternative of either piece (over other
    pieces, in their best version): below 1 only where a pair is the clear best both ways."""
    pieces = piece_of.max() + 1
    versions = len(piece_of) // pieces

    def second_best(matrix: np.ndarray) -> np.ndarray:
        per_piece = matrix.reshape(len(matrix), pieces, versions).min(axis=2)
        return np.partition(per_piece, 1, axis=1)[:, 1]

    finite = np.where(np.isfinite(dissimilarity), dissimilarity, np.nan)
    fallback = np.nanmax(finite) if np.isfinite(np.nanmax(finite)) else 1.0
    matrix = np.where(np.isfinite(dissimilarity), dissimilarity, fallback * 10)
    alternative = np.minimum(second_best(matrix)[:, None], second_best(matrix.T)[None, :])
    return dissimilarity / (alternative + 1e-9)


def best_buddies(dissimilarity: np.ndarray) -> np.ndarray:
    """[S, S] booleans: j is i's best match and i is j's best match."""
    rows = np.argmin(dissimilarity, axis=1)
    columns = np.argmin(dissimilarity, axis=0)
    buddies = np.zeros(dissimilarity.shape, dtype=bool)
    states = np.arange(len(dissimilarity))
    mutual = columns[rows] == states
    buddies[states[mutual], rows[mutual]] = True
    return buddies


def merge_candidates(costs: tuple[np.ndarray, np.ndarray], piece_of: np.ndarray) -> np.ndarray:
    """Rows (first state, second state, relation), most confident first: best buddies first, then
    by normalised dissimilarity; each state's few best partners in each relation, both ways."""
    chosen = []
    for relation, dissimilarity in enumerate(costs):
        score = normalised(dissimilarity, piece_of)
        keep = min(CANDIDATES_PER_PIECE, len(score) - 1)
        forward = np.argpartition(score, keep, axis=1)[:, :keep]
        backward = np.argpartition(score, keep, axis=0)[:keep].T
        states = np.arange(len(score))
        pairs = np.concatenate(
            [
                np.stack([np.repeat(states, keep), forward.ravel()], axis=1),
                np.stack([backward.ravel(), np.repeat(states, keep)], axis=1),
            ]
        )
        pairs = np.unique(pairs, axis=0)
        pairs = pairs[np.isfinite(dissimilarity[pairs[:, 0], pairs[:, 1]])]
        buddies = best_buddies(dissimilarity)[pairs[:, 0], pairs[:, 1]]
        confidence = score[pairs[:, 0], pairs[:, 1]]
        chosen.append((pairs, np.full(len(pairs), relation), ~buddies, confidence))
    pairs = np.concatenate([c[0] for c in chosen])
    relations = np.concatenate([c[1] for c in chosen])
    order = np.lexsort(
        (np.concatenate([c[3] for c in chosen]), np.concatenate([c[2] for c in chosen]))
    )
    return np.column_stack([pairs, relations])[order]


class Clusters:
    """Pieces joined into rigid clusters: each piece's cluster, version and position in it."""

    def __init__(self, pieces: int, group: PieceGroup, side: int, frame_limited: bool) -> None:
        self.group = group
        self.side = side
        self.frame_limited = frame_limited
        self.cluster_of = np.arange(pieces)
        self.version = np.zeros(pieces, dtype=np.int64)
        self.position = np.zeros((pieces, 2), dtype=np.int64)
        self.members: dict[int, list[int]] = {piece: [piece] for piece in range(pieces)}
        self.occupied: dict[int, set[tuple[int, int]]] = {
            piece: {(0, 0)} for piece in range(pieces)
        }
        self.low = np.zeros((pieces, 2), dtype=np.int64)  # each cluster's bounding box
        self.high = np.zeros((pieces, 2), dtype=np.int64)

    def merge(self, first: int, first_version: int, second: int, second_version: int, offset):
        """Join the clusters of two pieces so that `second` (in `second_version`) sits at
        `offset` from `first` (in `first_version`), each cluster turned as a whole; False where
        that overlaps or outgrows the frame."""
        a, b = self.cluster_of[first], self.cluster_of[second]
        if a == b:
            return False
        if len(self.members[b]) > len(self.members[a]):  # move the smaller cluster
            first, second = second, first
            first_version, second_version = second_version, first_version
            offset = (-offset[0], -offset[1])
            a, b = b, a
        moved = np.array(self.members[b])
        if self.group.size == 1:
            turn_b = 0
            positions = self.position[moved] - self.position[second]
        else:
            compose = self.group.compose
            # Turn the pair as a whole (h) until `first` has the version its cluster gives it.
            turn_pair = int(np.flatnonzero(compose[first_version] == self.version[first])[0])
            wanted = compose[second_version, turn_pair]
            offset = self.group.turn[turn_pair].T @ np.asarray(offset)
            # Turn the second cluster (g) until `second` has that version.
            turn_b = int(np.flatnonzero(compose[self.version[second]] == wanted)[0])
            positions = self.position[moved] @ self.group.turn[turn_b]  # rows: Aᵀ q
            positions = positions - positions[moved == second][0]
        positions = positions + self.position[first] + np.asarray(offset)
        cells = list(map(tuple, positions.tolist()))
        occupied = self.occupied[a]
        if any(cell in occupied for cell in cells):
            return False
        low = np.minimum(self.low[a], positions.min(axis=0))
        high = np.maximum(self.high[a], positions.max(axis=0))
        if self.frame_limited and (high - low >= self.side).any():
            return False
        self.position[moved] = positions
        if turn_b:
            self.version[moved] = self.group.compose[self.version[moved], turn_b]
        self.cluster_of[moved] = a
        self.members[a].extend(self.members.pop(b))
        occupied.update(cells)
        del self.occupied[b]
        self.low[a], self.high[a] = low, high
        return True


def assemble(
    costs: tuple[np.ndarray, np.ndarray],
    pieces: int,
    group: PieceGroup,
    side: int,
    frame_limited: bool = True,
) -> np.ndarray:
    """Merge the most confident pairs first; returns the largest cluster as states in a grid
    [rows, columns] (−1 where empty), trimmed to at most `side × side`."""
    versions = group.size
    piece_of = np.arange(pieces * versions) // versions
    clusters = Clusters(pieces, group, side, frame_limited)
    for first, second, relation in merge_candidates(costs, piece_of):
        clusters.merge(
            first // versions,
            first % versions,
            second // versions,
            second % versions,
            OFFSETS[relation],
        )
        if len(clusters.members[clusters.cluster_of[0]]) == pieces:
            break
    largest = max(clusters.members.values(), key=len)
    members = np.array(largest)
    positions = clusters.position[members] - clusters.position[members].min(axis=0)
    height, width = positions.max(axis=0) + 1
    grid = np.full((height, width), -1, dtype=np.int64)
    grid[positions[:, 0], positions[:, 1]] = members * versions + clusters.version[members]
    return trim(grid, side)


def trim(grid: np.ndarray, side: int) -> np.ndarray:
    """The `side × side` (at most) part of a cluster's grid holding the most pieces."""
    height, width = grid.shape
    if height <= side and width <= side:
        return grid
    rows, columns = min(height, side), min(width, side)
    filled = np.pad((grid >= 0).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    counts = (
        filled[rows:, columns:]
        - filled[:-rows, columns:]
        - filled[rows:, :-columns]
        + filled[:-rows, :-columns]
    )
    top, left = np.unravel_index(np.argmax(counts), counts.shape)
    return grid[top : top + rows, left : left + columns]


def local_costs(grid: np.ndarray, right: np.ndarray, down: np.ndarray, border=None) -> np.ndarray:
    """[cells, states]: the seam cost of every state in every cell beside its placed neighbours
    (cells of `grid` in raster order; −1 = empty), and on the frame's edge its `border` cost."""
    side = grid.shape[0]
    cost = np.zeros((side, side, right.shape[0]))
    if border is not None:
        left, right_edge, top, bottom = border
        cost[:, 0] += left
        cost[:, -1] += right_edge
        cost[0] += top
        cost[-1] += bottom
    left_of = grid[:, :-1]
    has = left_of >= 0
    cost[:, 1:][has] += right[left_of[has]]
    right_of = grid[:, 1:]
    has = right_of >= 0
    cost[:, :-1][has] += right[:, right_of[has]].T
    above = grid[:-1]
    has = above >= 0
    cost[1:][has] += down[above[has]]
    below = grid[1:]
    has = below >= 0
    cost[:-1][has] += down[:, below[has]].T
    return cost.reshape(side * side, -1)


def cell_costs(grid: np.ndarray, cells: np.ndarray, right: np.ndarray, down: np.ndarray):
    """[cells, states]: the seam cost of every state in the given cells of `grid` (raster
    numbers) beside their placed neighbours (−1 = empty)."""
    height, width = grid.shape
    rows, columns = np.divmod(cells, width)
    padded = np.full((height + 2, width + 2), -1, dtype=grid.dtype)
    padded[1:-1, 1:-1] = grid
    cost = np.zeros((len(cells), right.shape[0]))
    for step, matrix, before in (
        ((0, -1), right, True),
        ((0, 1), right, False),
        ((-1, 0), down, True),
        ((1, 0), down, False),
    ):
        beside = padded[rows + 1 + step[0], columns + 1 + step[1]]
        has = beside >= 0
        if has.any():
            cost[has] += matrix[beside[has]] if before else matrix[:, beside[has]].T
    return cost


def fill(grid: np.ndarray, right: np.ndarray, down: np.ndarray, versions: int) -> np.ndarray:
    """Fill the empty cells, most constrained first (most placed neighbours), each with the
    unused piece (in its best version) that fits its neighbours best."""
    grid = grid.copy()
    piece_of = np.arange(right.shape[0]) // versions
    used = np.zeros(piece_of.max() + 1, dtype=bool)
    used[grid[grid >= 0] // versions] = True
    while (grid < 0).any():
        placed = np.zeros((grid.shape[0] + 2, grid.shape[1] + 2), dtype=np.int64)
        placed[1:-1, 1:-1] = grid >= 0
        neighbours = placed[:-2, 1:-1] + placed[2:, 1:-1] + placed[1:-1, :-2] + placed[1:-1, 2:]
        neighbours[grid >= 0] = -1
        cells = np.flatnonzero(neighbours.ravel() == neighbours.max())
        cost = cell_costs(grid, cells, right, down)
        cost[:, used[piece_of]] = np.inf
        cell, state = np.unravel_index(np.argmin(cost), cost.shape)
        grid.flat[cells[cell]] = state
        used[piece_of[state]] = True
    return grid


def total_cost(grid: np.ndarray, right: np.ndarray, down: np.ndarray, border=None) -> float:
    """The sum of the seam dissimilarities of a full grid of states (and, given `border`, the
    cost of the piece edges on the frame's edge: see `border_costs`)."""
    total = right[grid[:, :-1], grid[:, 1:]].sum() + down[grid[:-1], grid[1:]].sum()
    if border is not None:
        left, right_edge, top, bottom = border
        total += left[grid[:, 0]].sum() + right_edge[grid[:, -1]].sum()
        total += top[grid[0]].sum() + bottom[grid[-1]].sum()
    return float(total)


def border_costs(right: np.ndarray, down: np.ndarray) -> tuple[np.ndarray, ...]:
    """(left, right, top, bottom) [S]: what each state's edge costs on the frame's edge:
    BORDER_WEIGHT × its best seam on that side. An edge that fits some piece well is unlikely
    to be the picture's edge; without this a picture whose opposite edges look alike (a dark
    surround) wraps round the frame at no cost."""
    return tuple(
        BORDER_WEIGHT * matrix.min(axis=axis)
        for matrix, axis in ((right, 0), (right, 1), (down, 0), (down, 1))
    )


def refine(
    grid: np.ndarray, right: np.ndarray, down: np.ndarray, versions: int, border=None
) -> np.ndarray:
    """Pairwise swaps (each piece moved in its best version there) and re-orientations that lower
    the total seam dissimilarity, best first, until none does."""
    grid = grid.copy()
    cells = grid.size
    pieces = right.shape[0] // versions
    best_total = total_cost(grid, right, down, border)
    refused: set[tuple[int, int]] = set()
    for _ in range(20 * cells):
        local = local_costs(grid, right, down, border).reshape(cells, pieces, versions)
        best_version = local.argmin(axis=2)  # [cell, piece]
        best = local.min(axis=2)
        flat = grid.ravel()
        piece, current = flat // versions, local.reshape(cells, -1)[np.arange(cells), flat]
        gain = best[:, piece] + best[:, piece].T - current[:, None] - current[None, :]
        gain[np.triu_indices(cells, 1)] = np.inf  # each pair once (p ≥ q; p = q re-orients)
        for p, q in refused:
            gain[p, q] = np.inf
        move = np.unravel_index(np.argmin(gain), gain.shape)
        if gain[move] >= -1e-9:
            break
        p, q = int(move[0]), int(move[1])
        trial = grid.copy().ravel()
        trial[p] = piece[q] * versions + best_version[p, piece[q]]
        trial[q] = piece[p] * versions + best_version[q, piece[p]]
        if p == q:
            trial[p] = piece[p] * versions + best_version[p, piece[p]]
        trial = trial.reshape(grid.shape)
        trial_total = total_cost(trial, right, down, border)
        if trial_total < best_total - 1e-9:
            grid, best_total = trial, trial_total
            refused.clear()
        else:  # neighbours swapped: the estimate was off
            refused.add((p, q))
    return grid


def merge_runs(group_size: int) -> list[tuple[float, float]]:
    """(prediction weight, merge-order noise) of each Kruskal run: the solver's own seams first,
    then other weights of the prediction error, then those with the merge order perturbed."""
    runs = MERGE_RUNS if group_size == 1 else GROUP_MERGE_RUNS
    return [
        (RUN_WEIGHTS[run % len(RUN_WEIGHTS)], 0.0 if run < len(RUN_WEIGHTS) else RUN_NOISE)
        for run in range(runs)
    ]


def solve(pieces: np.ndarray, side: int, group: str = "none", frame_limited: bool = True):
    """Arrange `side × side` pieces ([P, M, M, C], ciphertext blocks) into a square frame;
    returns (piece, version) numbers per cell in raster order, each [side²].

    Several Kruskal runs (`merge_runs`: the prediction error weighted differently in the merge
    order, then that order perturbed by seeded noise) each give an arrangement, framed, filled and
    polished; the arrangement as received is one more start. The one with the lowest total seam
    dissimilarity wins: chosen from the ciphertext alone."""
    count = len(pieces)
    if count != side * side:
        raise PatchveilError(f"{count} pieces do not fill a {side}×{side} frame")
    elements = piece_group(group, pieces.shape[1])
    versions = elements.size
    states = group_versions(pieces, group) if group != "none" else pieces[:, None]
    flat_states = states.reshape(count * versions, *pieces.shape[1:])
    shuffled = parse_group(group).pixel_shuffle
    parts = set_seam_parts(flat_states) if shuffled else seam_parts(flat_states)
    piece_of = np.arange(count * versions) // versions
    same = piece_of[:, None] == piece_of[None, :]

    def seams(weight: float) -> list[np.ndarray]:
        out = [gradient + weight * prediction for gradient, prediction in parts]
        for matrix in out:
            matrix[same] = np.inf
        return out

    right, down = seams(PREDICTION_WEIGHT)
    finite_right = np.where(np.isfinite(right), right, 1e30)
    finite_down = np.where(np.isfinite(down), down, 1e30)
    # The arrangement as received is one more start (it wins where nothing was scrambled).
    starts = [np.arange(count).reshape(side, side) * versions]
    for run, (weight, noise) in enumerate(merge_runs(versions)):
        costs = seams(weight)
        if noise:
            random = np.random.default_rng(run)
            costs = [
                matrix * np.exp(noise * random.standard_normal(matrix.shape)) for matrix in costs
            ]
        core = assemble((costs[0], costs[1]), count, elements, side, frame_limited)
        starts.append(frame(core, side, finite_right, finite_down, versions))
    border = border_costs(finite_right, finite_down)
    solutions = [polish(start, finite_right, finite_down, versions, border) for start in starts]
    grid = min(
        solutions, key=lambda grid: total_cost(grid, finite_right, finite_down, border)
    ).ravel()
    return grid // versions, grid % versions


def frame(
    core: np.ndarray, side: int, right: np.ndarray, down: np.ndarray, versions: int
) -> np.ndarray:
    """The cluster `core` put into the `side × side` frame at the offset (of at most
    MAX_OFFSETS) whose greedy filling costs least, filled."""
    height, width = core.shape
    offsets = [(top, left) for top in range(side - height + 1) for left in range(side - width + 1)]
    if len(offsets) > MAX_OFFSETS:
        picks = np.linspace(0, len(offsets) - 1, MAX_OFFSETS).round().astype(int)
        offsets = [offsets[i] for i in picks]
    best_grid, best_total = None, np.inf
    for top, left in offsets:
        grid = np.full((side, side), -1, dtype=np.int64)
        grid[top : top + height, left : left + width] = core
        grid = fill(grid, right, down, versions)
        total = total_cost(grid, right, down)
        if total < best_total:
            best_grid, best_total = grid, total
    return best_grid


def polish(
    grid: np.ndarray, right: np.ndarray, down: np.ndarray, versions: int, border=None
) -> np.ndarray:
    """Alternate the best cyclic shift and swap refinement while the total cost falls."""
    total = np.inf
    while True:
        grid = refine(best_roll(grid, right, down, border), right, down, versions, border)
        new_total = total_cost(grid, right, down, border)
        if new_total >= total - 1e-9:
            return grid
        total = new_total


def best_roll(grid: np.ndarray, right: np.ndarray, down: np.ndarray, border=None) -> np.ndarray:
    """The cyclic shift of the whole grid with the lowest total cost (a picture assembled
    across the frame's edge comes back whole): on the torus every shift keeps the same seams but
    one column and one row of them, so the cut goes where those cost the most (less what the
    edges it makes cost on the frame's edge)."""
    after_column, below_row = np.roll(grid, -1, axis=1), np.roll(grid, -1, axis=0)
    across = right[grid, after_column].sum(axis=0)  # seams after each column
    along = down[grid, below_row].sum(axis=1)  # seams below each row
    if border is not None:
        left, right_edge, top, bottom = border
        across = across - right_edge[grid].sum(axis=0) - left[after_column].sum(axis=0)
        along = along - bottom[grid].sum(axis=1) - top[below_row].sum(axis=1)
    row, column = int(np.argmax(along)), int(np.argmax(across))
    side_rows, side_columns = grid.shape
    return np.roll(grid, (side_rows - 1 - row, side_columns - 1 - column), axis=(0, 1))


def reconstruct(
    ciphertexts: np.ndarray,
    block_size: int,
    window: int = 0,
    group: str = "none",
    frame_limited: bool = True,
) -> np.ndarray:
    """Reassemble every ciphertext ([N, H, W, C] uint8) from its blocks alone: one puzzle per
    window when `window` (blocks) is given, else the whole image; with a group, each block is
    also turned back into the version the solver chose. Returns images like the input."""

    def place(pieces: np.ndarray, side: int) -> np.ndarray:
        chosen, version = solve(pieces, side, group, frame_limited)
        if group == "none":
            return pieces[chosen]
        return group_versions(pieces, group)[chosen, version]

    return solve_each_window(ciphertexts, block_size, window, place)
