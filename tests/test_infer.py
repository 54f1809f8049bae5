"""The CPU backend against the dense reference: exact categories on fresh random inputs."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import random_features, random_network, reference_categories

from spdnn.backends.cpu import CpuEngine, _compile
from spdnn.infer import infer
from spdnn.network import Network


@pytest.mark.parametrize("neurons, depth, bias", [
    (37, 6, -0.5), (101, 12, 0.5), (64, 9, -1.5), (255, 5, 1.0), (3, 4, 0.25),
])
def test_cpu_matches_reference_on_random_networks(rng, neurons, depth, bias):
    network = random_network(rng, neurons, depth, bias)
    features = random_features(rng, 150, neurons)
    result = infer(network, features, CpuEngine())
    np.testing.assert_array_equal(result.categories, reference_categories(network, features))


def test_saturating_network_keeps_every_live_row(rng):
    # positive weights and a small bias drive rows to all-YMAX, where merging kicks in
    neurons = 48
    network = random_network(rng, neurons, 30, -0.25)
    for layer in network.layers:
        layer.data = np.abs(layer.data)
    features = random_features(rng, 300, neurons, density=0.3)
    result = infer(network, features, CpuEngine())
    np.testing.assert_array_equal(result.categories, reference_categories(network, features))
    assert result.distinct_rows[-1] < result.active_rows[-1]


def test_positive_bias_only_touches_nonzeros():
    # column 0 receives +1 and -1: the product is exactly zero, so the bias must not apply
    layer = sp.csr_matrix(np.array([[1, 0], [-1, 0]], dtype=np.float32))
    network = Network(2, [layer], 0.5)
    features = sp.csr_matrix(np.array([[1, 1], [1, 0]], dtype=np.float32))
    result = infer(network, features, CpuEngine())
    np.testing.assert_array_equal(result.categories, [2])
    np.testing.assert_array_equal(reference_categories(network, features), [2])


def test_clamp_at_ymax_changes_later_layers():
    # 40 -> clamped to 32, then * -1 + 33 = 1 (alive); without the clamp, -40 + 33 < 0
    grow = sp.csr_matrix(np.array([[40.0]], dtype=np.float32))
    flip = sp.csr_matrix(np.array([[-1.0]], dtype=np.float32))
    network = Network(1, [grow, flip], 33.0)
    features = sp.csr_matrix(np.array([[1.0]], dtype=np.float32))
    np.testing.assert_array_equal(infer(network, features, CpuEngine()).categories, [1])


def test_duplicate_merge_confirms_rows_when_hashes_collide(rng):
    _, groups, _ = _compile()
    rows = (rng.random((40, 16)) < 0.3).astype(np.float32)
    rows[20:] = rows[:20]
    rows[5] = rows[3] * 2  # same pattern, other values
    matrix = sp.csr_matrix(rows)
    matrix.sort_indices()
    colliding = np.zeros(40, np.uint64)  # every row claims the same hash
    group = groups(matrix.indptr, matrix.indices, matrix.data, colliding)
    for r in range(40):
        assert np.array_equal(rows[group[r]], rows[r])
        first_equal = next(q for q in range(40) if np.array_equal(rows[q], rows[r]))
        assert group[r] == first_equal


def test_rows_that_die_stay_dead_and_are_pruned(rng):
    network = random_network(rng, 50, 8, -1.5)
    features = random_features(rng, 200, 50)
    result = infer(network, features, CpuEngine())
    assert all(a >= b for a, b in zip(result.active_rows, result.active_rows[1:]))
    assert result.active_rows[-1] == result.categories.size


def test_one_thread_equals_two(rng):
    network = random_network(rng, 70, 6, -0.5)
    features = random_features(rng, 120, 70)
    one = infer(network, features, CpuEngine(threads=1)).categories
    two = infer(network, features, CpuEngine(threads=2)).categories
    np.testing.assert_array_equal(one, two)


class SpanningEngine(CpuEngine):
    """The CPU engine taking 1 to 4 layers a step, at random, as an engine does whose device
    runs several launched layers with no host step between them (infer.run_layers)."""

    def __init__(self, rng, depth: int):
        super().__init__()
        self.rng, self.depth, self.after = rng, depth, {}

    def layer_span(self, rows, index):
        end = min(self.depth, index + int(self.rng.integers(1, 5)))
        for layer in range(index, end):
            rows = self.prune(self.layer(rows, layer))
            self.after[layer + 1] = self.counts(rows)
        return rows, end

    def counts_later(self, rows, done=None):
        counts = self.counts(rows) if done is None else self.after[done]
        return lambda: counts


def test_layer_spans_give_the_same_categories_and_counts(rng):
    network = random_network(rng, 60, 14, -1.5)      # rows die over several layers
    features = random_features(rng, 200, 60)
    plain = infer(network, features, CpuEngine())
    spans = infer(network, features, SpanningEngine(rng, network.depth))
    np.testing.assert_array_equal(spans.categories, plain.categories)
    np.testing.assert_array_equal(spans.categories, reference_categories(network, features))
    assert spans.active_rows == plain.active_rows    # merges may differ, images do not
    assert len(spans.distinct_rows) == network.depth


class CollectorWatch(CpuEngine):
    """The CPU engine noting whether the garbage collector was on at each layer."""

    def __init__(self):
        super().__init__()
        self.collecting = []

    def layer(self, rows, index):
        self.collecting.append(gc.isenabled())
        return super().layer(rows, index)


def test_no_garbage_collection_while_the_clock_runs(rng):
    network = random_network(rng, 40, 5, -0.5)
    engine = CollectorWatch()
    assert gc.isenabled()
    infer(network, random_features(rng, 50, 40), engine)
    # the layers of the timed loop (the engine's warm-up runs one before, untimed)
    assert engine.collecting[-5:] == [False] * 5 and gc.isenabled()


def test_official_1024_files_give_the_truth(official):
    from spdnn.dataset import read_network
    from spdnn.io.tsv import read_categories, read_features

    network = read_network(official / "neuron1024", 1024, 120, None)
    features = read_features(official / "sparse-images-1024-first600.tsv.gz", 1024)
    truth = read_categories(official / "neuron1024-l120-categories-first600.tsv")
    result = infer(network, features, CpuEngine())
    np.testing.assert_array_equal(result.categories, truth)
    np.testing.assert_array_equal(result.categories, reference_categories(network, features))
