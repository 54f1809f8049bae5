"""numba kernels of the CPU backend, compiled on first call and cached on disk.

Imported only when the CPU backend runs, so that `spdnn --help` does not load numba.
"""

import numpy as np
from numba import njit, prange

SPARSE_ROW_FRACTION = 8
"""A row whose output can touch fewer than N / this many columns keeps a list of touched
columns (and sorts it) instead of scanning the whole dense accumulator."""


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

