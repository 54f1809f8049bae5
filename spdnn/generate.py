"""Synthetic challenge problems: RadiX-Net weights, digit-like images and their truth.

The weights follow the official construction (see CHALLENGE.md): for N = 16 * 2^p, layers
1..p are the base patterns B_0..B_{p-1} / 16, and every later block of p layers repeats
them under one random row permutation drawn from the seed. A network is lazy: layer k is
built when it is indexed, as a gather of the rows of a cached base pattern, so the largest
official size (N = 65536, 1920 layers, 4e9 non-zeros) needs no text and no long wait.

The features are binary sqrt(N) x sqrt(N) pictures of handwritten-looking digits: each
image is one of ten stroke skeletons, jittered, slanted, scaled and drawn with a thick pen,
so that they behave like the real MNIST-derived images on the official weights.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from . import challenge
from .dataset import Progress, no_progress
from .network import VALUE_DTYPE, Network

BLOCK = 16
"""RadiX-Net expands each base pattern with dense BLOCK x BLOCK blocks: B_s = kron(1, D_s)."""

WEIGHTS_STREAM, FEATURES_STREAM = 1, 2
"""Random streams are keyed (seed, stream, block): weights and features never share draws."""

FEATURE_BATCH = 4096
"""Images are drawn in batches of this many, each from its own stream, so the first rows
of a feature set do not depend on how many rows are asked for."""

DRAW_CHUNKS_PER_THREAD = 8
"""Images are drawn in this many chunks per thread, for balance."""

# The digit model, in units of the picture's side. Tuned so that on the official N = 1024
# weights the survival curve is close to the real images' (docs/generator.md).
DIGIT_HEIGHT = (0.45, 0.7)
"""Skeleton height, drawn uniformly from this range."""
DIGIT_WIDTH = (0.75, 1.1)
"""Width relative to the template's, drawn uniformly."""
SLANT = (-0.35, 0.25)
"""Horizontal shift per unit of height (handwriting leans right: negative is forward)."""
ROTATION = 0.15
"""Largest rotation, in radians, either way."""
CENTRE_JITTER = 0.06
"""Largest shift of the digit's centre from the picture's centre, either way."""
POINT_JITTER = 0.035
"""Standard deviation of each skeleton point's wobble, in units of the digit's height."""
PEN_RADIUS = (0.017, 0.075)
"""Half the stroke width, drawn log-uniformly per image: a few bold digits are what
survive the deep layers, as in the real images."""


# ---------------------------------------------------------------------------- weights

def base_levels(neurons: int) -> int:
    """Return p, the number of base patterns, for N = 16 * 2^p; ValueError otherwise."""
    groups = neurons // BLOCK
    if neurons % BLOCK or groups < 2 or groups & (groups - 1):
        raise ValueError(f"RadiX-Net needs N = 16 * 2^p with p >= 1, not {neurons}")
    return groups.bit_length() - 1


@lru_cache(maxsize=8)
def base_columns(neurons: int) -> np.ndarray:
    """Return the sorted column ids of every row of B_0..B_{p-1}: shape (p, N, 32), int32.

    Neuron i = M * block + residue; D_s links residue a to residues a and a - 2^s (mod M),
    and the dense 16x16 expansion repeats that link into every block.
    """
    groups = neurons // BLOCK
    residue = np.arange(neurons) % groups
    offsets = groups * np.arange(BLOCK)
    patterns = []
    for s in range(base_levels(neurons)):
        pair = np.sort(np.stack([residue, (residue - (1 << s)) % groups], axis=1), axis=1)
        columns = offsets[None, :, None] + pair[:, None, :]          # (N, 16 blocks, 2)
        patterns.append(columns.reshape(neurons, 2 * BLOCK))
    columns = np.stack(patterns).astype(np.int32)
    columns.flags.writeable = False
    return columns


def block_permutation(neurons: int, seed: int, block: int) -> np.ndarray | None:
    """Return the row permutation of layer block `block` (None for the first, unpermuted)."""
    if block == 0:
        return None
    return np.random.default_rng([seed, WEIGHTS_STREAM, block]).permutation(neurons)


