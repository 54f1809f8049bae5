"""The GPU's weight layout: each layer's distinct columns in ELL, indexed into the previous
layer's distinct columns. Host code only (NumPy and numba), so it is tested without a GPU.

Identical columns of W_l (same rows, same values) give identical outputs for every input,
so each distinct column is computed once, and layer l+1 reads that one output wherever it
used any of the identical columns. Every output still sums the same terms in the same
order (ascending input neuron) as the CPU backend, so results match it bit for bit; only
the work shrinks. RadiX-Net layers have N/16 distinct columns: every layer after the first
reads and writes 16 times fewer activations. Merging is skipped for a layer when its
distinct columns would not fit in one tile row of shared memory (see `tile_rows`).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..network import VALUE_DTYPE, Network

MAX_TILE_ROWS = 32
"""A tile holds at most one warp's worth of rows: lane = row when all 32 share a column."""

INDEX_ALIGN_BYTES = 16
"""Each column's stored entries start on a 16-byte boundary, for vector loads."""

MAX_PATTERN_INPUTS = 4
"""A layer runs the pattern kernel when every column reads at most this many inputs."""
MAX_FANOUT = 64
"""The first layer's counting kernel takes inputs that feed at most this many columns."""


@dataclass
class LayerLayout:
    """One layer as the kernels read it: `outputs` distinct columns, `stride` entries each.

    `index[d, k]` is the k-th input of distinct column d as a column of the previous
    layer's distinct outputs (`inputs` of them); entries past `width` and past a column's
    own count are padding with weight 0 that repeats the column's last index (or 0).
    `weight` is set (and `values` None) when every column has `width` entries of one value.
    `classes[j]` is the distinct column that column j of W equals.

    Two shapes of constant-weight layer get kernels of their own (both None otherwise):
    `pattern` is set when every column reads its entries from a few distinct inputs in one
    shared order, entry k reading `sources[pattern[k], d]` (RadiX-Net's first block: two
    inputs, alternating); `fanout[i]` lists the columns that input i feeds, padded with
    `outputs` (the first layer, whose inputs are the features). `circulant` says that input
    i feeds exactly the columns (i + s) mod outputs for each s in fanout[0] (RadiX-Net's
    first layer, official files included): then counting a row's inputs by their index mod
    outputs gives every column's count as a sum of len(fanout[0]) of those counts.
    `shift` is set for a pattern of two sources when column d reads inputs d and
    (d + shift) mod inputs, the smaller one as sources[0] (RadiX-Net's first block).
    """

    inputs: int
    outputs: int
    width: int
    index: np.ndarray
    values: np.ndarray | None
    weight: float | None
    classes: np.ndarray
    entries: int
    """Stored non-zeros over the distinct columns: the multiply-adds for one row."""
    pattern: tuple[int, ...] | None = None
    sources: np.ndarray | None = None
    fanout: np.ndarray | None = None
    circulant: bool = False
    shift: int | None = None

    @property
    def stride(self) -> int:
        return self.index.shape[1]


