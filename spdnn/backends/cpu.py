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

_kernels = None


def _compile():
    """Return the numba kernels and numba itself (imported on first use)."""
    global _kernels
    if _kernels is None:
        import numba

        from . import cpu_kernels

        _kernels = (cpu_kernels.layer, cpu_kernels.duplicate_groups, numba)
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