class RadixLayers(Sequence):
    """The layers of a RadiX-Net, built on indexing; slicing gives another lazy view.

    Every layer has 32 entries per row, so all layers share one `indptr` and one `data`
    array: treat the matrices as read-only.
    """

    def __init__(self, neurons: int, seed: int, positions: range):
        self.neurons, self.seed, self.positions = neurons, seed, positions
        self.levels = base_levels(neurons)
        per_row = 2 * BLOCK
        self._indptr = np.arange(0, neurons * per_row + 1, per_row, dtype=np.int32)
        self._data = np.full(neurons * per_row, challenge.WEIGHT_VALUE, dtype=VALUE_DTYPE)
        self._permutation = (None, None)   # (block, permutation) of the last block built

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return RadixLayers(self.neurons, self.seed, self.positions[index])
        return self.layer(self.positions[index])

    def layer(self, position: int) -> sp.csr_matrix:
        """Return W_{position+1} = P_block B_s / 16: rows of the base pattern, permuted."""
        block, level = divmod(position, self.levels)
        cached = self._permutation   # one read, so that threads may share this sequence
        if cached[0] != block:
            cached = (block, block_permutation(self.neurons, self.seed, block))
            self._permutation = cached
        permutation = cached[1]
        columns = base_columns(self.neurons)[level]
        if permutation is None:
            columns = columns.copy()   # a writable array of its own, as for every other layer
        else:
            columns = np.take(columns, permutation, axis=0)   # ten times faster than [...]
        matrix = sp.csr_matrix((self._data, columns.reshape(-1), self._indptr),
                               shape=(self.neurons, self.neurons), copy=False)
        matrix.has_sorted_indices = True
        return matrix


def radixnet(neurons: int, layers: int, seed: int = challenge.DEFAULT_SEED,
             bias: float | None = None) -> Network:
    """Return a lazy RadiX-Net of `layers` layers whose later blocks are permuted from `seed`."""
    if layers < 1:
        raise ValueError(f"a network needs at least one layer, not {layers}")
    network_layers = RadixLayers(neurons, seed, range(layers))
    nonzeros = np.full(layers, neurons * challenge.WEIGHTS_PER_ROW, dtype=np.int64)
    if bias is None:
        bias = challenge.default_bias(neurons, extrapolate=True)
    return Network(neurons, network_layers, bias, layer_nonzeros=nonzeros)


# ---------------------------------------------------------------------------- features

def _arc(cx, cy, rx, ry, start, stop, points):
    """Return points on an ellipse from angle `start` to `stop` in degrees (y points down)."""
    angles = np.radians(np.linspace(start, stop, points))
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1)


def _line(*points):
    return np.array(points, dtype=np.float64)


DIGIT_STROKES = [
    [_arc(0.5, 0.5, 0.3, 0.48, -90, 275, 15)],
    [_line((0.55, 0.02), (0.5, 0.5), (0.45, 0.98))],
    [np.concatenate([_arc(0.5, 0.28, 0.3, 0.26, 190, 400, 8),
                     _line((0.18, 0.97), (0.86, 0.97))])],
    [np.concatenate([_arc(0.47, 0.26, 0.28, 0.24, 205, 450, 8),
                     _arc(0.47, 0.74, 0.33, 0.24, 270, 520, 8)])],
    [_line((0.64, 0.0), (0.14, 0.64), (0.88, 0.64)), _line((0.66, 0.3), (0.66, 1.0))],
    [np.concatenate([_line((0.82, 0.02), (0.34, 0.02)),
                     _arc(0.48, 0.68, 0.33, 0.3, 235, 520, 9)])],
    [np.concatenate([_line((0.74, 0.02), (0.46, 0.18), (0.3, 0.45)),
                     _arc(0.5, 0.73, 0.26, 0.25, 200, 550, 10)])],
    [_line((0.14, 0.03), (0.86, 0.03), (0.42, 0.98)), _line((0.38, 0.52), (0.76, 0.5))],
    [_arc(0.5, 0.25, 0.24, 0.24, 90, 450, 10), _arc(0.5, 0.73, 0.29, 0.26, -90, 270, 11)],
    [np.concatenate([_arc(0.47, 0.29, 0.26, 0.27, 10, 375, 11),
                     _line((0.72, 0.6), (0.62, 0.98))])],
]
"""Skeletons of the ten digits: strokes as polylines in a unit box, x right, y down."""


def _skeleton(strokes):
    """Return a digit's points (n, 2), centred, and which consecutive pairs are segments."""
    points = np.concatenate(strokes) - 0.5
    joined = np.concatenate([np.r_[np.ones(len(s) - 1, bool), False] for s in strokes])[:-1]
    return points, joined