def tile_rows(inputs: int, tile_floats: int) -> int:
    """Return the rows of a shared-memory tile for `inputs` columns (a power of two up to
    32), or 0 when not even one row fits (then the wide kernel streams the row)."""
    fit = min(MAX_TILE_ROWS, tile_floats // max(inputs, 1))
    return 1 << (fit.bit_length() - 1) if fit >= 1 else 0


def tile_offsets(columns: np.ndarray, rows: int) -> np.ndarray:
    """Return the shared-memory offsets of input `columns` in a tile of `rows` rows.

    Must equal `tile_offset` in kernels/layer.cu: row t of column c is at offset ^ t.
    """
    groups = 32 // rows
    columns = columns.astype(np.int64)
    return columns * rows + ((columns // groups) & (rows - 1))


def _numba():
    """Return the compiled preprocessing kernels (numba, cached on disk).

    Both walk the CSR entries in row order, which is ascending row within every column:
    the order in which the kernels (and the CPU backend) sum each column's terms.
    """
    global _kernels
    if _kernels is not None:
        return _kernels
    from numba import njit

    @njit(nogil=True, cache=True)
    def column_hashes(indptr, indices, bits, neurons):
        hashes = np.zeros(neurons, np.uint64)
        counts = np.zeros(neurons, np.int64)
        for i in range(indptr.size - 1):
            for e in range(indptr[i], indptr[i + 1]):
                j = indices[e]
                x = hashes[j] ^ (np.uint64(i) << np.uint64(32)) ^ np.uint64(bits[e])
                x ^= x >> np.uint64(30)
                x *= np.uint64(0xBF58476D1CE4E5B9)
                x ^= x >> np.uint64(27)
                x *= np.uint64(0x94D049BB133111EB)
                hashes[j] = x ^ (x >> np.uint64(31))
                counts[j] += 1
        for j in range(neurons):
            hashes[j] ^= np.uint64(counts[j]) * np.uint64(0x9E3779B97F4A7C15)
        return hashes, counts

    @njit(nogil=True, cache=True)
    def gather_columns(indptr, indices, values, classes, representatives, counts, width):
        # the ELL of every class from its representative column; ok is False when some
        # other column of a class differs from its representative
        distinct = representatives.size
        index = np.zeros((distinct, width), np.int32)
        weights = np.zeros((distinct, width), np.float32)
        position = np.zeros(classes.size, np.int64)
        for i in range(indptr.size - 1):
            for e in range(indptr[i], indptr[i + 1]):
                j = indices[e]
                d = classes[j]
                if representatives[d] == j:
                    index[d, position[j]] = i
                    weights[d, position[j]] = values[e]
                    position[j] += 1
        ok = True
        for i in range(indptr.size - 1):
            for e in range(indptr[i], indptr[i + 1]):
                j = indices[e]
                d = classes[j]
                if representatives[d] != j:
                    p = position[j]
                    if p >= counts[representatives[d]] or index[d, p] != i or \
                            weights[d, p] != values[e] or \
                            np.signbit(weights[d, p]) != np.signbit(values[e]):
                        ok = False
                    position[j] += 1
        for d in range(distinct):
            count = counts[representatives[d]]
            for k in range(count, width):     # padding: the last index again, weight 0
                index[d, k] = index[d, count - 1] if count > 0 else 0
        return index, weights, ok

    @njit(nogil=True, cache=True)
    def copy_choices(inputs, stride):
        # march_words over `inputs` (columns x entries, -1 for no column), reads of 32
        words = np.zeros_like(inputs)
        loads = np.zeros(32, np.int64)
        read_of = np.full(stride, -1, np.int64)     # the last read that took each input
        lane_of = np.zeros(stride, np.int64)        # and the lane that took it first
        read = 0
        for block in range(0, inputs.shape[0], 32):
            for k in range(inputs.shape[1]):
                loads[:] = 0
                read += 1
                for lane in range(block, block + 32):
                    word = inputs[lane, k]
                    if word < 0:
                        continue
                    if read_of[word] == read:
                        words[lane, k] = words[lane_of[word], k]
                        continue
                    read_of[word] = read
                    lane_of[word] = lane
                    second = stride + (word & ~31) + ((word * 13 + (word >> 5) * 7) & 31)
                    pick = second if loads[second & 31] < loads[word & 31] else word
                    words[lane, k] = pick
                    loads[pick & 31] += 1
        return words

    _kernels = column_hashes, gather_columns, copy_choices
    return _kernels


_kernels = None


def second_copy(words: np.ndarray, stride: int) -> np.ndarray:
    """Return where `words` of a row sit in its second copy (kernels/march.cu's second_copy):
    from `stride` on, each 32-word line turned within itself."""
    words = np.asarray(words, np.int64)
    return stride + (words & ~31) + ((words * 13 + (words >> 5) * 7) & 31)


def march_words(layers: list[np.ndarray], stride: int) -> list[np.ndarray]:
    """Return, for each of `layers` (columns x entries, input numbers; one width), the
    float offsets a two-copy march (COPY_STRIDE `stride`) reads: a warp's 32 lanes read
    entry k of 32 consecutive columns at once, and each distinct word of such a read goes,
    in lane order, to the copy (`second_copy` or not) whose bank has fewer of the read's
    words so far; lanes that read one input read one word (a broadcast)."""
    width = layers[0].shape[1]
    blocks = [-(-layer.shape[0] // 32) for layer in layers]
    padded = np.full((32 * sum(blocks), width), -1, np.int32)
    at = 0
    for layer, count in zip(layers, blocks):
        padded[at:at + layer.shape[0]] = layer
        at += 32 * count
    words = _numba()[2](padded, np.int32(stride))
    found, at = [], 0
    for layer, count in zip(layers, blocks):
        found.append(words[at:at + layer.shape[0]])
        at += 32 * count
    return found


@dataclass
class DistinctColumns:
    """One layer's distinct columns with their entries in input-neuron numbering."""

    classes: np.ndarray
    index: np.ndarray
    values: np.ndarray
    counts: np.ndarray


def distinct_columns(layer: sp.csr_matrix, merge: bool = True) -> DistinctColumns:
    """Return the distinct columns of `layer`, numbered by their first occurrence.

    Columns are grouped by a hash of their entries and every member is checked against
    its group's first column; if any check fails (a hash collision), nothing is merged.
    """
    column_hashes, gather_columns, _ = _numba()
    neurons = layer.shape[0]
    indptr = layer.indptr.astype(np.int64)
    values = layer.data.astype(VALUE_DTYPE)
    hashes, counts = column_hashes(indptr, layer.indices, values.view(np.uint32), neurons)
    width = int(counts.max(initial=0))
    if merge:
        _, first, group = np.unique(hashes, return_index=True, return_inverse=True)
        order = np.argsort(first)                # distinct columns in order of first use
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        classes = rank[group].astype(np.int32)
        representatives = first[order]
        index, weights, ok = gather_columns(indptr, layer.indices, values, classes,
                                            representatives, counts, width)
        if ok:
            return DistinctColumns(classes, index, weights, counts[representatives])
    classes = np.arange(neurons, dtype=np.int32)
    index, weights, _ = gather_columns(indptr, layer.indices, values, classes, classes, counts,
                                       width)
    return DistinctColumns(classes, index, weights, counts)


def _pad_to(array: np.ndarray, columns: int, fill_last: bool) -> np.ndarray:
    padded = np.zeros((array.shape[0], columns), array.dtype)
    padded[:, :array.shape[1]] = array
    if fill_last and array.shape[1] and columns > array.shape[1]:
        padded[:, array.shape[1]:] = array[:, -1:]
    return padded


def layer_layouts(network: Network, tile_floats: int, depth: int | None = None,
                  threads: int = 1) -> Iterator[LayerLayout]:
    """Yield the layout of each of the first `depth` layers of `network`, in order.

    Layers are independent until their indices are renumbered into the previous layer's
    distinct columns, so `threads` workers find distinct columns ahead of the renumbering.
    A layer's columns merge only when their number fits a tile row of `tile_floats`.
    """
    depth = network.depth if depth is None else depth
    neurons = network.neurons

    def find(position: int) -> DistinctColumns:
        return distinct_columns(network.layers[position])

    previous = np.arange(neurons, dtype=np.int32)     # the features: every neuron distinct
    inputs = neurons
    with ThreadPoolExecutor(max(1, threads)) as pool:
        ahead = 2 * max(1, threads)
        futures = [pool.submit(find, k) for k in range(min(depth, ahead))]
        for position in range(depth):
            found = futures[position].result()
            futures[position] = None
            if position + ahead < depth:
                futures.append(pool.submit(find, position + ahead))
            merged = found.classes.max(initial=-1) + 1 < neurons
            if merged and found.classes.max() + 1 > tile_floats:
                found = distinct_columns(network.layers[position], merge=False)
            yield _renumber(found, previous, inputs, tile_floats, first=position == 0)
            previous, inputs = found.classes, int(found.classes.max(initial=-1)) + 1


def shared_pattern(index: np.ndarray) -> tuple[tuple[int, ...], np.ndarray] | None:
    """Return (pattern, sources) when every row of `index` (a column's inputs in summing
    order) is sources[pattern[k], row] for k in order, with at most MAX_PATTERN_INPUTS
    distinct sources per row, all rows in one pattern; None otherwise."""
    outputs, width = index.shape
    if outputs == 0 or width == 0:
        return None
    _, first, pattern = np.unique(index[0], return_index=True, return_inverse=True)
    if first.size > MAX_PATTERN_INPUTS:
        return None
    order = np.argsort(first)                 # number the sources by first use
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    pattern = rank[pattern.ravel()]
    sources = index[:, np.sort(first)].T
    if not np.array_equal(sources[pattern].T, index):
        return None
    for a in range(sources.shape[0]):         # distinct sources in every row, or the
        for b in range(a):                     # row's own pattern would be another one
            if np.any(sources[a] == sources[b]):
                return None
    return tuple(int(k) for k in pattern), np.ascontiguousarray(sources, np.int32)


def rotation_shift(sources: np.ndarray, inputs: int) -> int | None:
    """Return s when `sources` (two rows) reads, for column d, inputs d and (d + s) mod
    `inputs`, the smaller one in row 0; None otherwise."""
    if sources.shape[0] != 2 or sources.shape[1] == 0 or sources.shape[1] > inputs:
        return None
    shift = int(sources[1, 0])
    if not 0 < shift < inputs:
        return None
    column = np.arange(sources.shape[1], dtype=np.int64)
    other = (column + shift) % inputs
    lower, upper = np.minimum(column, other), np.maximum(column, other)
    return shift if np.array_equal(sources[0], lower) and np.array_equal(sources[1], upper) else None


def rotation_runs(layouts: list[LayerLayout], most: int) -> list[range]:
    """Return the runs of three or more consecutive layers after the first that one
    launch of the run kernel (kernels/run.cu) may take: layers whose columns read two
    inputs by a rotation (`shift` set), all in the pattern of the run's first layer, with
    inputs and outputs multiples of 4. A longer stretch is cut into runs of `most` layers."""
    def joins(index: int, start: int | None) -> bool:
        layout = layouts[index]
        fits = layout.shift is not None and layout.inputs % 4 == 0 and layout.outputs % 4 == 0
        return fits and (start is None or (layout.pattern == layouts[start].pattern
                                           and index - start < most))

    runs, start = [], None
    for index in range(1, len(layouts) + 1):
        if start is not None and (index == len(layouts) or not joins(index, start)):
            if index - start >= 3:
                runs.append(range(start, index))
            start = None
        if start is None and index < len(layouts) and joins(index, None):
            start = index
    return runs


def input_fanout(index: np.ndarray, inputs: int) -> np.ndarray | None:
    """Return, per input, the rows of `index` that read it (padded with index.shape[0]),
    or None when some input feeds more than MAX_FANOUT rows or a row reads one twice."""
    outputs, width = index.shape
    reader = np.repeat(np.arange(outputs, dtype=np.int64), width)
    flat = index.ravel().astype(np.int64)
    pairs = np.unique(flat * outputs + reader)
    if pairs.size != flat.size:
        return None
    read = pairs // outputs
    counts = np.bincount(read, minlength=inputs)
    widest = int(counts.max(initial=0))
    if widest > MAX_FANOUT:
        return None
    fanout = np.full((inputs, max(widest, 1)), outputs, np.int32)
    starts = np.cumsum(counts) - counts
    fanout[read, np.arange(pairs.size) - starts[read]] = pairs % outputs
    return fanout


def circulant(fanout: np.ndarray, outputs: int) -> bool:
    """Return whether every input i feeds exactly the columns (i + s) mod `outputs`, s in
    fanout[0], as `input_fanout` lists them (in ascending order, padding last)."""
    if outputs < 1 or np.any(fanout[0] >= outputs):
        return False
    inputs = np.arange(fanout.shape[0], dtype=np.int64)[:, None]
    expected = np.sort((inputs + fanout[0].astype(np.int64)[None, :]) % outputs, axis=1)
    return bool(np.array_equal(expected, fanout))


def _renumber(found: DistinctColumns, previous: np.ndarray, inputs: int,
              tile_floats: int, first: bool = False) -> LayerLayout:
    """Return the kernels' layout of `found`, whose inputs are `previous`'s classes."""
    outputs, width = found.index.shape
    index = previous[found.index] if found.index.size else found.index
    shapes = {}
    raw = index
    rows = tile_rows(inputs, tile_floats)
    if rows:
        index = tile_offsets(index, rows)
    index_dtype = np.uint16 if index.max(initial=0) < 2**16 else np.uint32
    align = INDEX_ALIGN_BYTES // np.dtype(index_dtype).itemsize
    stride = max(align, -(-width // align) * align)
    uniform = bool(np.all(found.counts == width))
    real = found.values if width else np.zeros((outputs, 0), VALUE_DTYPE)
    constant = uniform and (real.size == 0 or bool(np.all(real.view(np.uint32) ==
                                                          real.view(np.uint32).flat[0])))
    if constant and width:
        if first:
            shapes["fanout"] = input_fanout(raw, inputs)
            if shapes["fanout"] is not None:
                shapes["circulant"] = circulant(shapes["fanout"], outputs)
        found_pattern = shared_pattern(raw)
        if found_pattern is not None:
            shapes["pattern"], shapes["sources"] = found_pattern
            shapes["shift"] = rotation_shift(shapes["sources"], inputs)
    return LayerLayout(
        inputs=inputs, outputs=outputs, width=width,
        index=_pad_to(index.astype(index_dtype), stride, fill_last=True),
        values=None if constant else _pad_to(found.values, stride, fill_last=False),
        weight=float(real.flat[0]) if constant and real.size else (0.0 if constant else None),
        classes=found.classes, entries=int(found.counts.sum()), **shapes)
