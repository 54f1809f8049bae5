"""The CPU backend: a fused numba kernel per layer, parallel over rows on every core.

One pass per row does the sparse product with a dense accumulator, adds the bias where
the product is non-zero, applies ReLU and the clamp, writes the surviving entries in
column order and a hash of the row (used to find duplicate rows without another pass).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..challenge import YMAX
from ..network import VALUE_DTYPE, Network

CHUNKS_PER_THREAD = 4
"""Rows are cut into this many chunks of equal work per thread, for balance."""

SPARSE_ROW_FRACTION = 8
"""A row whose output can touch fewer than N / this many columns keeps a list of touched
columns (and sorts it) instead of scanning the whole dense accumulator."""

_kernels = None


def _compile():
    """Return the numba kernels, compiled on first use (cached on disk by numba)."""
    global _kernels
    if _kernels is not None:
        return _kernels
    import numba
    from numba import njit, prange

    @njit(cache=True, inline="always")
    def mix(column, value_bits):
        # splitmix64 finaliser over (column, value): rows are summed hashes of their entries
        x = (np.uint64(column) << np.uint64(32)) ^ np.uint64(value_bits)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))

    @njit(cache=True, inline="always")
    def activate(z, bias, ymax):
        # the challenge's rule: bias only where the product is non-zero, then ReLU and clamp
        if z == 0:
            return z
        return min(max(z + bias, np.float32(0)), ymax)

    @njit(parallel=True, cache=True, nogil=True)
    def layer(y_ptr, y_col, y_val, w_ptr, w_col, w_val, neurons, bias, ymax, bounds):
        rows = y_ptr.size - 1
        chunks = bounds.size - 1
        counts = np.zeros(rows, np.int64)
        hashes = np.zeros(rows, np.uint64)
        products = np.zeros(chunks, np.int64)
        out_col = [np.empty(0, np.int32) for _ in range(chunks)]
        out_val = [np.empty(0, np.float32) for _ in range(chunks)]
        for chunk in prange(chunks):
            first, last = bounds[chunk], bounds[chunk + 1]
            reach = np.empty(last - first, np.int64)
            capacity = 0
            for r in range(first, last):
                touched = 0
                for k in range(y_ptr[r], y_ptr[r + 1]):
                    touched += w_ptr[y_col[k] + 1] - w_ptr[y_col[k]]
                reach[r - first] = touched
                products[chunk] += touched
                capacity += min(touched, neurons)
            cols = np.empty(capacity, np.int32)
            vals = np.empty(capacity, np.float32)
            accumulator = np.zeros(neurons, np.float32)
            marked = np.zeros(neurons, np.bool_)
            touched_list = np.empty(neurons, np.int32)
            position = 0
            for r in range(first, last):
                sparse_row = reach[r - first] * SPARSE_ROW_FRACTION < neurons
                listed = 0
                for k in range(y_ptr[r], y_ptr[r + 1]):
                    i = y_col[k]
                    v = y_val[k]
                    for q in range(w_ptr[i], w_ptr[i + 1]):
                        j = w_col[q]
                        if sparse_row and not marked[j]:
                            marked[j] = True
                            touched_list[listed] = j
                            listed += 1
                        accumulator[j] += v * w_val[q]
                start = position
                row_hash = np.uint64(0)
                if sparse_row:
                    touched_list[:listed].sort()
                span = listed if sparse_row else neurons
                for s in range(span):
                    j = touched_list[s] if sparse_row else s
                    y = activate(accumulator[j], bias, ymax)
                    accumulator[j] = 0
                    marked[j] = False
                    if y > 0:
                        cols[position] = j
                        vals[position] = y
                        row_hash += mix(j, np.float32(y).view(np.uint32))
                        position += 1
                counts[r] = position - start
                hashes[r] = row_hash
            out_col[chunk] = cols[:position]
            out_val[chunk] = vals[:position]
        return counts, hashes, out_col, out_val, products.sum()

    @njit(cache=True)
    def duplicate_groups(y_ptr, y_col, y_val, hashes):
        # group[r] = first row identical to r; equal hashes are confirmed entry by entry
        rows = hashes.size
        order = np.argsort(hashes, kind="mergesort")
        group = np.arange(rows)
        s = 0
        while s < rows:
            e = s + 1
            while e < rows and hashes[order[e]] == hashes[order[s]]:
                e += 1
            for a in range(s + 1, e):
                ra = order[a]
                for b in range(s, a):
                    rb = order[b]
                    if group[rb] != rb:
                        continue
                    la, lb = y_ptr[ra + 1] - y_ptr[ra], y_ptr[rb + 1] - y_ptr[rb]
                    same = la == lb
                    k = 0
                    while same and k < la:
                        same = (y_col[y_ptr[ra] + k] == y_col[y_ptr[rb] + k]
                                and y_val[y_ptr[ra] + k] == y_val[y_ptr[rb] + k])
                        k += 1
                    if same:
                        group[ra] = rb
                        break
            s = e
        return group

    _kernels = (layer, duplicate_groups, numba)
    return _kernels


@dataclass
class ActiveRows:
    """Distinct non-zero rows, the image ids still active, and which row each one equals."""

    values: sp.csr_matrix
    hashes: np.ndarray
    images: np.ndarray
    which: np.ndarray


class CpuEngine:
    name = "cpu"

    def __init__(self, threads: int | None = None):
        self.threads = threads or len(os.sched_getaffinity(0))
        self.device = f"CPU, {self.threads} threads"
        self.network: Network | None = None
        self.multiply_adds = 0

    def load_network(self, network: Network) -> None:
        self.network = network
        self.bias = VALUE_DTYPE(network.bias)
        self.multiply_adds = 0

    def load_features(self, features: sp.csr_matrix) -> ActiveRows:
        features = sp.csr_matrix(features, dtype=VALUE_DTYPE)
        features.sort_indices()
        live = np.flatnonzero(np.diff(features.indptr))
        values = features[live]
        self._warm_up()
        return ActiveRows(values, np.zeros(live.size, np.uint64), live,
                          np.arange(live.size))

    def _warm_up(self) -> None:
        """Compile (or load from numba's cache) every kernel before the timed region."""
        identity = sp.identity(2, dtype=VALUE_DTYPE, format="csr")
        rows = ActiveRows(sp.csr_matrix(np.ones((2, 2), VALUE_DTYPE)), np.zeros(2, np.uint64),
                          np.arange(2), np.arange(2))
        saved = self.network, self.bias, self.multiply_adds
        self.network, self.bias = Network(2, [identity], 0.0), VALUE_DTYPE(0)
        self.merge_duplicates(self.layer(rows, 0))
        self.network, self.bias, self.multiply_adds = saved

    def _bounds(self, values: sp.csr_matrix, layer: sp.csr_matrix) -> np.ndarray:
        """Return chunk boundaries over rows that give each chunk about the same products."""
        rows = values.shape[0]
        if values.nnz == 0:
            return np.array([0, rows], np.int64)
        degree = np.diff(layer.indptr)
        # every active row is non-empty, so reduceat sees no empty segment
        work = np.cumsum(np.add.reduceat(degree[values.indices], values.indptr[:-1]))
        chunks = max(1, min(rows, self.threads * CHUNKS_PER_THREAD))
        inner = np.searchsorted(work, np.linspace(0, work[-1], chunks + 1)[1:-1]) + 1
        return np.unique(np.concatenate(([0], inner, [rows]))).astype(np.int64)

    def layer(self, rows: ActiveRows, index: int) -> ActiveRows:
        weights = self.network.layers[index]
        values = rows.values
        kernel, _, numba = _compile()
        numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
        counts, hashes, cols, vals, products = kernel(
            values.indptr, values.indices, values.data, weights.indptr, weights.indices,
            weights.data, np.int64(values.shape[1]), self.bias, VALUE_DTYPE(YMAX),
            self._bounds(values, weights))
        self.multiply_adds += int(products)
        indptr = np.zeros(counts.size + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        result = sp.csr_matrix((np.concatenate(vals), np.concatenate(cols), indptr),
                               shape=values.shape)
        return ActiveRows(result, hashes, rows.images, rows.which)

    def prune(self, rows: ActiveRows) -> ActiveRows:
        alive = np.diff(rows.values.indptr) > 0
        if alive.all():
            return rows
        renumber = np.cumsum(alive) - 1
        keep = alive[rows.which]
        return ActiveRows(rows.values[alive], rows.hashes[alive], rows.images[keep],
                          renumber[rows.which[keep]])

    def merge_duplicates(self, rows: ActiveRows) -> ActiveRows:
        if np.unique(rows.hashes).size == rows.hashes.size:
            return rows
        _, groups, _ = _compile()
        values = rows.values
        group = groups(values.indptr, values.indices, values.data, rows.hashes)
        first = group == np.arange(group.size)
        renumber = np.cumsum(first) - 1
        return ActiveRows(values[first], rows.hashes[first], rows.images,
                          renumber[group[rows.which]])

    def counts(self, rows: ActiveRows) -> tuple[int, int]:
        return rows.images.size, rows.values.shape[0]

    def categories(self, rows: ActiveRows) -> np.ndarray:
        return np.sort(rows.images) + 1

    def synchronize(self) -> None:
        pass