SKELETONS = [_skeleton(strokes) for strokes in DIGIT_STROKES]


def _draw_segments(rng, count: int, side: int):
    """Return the pen segments (S, 4) of `count` random digits, their first segment ids
    (count + 1) and their pen radii, in pixel units (x = column, y = row)."""
    digits = rng.integers(len(SKELETONS), size=count)
    height = rng.uniform(*DIGIT_HEIGHT, count) * side
    width = rng.uniform(*DIGIT_WIDTH, count)
    slant = rng.uniform(*SLANT, count)
    angle = rng.uniform(-ROTATION, ROTATION, count)
    centre = side / 2 + rng.uniform(-CENTRE_JITTER, CENTRE_JITTER, (count, 2)) * side
    radius = np.exp(rng.uniform(*np.log(PEN_RADIUS), count)) * side
    wobble = rng.normal(0.0, POINT_JITTER, (count, max(len(p) for p, _ in SKELETONS), 2))

    per_digit = np.array([joined.sum() for _, joined in SKELETONS])
    first = np.zeros(count + 1, np.int64)
    np.cumsum(per_digit[digits], out=first[1:])
    segments = np.empty((first[-1], 4))
    for digit, (points, joined) in enumerate(SKELETONS):
        chosen = np.flatnonzero(digits == digit)
        if chosen.size == 0:
            continue
        p = points[None] + wobble[chosen, :len(points)]                # (images, n, 2)
        x = (p[..., 0] * width[chosen, None] + p[..., 1] * slant[chosen, None])
        y = p[..., 1]
        cos, sin = np.cos(angle[chosen, None]), np.sin(angle[chosen, None])
        x, y = x * cos - y * sin, x * sin + y * cos
        x = centre[chosen, 0, None] + x * height[chosen, None]
        y = centre[chosen, 1, None] + y * height[chosen, None]
        ends = np.stack([x[:, :-1], y[:, :-1], x[:, 1:], y[:, 1:]], axis=-1)[:, joined]
        where = first[chosen, None] + np.arange(joined.sum())
        segments[where] = ends
    return segments, first, radius


_draw_kernel = None


