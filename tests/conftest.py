"""Shared fixtures: fresh random seeds (printed), the official files, a dense reference."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from spdnn.network import Network

SHARED = Path(__file__).resolve().parents[2] / "shared"
OFFICIAL = SHARED / "data" / "graphchallenge-1024"

EXACT_WEIGHTS = np.array([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0])
"""Weights whose float32 sums are exact in any order, so any backend must match exactly."""


@pytest.fixture
def rng(request):
    """A generator with a fresh seed, printed so that a failure can be replayed."""
    seed = int(os.environ.get("SPDNN_TEST_SEED", secrets.randbits(32)))
    print(f"{request.node.name}: SPDNN_TEST_SEED={seed}")
    return np.random.default_rng(seed)


@pytest.fixture
def official():
    if not (OFFICIAL / "neuron1024").is_dir():
        pytest.skip(f"official N = 1024 files not found at {OFFICIAL}")
    return OFFICIAL


def reference_categories(network: Network, features) -> np.ndarray:
    """Return 1-based categories by the challenge's semantics, dense float64, no shortcuts."""
    y = np.asarray(sp.csr_matrix(features).todense(), dtype=np.float64)
    for layer in network.layers:
        z = y @ np.asarray(layer.todense(), dtype=np.float64)
        y = np.where(z != 0, z + network.bias, 0.0)
        y = np.minimum(np.maximum(y, 0.0), 32.0)
    return np.flatnonzero(y.any(axis=1)) + 1


def random_network(rng, neurons: int, depth: int, bias: float, per_column=(1, 9)) -> Network:
    """Return layers with a varying number of non-zeros per column and mixed-sign weights."""
    layers = []
    for _ in range(depth):
        counts = np.minimum(rng.integers(*per_column, size=neurons), neurons)
        cols = np.repeat(np.arange(neurons), counts)
        rows = np.concatenate([rng.choice(neurons, c, replace=False) for c in counts])
        values = rng.choice(EXACT_WEIGHTS, size=rows.size)
        layers.append(sp.csr_matrix((values.astype(np.float32), (rows, cols)),
                                    shape=(neurons, neurons)))
    return Network(neurons, layers, bias)


def random_features(rng, rows: int, neurons: int, density=0.2, duplicates=True):
    """Return binary rows with some all-empty rows and, optionally, repeated rows.

    The last row is never empty: a TSV file cannot say that trailing images exist.
    """
    dense = (rng.random((rows, neurons)) < density).astype(np.float32)
    dense[rng.random(rows) < 0.1] = 0
    if duplicates and rows > 4:
        copies = rng.integers(0, rows, size=rows // 4)
        dense[rng.integers(0, rows, size=copies.size)] = dense[copies]
    dense[-1, rng.integers(0, neurons)] = 1
    return sp.csr_matrix(dense)


def permuted_inputs(network: Network, rng) -> Network:
    """The network with the inputs (rows) of its first layer shuffled."""
    first = network.layers[0][rng.permutation(network.neurons)]
    return Network(network.neurons, [first, *network.layers[1:]], network.bias)


def rotation_network(rng, shifts, blocks: int = 128, copies: int = 4, weight: float = 0.17,
                     bias: float = -1.0) -> Network:
    """Return a network of blocks x copies neurons whose first layer has `blocks` distinct
    columns (column j equals column j mod blocks) and whose layer k >= 1 reads, for column
    j, the `copies` neurons of class j mod blocks and those of class (j + shifts[k - 1]) mod
    blocks, alternating, all with `weight`: in layout.py's terms a pattern of two sources
    with that rotation shift."""
    neurons = blocks * copies
    rows = np.concatenate([rng.choice(neurons, 6, replace=False) for _ in range(blocks)])
    values = rng.choice(EXACT_WEIGHTS, size=rows.size).astype(np.float32)
    base = sp.csc_matrix((values, (rows, np.repeat(np.arange(blocks), 6))), (neurons, blocks))
    layers = [sp.csr_matrix(base[:, np.arange(neurons) % blocks])]
    klass = np.arange(neurons) % blocks
    for shift in shifts:
        reads = (klass[:, None] == klass[None, :]) | \
            (klass[:, None] == (klass[None, :] + shift) % blocks)
        layers.append(sp.csr_matrix(np.where(reads, np.float32(weight), np.float32(0))))
    return Network(neurons, layers, bias)


def circulant_first_layer(rng, fanout, neurons: int = 512, outputs: int = 128,
                          weight: float = 0.5, bias: float = -0.5) -> Network:
    """Return a network whose first layer is circulant in layout.py's terms (input i feeds
    the distinct columns (i + s) mod outputs for s in `fanout`, column j of W being
    distinct column j mod outputs, all with one `weight`), then a random layer."""
    inputs = np.arange(neurons)[:, None] % outputs
    column = np.arange(neurons)[None, :] % outputs
    feeds = np.zeros((neurons, neurons), bool)
    for shift in fanout:
        feeds |= (inputs + shift) % outputs == column
    first = sp.csr_matrix(np.where(feeds, np.float32(weight), np.float32(0)))
    return Network(neurons, [first, *random_network(rng, neurons, 1, bias).layers], bias)