def _compile_draw():
    """Return the numba kernel that draws thick segments, compiled on first use.

    One function with no compiled helpers: numba's disk cache misses on every new process
    for a kernel whose closure holds other compiled functions.
    """
    global _draw_kernel
    if _draw_kernel is not None:
        return _draw_kernel
    from numba import njit, prange

    @njit(parallel=True, cache=True)
    def draw(segments, first, radius, side, indptr, pixels, chunks):
        # with an empty `pixels`, count each image's pixels into indptr[1:]; else list them
        # from indptr (the counts summed). A count reads nothing another chunk writes.
        images = radius.size
        for chunk in prange(chunks):
            canvas = np.zeros((side, side), np.bool_)
            for image in range(chunk * images // chunks, (chunk + 1) * images // chunks):
                # paint every pixel whose centre lies within the pen's radius of a segment
                pen = radius[image]
                low_c, high_c, low_r, high_r = side, -1, side, -1
                for s in range(first[image], first[image + 1]):
                    x0, y0 = segments[s, 0], segments[s, 1]
                    dx, dy = segments[s, 2] - x0, segments[s, 3] - y0
                    length2 = dx * dx + dy * dy
                    c0 = max(0, int(np.floor(min(x0, x0 + dx) - pen)))
                    c1 = min(side - 1, int(np.ceil(max(x0, x0 + dx) + pen)))
                    r0 = max(0, int(np.floor(min(y0, y0 + dy) - pen)))
                    r1 = min(side - 1, int(np.ceil(max(y0, y0 + dy) + pen)))
                    for c in range(c0, c1 + 1):
                        px = c + 0.5 - x0
                        for r in range(r0, r1 + 1):
                            py = r + 0.5 - y0
                            t = (px * dx + py * dy) / length2 if length2 > 0 else 0.0
                            t = min(max(t, 0.0), 1.0)
                            ex, ey = px - t * dx, py - t * dy
                            if ex * ex + ey * ey <= pen * pen:
                                canvas[c, r] = True
                    low_c, high_c = min(low_c, c0), max(high_c, c1)
                    low_r, high_r = min(low_r, r0), max(high_r, r1)
                # collect and clear; pixel id = column * side + row, the challenge's order
                position = indptr[image] if pixels.size else 0
                for c in range(low_c, high_c + 1):
                    for r in range(low_r, high_r + 1):
                        if canvas[c, r]:
                            canvas[c, r] = False
                            if pixels.size:
                                pixels[position] = c * side + r
                            position += 1
                if pixels.size == 0:
                    indptr[image + 1] = position
        return indptr

    _draw_kernel = draw
    return draw


def picture_side(neurons: int) -> int:
    """Return sqrt(N); ValueError when N is not a square."""
    side = math.isqrt(neurons)
    if side * side != neurons:
        raise ValueError(f"images need a square N, and {neurons} is not one")
    return side


def check_neurons(neurons: int) -> None:
    """Return None when the generator can build N; ValueError otherwise.

    The weights need N = 16 * 2^p with p >= 1 (base_levels), the images a square N.
    """
    try:
        base_levels(neurons)
        picture_side(neurons)
    except ValueError:
        raise ValueError(f"the generator needs N = 16 * 2^p with p even and >= 2 "
                         f"(64, 256, 1024, 4096, ...), not {neurons}") from None


def draw_digits(segments, first, radius, side: int) -> sp.csr_matrix:
    """Return the pictures of the given pen segments as rows of a CSR matrix of ones."""
    import numba

    draw = _compile_draw()
    images = radius.size
    chunks = max(1, min(images, DRAW_CHUNKS_PER_THREAD * numba.get_num_threads()))
    indptr = np.zeros(images + 1, np.int64)
    draw(segments, first, radius, side, indptr, np.empty(0, np.int32), chunks)
    np.cumsum(indptr, out=indptr)
    pixels = np.empty(indptr[-1], np.int32)
    draw(segments, first, radius, side, indptr, pixels, chunks)
    ones = np.ones(pixels.size, VALUE_DTYPE)
    return sp.csr_matrix((ones, pixels, indptr), shape=(images, side * side))


def feature_batch(neurons: int, rows: int, seed: int, batch: int) -> sp.csr_matrix:
    """Return batch number `batch` of a `rows`-row feature set: at most FEATURE_BATCH rows."""
    side = picture_side(neurons)
    rng = np.random.default_rng([seed, FEATURES_STREAM, batch])
    # draw a whole batch always, so that a batch's images do not depend on `rows`
    segments, first, radius = _draw_segments(rng, FEATURE_BATCH, side)
    count = min(FEATURE_BATCH, rows - batch * FEATURE_BATCH)
    return draw_digits(segments[:first[count]], first[:count + 1], radius[:count], side)


def feature_batches(rows: int) -> range:
    """Return the batch numbers that make up `rows` rows."""
    return range(-(-rows // FEATURE_BATCH))


def features(neurons: int, rows: int = challenge.FEATURE_ROWS,
             seed: int = challenge.DEFAULT_SEED, progress: Progress = no_progress
             ) -> sp.csr_matrix:
    """Return `rows` binary digit images of sqrt(N) x sqrt(N) pixels as a CSR matrix of ones.

    The first k rows are the same for any `rows` >= k and the same seed.
    """
    if rows < 1:
        raise ValueError(f"features need at least one row, not {rows}")
    picture_side(neurons)
    batches = progress(feature_batches(rows), "drawing features")
    return sp.vstack([feature_batch(neurons, rows, seed, b) for b in batches], format="csr")


# ---------------------------------------------------------------------------- truth

def truth(network: Network, features: sp.csr_matrix) -> np.ndarray:
    """Return the 1-based categories of `features` by the exact CPU backend.

    One inference over all rows: a lazy network builds each layer once.
    """
    from .backends.cpu import CpuEngine
    from .infer import infer

    return infer(network, features, CpuEngine()).categories.astype(np.int64)


def synthetic_problem(neurons: int, layers: int, rows: int = challenge.FEATURE_ROWS,
                      seed: int = challenge.DEFAULT_SEED, with_truth: bool = True,
                      bias: float | None = None):
    """Return (network, features, truth) generated in memory; truth is None unless asked for.

    The network is lazy (layers are built as the inference reaches them); the truth comes
    from the exact CPU backend, so skip it when the CPU itself is what is being measured.
    """
    network = radixnet(neurons, layers, seed, bias)
    images = features(neurons, rows, seed)
    return network, images, truth(network, images) if with_truth else None


# ---------------------------------------------------------------------------- files

FORMATS = ("tsv", "tsv.gz", "h5")


@dataclass
class Written:
    """The files of a generated data set and how many rows survived all layers."""

    weights: Path
    features: Path
    categories: Path
    survivors: int


def write_dataset(out_dir: Path | str, neurons: int, layers: int,
                  rows: int = challenge.FEATURE_ROWS, seed: int = challenge.DEFAULT_SEED,
                  fmt: str = "tsv", bias: float | None = None,
                  progress: Progress = no_progress) -> Written:
    """Write a generated problem in the official layout under `out_dir`; return the paths.

    tsv and tsv.gz: neuron{N}/n{N}-l{k}.tsv[.gz], sparse-images-{N}.tsv[.gz]; h5: the
    store's neuron{N}-l{L}.h5 and sparse-images-{N}.h5. Both add the truth file
    neuron{N}-l{L}-categories.tsv. Every file is written atomically, the truth last (and an
    older truth file is removed first), so an interrupted run leaves whole files only and
    no truth.

    A TSV data set replaces the one of N already in `out_dir`: once its files are written,
    the folder's other n{N}-l{k}.tsv[.gz] (k > L, or the other suffix), the features file
    of the other suffix and the truth files of more than L layers are removed, so that
    `spdnn run --weights` does not read a mix of the two.
    """
    from .io import h5, tsv

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    out_dir = Path(out_dir)
    network = radixnet(neurons, layers, seed, bias)
    images = features(neurons, rows, seed, progress)
    categories_path = out_dir / challenge.categories_name(neurons, layers)
    categories_path.unlink(missing_ok=True)   # a stale truth must not outlive an interruption
    source = f"spdnn generate: neurons={neurons} layers={layers} rows={rows} seed={seed} " \
             f"bias={network.bias}"

    if fmt == "h5":
        weights = out_dir / challenge.network_store_name(neurons, layers)
        h5.write_network(weights, network, source,
                         lambda items: progress(items, "writing layers"))
        features_path = out_dir / challenge.features_store_name(neurons)
        h5.write_features(features_path, images, source)
    else:
        suffix = "." + fmt
        weights = challenge.weights_dir(out_dir, neurons)
        _write_layers(weights, network, suffix, progress)
        features_path = out_dir / (challenge.features_stem(neurons) + suffix)
        tsv.write_triples(features_path, images, integer_values=True, column_major=False)
        _remove_stale_tsv(out_dir, neurons, layers, suffix)

    categories = truth(network, images)
    tsv.write_categories(categories_path, categories)
    return Written(weights, features_path, categories_path, int(categories.size))


def _remove_stale_tsv(out_dir: Path, neurons: int, layers: int, suffix: str) -> None:
    """Remove the TSV files of N in `out_dir` that the data set just written does not own.

    Readers take every consecutive layer file, and a .tsv before a .tsv.gz of one name.
    """
    layer_file = re.compile(rf"n{neurons}-l([1-9][0-9]*)(\.tsv|\.tsv\.gz)")
    for path in challenge.weights_dir(out_dir, neurons).iterdir():
        match = layer_file.fullmatch(path.name)
        if match and (int(match.group(1)) > layers or match.group(2) != suffix):
            path.unlink()
    for other in challenge.TSV_SUFFIXES:
        if other != suffix:
            (out_dir / (challenge.features_stem(neurons) + other)).unlink(missing_ok=True)
    truth_file = re.compile(rf"neuron{neurons}-l([1-9][0-9]*)-categories\.tsv")
    for path in out_dir.iterdir():
        match = truth_file.fullmatch(path.name)
        if match and int(match.group(1)) > layers:
            path.unlink()


def _write_layers(folder: Path, network: Network, suffix: str, progress) -> None:
    """Write n{N}-l{k}{suffix} for every layer, several files at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from .io import tsv

    def write(k: int) -> None:
        path = folder / (challenge.layer_stem(network.neurons, k + 1) + suffix)
        tsv.write_triples(path, network.layers[k])

    workers = min(network.depth, len(os.sched_getaffinity(0)))
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(write, k) for k in range(network.depth)]
        for future in progress(futures, "writing layers"):
            future.result()
