"""The CUDA backend gives exactly the CPU backend's results (marked gpu: needs CuPy and a GPU).

Weights come from {+-0.5, +-1, +-2} and biases like +0.5 / -1.5, so float32 sums are exact
in any order; every shortcut (distinct columns, row merging, retiring saturated rows,
streaming wide rows, batches) is checked on inputs where it applies and where it does not.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import (
    OFFICIAL,
    circulant_first_layer,
    permuted_inputs,
    random_features,
    random_network,
    rotation_network,
)

from spdnn import challenge, generate
from spdnn.backends import cuda_available
from spdnn.backends.cpu import CpuEngine
from spdnn.infer import infer
from spdnn.network import Network

pytestmark = pytest.mark.gpu

if not cuda_available():
    pytest.skip("needs CuPy and a usable CUDA GPU", allow_module_level=True)

from spdnn.backends.cuda import CudaEngine, pattern_shifted, pattern_vector

DEVICE_DATA = Path(__file__).resolve().parents[1] / ".device-data" / "graphchallenge-1024"


def assert_same(network: Network, features, engine: CudaEngine, layers: int | None = None):
    """Check categories and per-layer active rows of `engine` against the CPU backend."""
    expected = infer(network, features, CpuEngine(), layers)
    found = infer(network, features, engine, layers)
    assert np.array_equal(found.categories, expected.categories)
    assert found.active_rows == expected.active_rows
    assert 0 < found.multiply_adds or not expected.active_rows[0]
    return found


@pytest.mark.parametrize("neurons,depth,bias", [(37, 6, 0.5), (129, 5, -1.5), (64, 7, -0.5)])
def test_random_networks_match_the_cpu(rng, neurons, depth, bias):
    network = random_network(rng, neurons, depth, bias)
    assert_same(network, random_features(rng, 300, neurons), CudaEngine())


@pytest.mark.parametrize("neurons", [1024, 4096])
def test_constant_weights_with_equal_columns_match_the_cpu(rng, neurons):
    network = generate.radixnet(neurons, 24, seed=int(rng.integers(1 << 30)))
    features = generate.features(neurons, 500, seed=int(rng.integers(1 << 30)))
    engine = CudaEngine()
    found = assert_same(network, features, engine)
    assert found.multiply_adds < challenge.edges(500, network.nonzeros) // 8
    # the march built for the challenge's shape (march_fixed); at 4096 (256 distinct
    # columns) with two copies of each row, the indices then float offsets (shift 0)
    shape = {"FIXED_WIDTH": 32, "FIXED_INDEX_BYTES": 2, "FIXED_SHIFT": 5,
             "CONSTANT_WEIGHTS": 1, "CHUNK_MAJOR": 1}
    if neurons == 4096:
        shape.update(FIXED_SHIFT=0, COPY_STRIDE=256)
    assert engine._march_shape[3] == shape
    assert found.active_rows[engine.march_from] > 0


def kinds(engine: CudaEngine, depth: int) -> list[str]:
    return [engine.kernel_kind(index) for index in range(depth)]


def test_counting_first_layer_and_pattern_layers_match_the_cpu(rng):
    # RadiX-Net, binary features: the first layer counts, the first block replays a pattern
    network = generate.radixnet(4096, 14, seed=int(rng.integers(1 << 30)))
    features = generate.features(4096, 700, seed=int(rng.integers(1 << 30)))
    engine = CudaEngine()
    assert_same(network, features, engine)
    assert kinds(engine, 10) == ["first"] + ["run"] * 7 + ["tile"] * 2
    assert engine.feature_index.itemsize == 2
    assert engine._first.mask_bytes == 2     # images about 10% on: folded masks are fewer bytes


@pytest.mark.parametrize("row_warps", [1, 2, 4, 16])
@pytest.mark.parametrize("folded", [False, True])
def test_counting_first_layer_matches_the_cpu_in_any_row_groups(rng, monkeypatch, row_warps,
                                                                folded):
    # the first layer's groups of row_warps warps take their rows each on its own; on the
    # grid of one multiprocessor a group gets more than the 32 rows it accounts at once;
    # the features as column indices and as folded bits
    network = generate.radixnet(1024, 3, seed=int(rng.integers(1 << 30)))
    features = generate.features(1024, 3000, seed=int(rng.integers(1 << 30)))
    chosen = CudaEngine._first_layer

    def forced(self, values, row_features):
        first = chosen(self, values, row_features)
        return first and dataclasses.replace(first, row_warps=row_warps,
                                             mask_bytes=first.mask_bytes if folded else 0)

    monkeypatch.setattr(CudaEngine, "_first_layer", forced)
    engine = CudaEngine()
    engine.multiprocessors = 1
    assert_same(network, features, engine)
    assert engine.kernel_kind(0) == "first" and engine._first.row_warps == row_warps
    assert engine.layers[0].layout.circulant
    assert engine._first.mask_bytes == (2 if folded else 0)
    assert engine._first.rows_at_once == (2 if folded and row_warps == 1 else 1)  # 64 outputs


def test_counting_first_layer_without_a_circulant_fanout_matches_the_cpu(rng):
    # the first layer's inputs shuffled: the counting kernel reads the fanout per feature
    network = permuted_inputs(generate.radixnet(4096, 4, seed=int(rng.integers(1 << 30))), rng)
    features = generate.features(4096, 700, seed=int(rng.integers(1 << 30)))
    engine = CudaEngine()
    assert_same(network, features, engine)
    assert engine.kernel_kind(0) == "first" and not engine.layers[0].layout.circulant

def test_counting_first_layer_with_outputs_not_a_multiple_of_4_matches_the_cpu(rng):
    # one weight value in the first layer, an odd count of distinct columns: the kernel
    # writes its outputs one by one (VEC = 1) rather than 4 at once
    network = random_network(rng, 1001, 4, -0.5, per_column=(3, 4))
    network.layers[0].data[:] = 0.5
    features = random_features(rng, 400, 1001, density=0.05)
    engine = CudaEngine()
    assert_same(network, features, engine)
    assert engine.kernel_kind(0) == "first" and engine.layers[0].layout.outputs % 4 != 0


@pytest.mark.parametrize("neurons,outputs,density,bias,rows,mask_bytes,at_once", [
    (512, 128, 0.2, -3.5, 3000, 1, 1), (512, 128, 0.02, -1.0, 3000, 0, 1),
    (500, 100, 0.2, -4.0, 3000, 1, 1), (960, 80, 0.3, -10.5, 1000, 2, 1),
    (2048, 64, 0.9, -60.5, 400, 4, 1), (2016, 32, 0.9, -117.5, 400, 0, 1),
    (128, 8, 0.3, -10.5, 777, 2, 16)])
def test_circulant_first_layer_with_shifts_of_every_alignment_matches_the_cpu(
        rng, neurons, outputs, density, bias, rows, mask_bytes, at_once):
    # columns sum the counts of (d - s) mod outputs for s in 0, 1, 2, 3, not only
    # RadiX-Net's 0 and 1: each shift wraps at another column, and a lane's 4 outputs
    # straddle it at every alignment. The features are folded into masks of `mask_bytes`
    # bytes a slot where that is fewer bytes than their indices (0: indices): 4 and 5
    # planes in masks of a byte, 12 planes in 16 bits, 32 planes in 32 bits with images
    # 90% on (counts of about 115 of at most 128), and 63 planes, too many for a mask
    # (indices). With masks and few outputs a warp takes `at_once` rows side by side (8
    # outputs: 16 rows of 2 lanes). The bias lets about half the rows through the first
    # layer, so a wrong count changes which
    network = circulant_first_layer(rng, [0, 1, 2, 3], neurons, outputs, bias=bias)
    features = random_features(rng, rows, network.neurons, density=density)
    engine = CudaEngine()
    found = assert_same(network, features, engine)
    assert engine.kernel_kind(0) == "first" and engine.layers[0].layout.circulant
    assert engine._first.mask_bytes == mask_bytes
    assert engine._first.rows_at_once == at_once
    assert found.active_rows[-1] < found.active_rows[0] < 0.8 * rows


@pytest.mark.parametrize("bias", [0.0, 0.5])
def test_subnormal_values_match_the_cpu(rng, bias):
    # first-layer weights 2^-130: every product and sum of the first layer is subnormal
    # (too small for the counting kernel, so layer.cu takes it), and with bias 0 the
    # values of the pattern and march layers after it stay subnormal too. CuPy builds
    # kernels with -ftz=true, which would flush them to zero and end every row on the GPU
    # (kernels/ieee.cuh keeps them, as the CPU does)
    network = generate.radixnet(1024, 12, seed=int(rng.integers(1 << 30)))
    layers = [sp.csr_matrix(layer, dtype=np.float32, copy=True) for layer in network.layers]
    layers[0].data[:] = np.float32(2.0 ** -130)
    features = generate.features(1024, 2000, seed=int(rng.integers(1 << 30)))
    engine = CudaEngine()
    found = assert_same(Network(1024, layers, bias), features, engine)
    assert kinds(engine, 3) == ["tile", "run", "run"] and found.active_rows[-1] > 1000


def test_networks_wider_than_16_bit_indices_match_the_cpu(rng):
    neurons = (1 << 16) + 37         # feature and weight indices take 32 bits
    network = random_network(rng, neurons, 2, -0.5, per_column=(1, 4))
    engine = CudaEngine()
    assert_same(network, random_features(rng, 60, neurons, density=0.01), engine)
    assert engine.feature_index.itemsize == 4


def test_fast_kernels_step_aside_where_their_conditions_fail(rng):
    network = generate.radixnet(1024, 9, seed=int(rng.integers(1 << 30)))
    binary = generate.features(1024, 400, seed=int(rng.integers(1 << 30)))
    for value in (0.75, None):              # not a power of two; two different values
        features = binary.copy()
        features.data[:] = value if value is not None else rng.choice([0.5, 1.0], features.nnz)
        engine = CudaEngine()
        assert_same(network, features, engine)
        assert kinds(engine, 3) == ["tile", "run", "run"]
    # weights 0.3 (no power of two): sums depend on their order, the pattern keeps it,
    # in a run and layer by layer
    scaled = Network(1024, [sp.csr_matrix(layer * np.float32(0.3), dtype=np.float32)
                            for layer in network.layers], network.bias)
    features = binary.copy()
    features.data[:] = rng.uniform(0.5, 4.0, features.nnz).astype(np.float32)
    for runs in (True, False):
        engine = CudaEngine(runs=runs)
        assert_same(scaled, features, engine)
        assert kinds(engine, 3) == ["tile"] + ["run" if runs else "pattern"] * 2


@pytest.mark.parametrize("runs", [False, True])
@pytest.mark.parametrize("neurons", [1024, 4096])
def test_pattern_layers_with_many_rows_per_warp_match_the_cpu(rng, neurons, runs):
    # 20000 rows: each warp of the pattern kernel takes its rows 4, 2 and 1 at a time (at
    # 1024, 64 distinct outputs a lane at a time) or 2 and 1 (at 4096, 256 distinct outputs
    # 4 a lane); weights 0.07 and uneven features make every sum depend on its order. With
    # runs, the run kernel takes layers 1-5 (and layer 6 at 4096 goes alone: runs are odd)
    network = generate.radixnet(neurons, 7, seed=int(rng.integers(1 << 30)))
    layers = [sp.csr_matrix(layer, dtype=np.float32) for layer in network.layers]
    for layer in layers:
        layer.data[:] = np.float32(0.07)
    features = generate.features(neurons, 20000, seed=int(rng.integers(1 << 30)))
    features.data[:] = rng.uniform(0.5, 4.0, features.nnz).astype(np.float32)
    engine = CudaEngine(runs=runs)
    found = assert_same(Network(neurons, layers, network.bias), features, engine)
    assert kinds(engine, 3) == ["tile"] + ["run" if runs else "pattern"] * 2
    assert pattern_vector(engine.layers[1].layout) == (1 if neurons == 1024 else 4)
    assert 15000 < found.active_rows[-1] < found.active_rows[0]


def test_pattern_layer_with_scattered_inputs_matches_the_cpu(rng):
    # the neurons between layers 2 and 3 relabelled (the same function): the sources of
    # a lane's 4 outputs are no longer 4 consecutive inputs, so it reads them one by one
    network = generate.radixnet(4096, 5, seed=int(rng.integers(1 << 30)))
    layers = [sp.csr_matrix(layer, dtype=np.float32) for layer in network.layers]
    relabel = rng.permutation(4096)
    layers[1], layers[2] = layers[1][:, relabel], layers[2][relabel, :]
    features = generate.features(4096, 3000, seed=int(rng.integers(1 << 30)))
    engine = CudaEngine()
    assert_same(Network(4096, layers, network.bias), features, engine)
    layout = engine.layers[1].layout
    assert engine.kernel_kind(1) == "pattern" and pattern_vector(layout) == 4
    assert np.mean(np.diff(layout.sources, axis=1) == 1) < 0.5


def test_pattern_layers_with_rotated_sources_match_the_cpu(rng):
    # the sources computed from each layer's shift: odd (inputs one by one, a lane's 4
    # outputs straddling the wrap), 2 (8-byte loads, straddling too) and multiples of 4
    # (16-byte loads); weight 0.17 and uneven features make every sum depend on its order
    network = rotation_network(rng, [5, 2, 12, 127, 1, 8])
    features = random_features(rng, 5000, network.neurons)
    features.data[:] = rng.uniform(0.5, 4.0, features.nnz).astype(np.float32)
    engine = CudaEngine(runs=False)
    found = assert_same(network, features, engine)
    assert kinds(engine, 7)[1:] == ["pattern"] * 6
    assert all(pattern_shifted(engine.layers[index].layout) for index in range(1, 7))
    assert 0 < found.active_rows[-1] < found.active_rows[0]     # rows died, some are left


@pytest.mark.parametrize("blocks,copies,shifts,row_threads", [
    (16, 4, [1, 2, 3, 4, 5], 4),
    (128, 4, [5, 2, 12, 127, 1, 8, 63, 3, 4, 32, 16, 2, 7, 1, 100, 6, 9], 16),
    (1024, 1, [511, 4, 2, 999, 8], 32),
    (4096, 1, [4, 2047, 1, 3, 6], 128)])
def test_runs_of_rotation_layers_match_the_cpu(rng, blocks, copies, shifts, row_threads):
    # rows 16 to 4096 floats wide (groups of 4 to 256 threads, 4 outputs of 4 a thread at
    # 4096); every alignment of shift; weight 2 and bias -10: many rows die and the rest
    # saturate and retire inside the run. With 17 rotations the run is cut at 15 layers
    # and goes past the end of the first graph (8 layers); a depth inside it cuts it too.
    # (A shift of half the blocks would make columns d and d + shift equal: no rotation.)
    network = rotation_network(rng, shifts, blocks=blocks, copies=copies, weight=2.0, bias=-10.0)
    features = random_features(rng, 3000 if blocks < 4096 else 800, network.neurons)
    features.data[:] = rng.uniform(0.5, 4.0, features.nnz).astype(np.float32)
    for depth in (len(shifts) + 1, 4):
        expected = infer(network, features, CpuEngine(), depth)
        assert expected.active_rows[-1] < expected.active_rows[1]
        for engine in (CudaEngine(), CudaEngine(graphs=False)):
            found = infer(network, features, engine, depth)
            assert np.array_equal(found.categories, expected.categories)
            assert found.active_rows == expected.active_rows
    assert engine.kernel_kind(1) == "run" and engine._run_shapes[1][1][1] == row_threads
    assert engine.launch_end(1, 100) == min(16, len(shifts) + 1 - (len(shifts) % 2 == 0))


@pytest.mark.parametrize("blocks,row_threads", [(1024, 32), (4096, 128)])
def test_runs_over_mostly_zero_rows_match_the_cpu(rng, blocks, row_threads):
    # sparse features: 85-99% of the run's outputs read two zeros (a shortcut for those
    # was tried, docs/gpu-notes.md version 17), and each layer halves the sums and takes
    # 1/16 off, so that rows die over the last layers, each where its values say
    shifts = [int(s) for s in rng.choice(np.arange(1, blocks // 2), 6, replace=False)]
    network = rotation_network(rng, shifts, blocks=blocks, copies=1, weight=0.5, bias=-0.0625)
    features = random_features(rng, 2000, network.neurons, density=0.01)
    engine = CudaEngine()
    found = assert_same(network, features, engine)
    assert engine.kernel_kind(1) == "run" and engine._run_shapes[1][1][1] == row_threads
    assert found.active_rows[-1] < found.active_rows[0]


def test_runs_with_a_positive_bias_add_it_to_non_zero_sums_only(rng):
    # 19-77% of the run's sums are zero (two zero inputs); with a positive bias they must
    # stay zero, so run.cu tests each sum (with a negative bias it need not: a zero sum
    # then activates to 0 by itself)
    network = rotation_network(rng, [5, 9, 3, 17, 6], blocks=64, copies=1, weight=0.5, bias=0.25)
    features = random_features(rng, 2000, network.neurons, density=0.05)
    engine = CudaEngine()
    assert_same(network, features, engine)
    assert engine.kernel_kind(1) == "run" and engine._run_shapes[1][1][1] == 8


@pytest.mark.parametrize("weight,copies", [(2.0, 1), (1.1, 2)])
def test_runs_over_zero_and_ymax_rows_match_the_cpu(rng, weight, copies):
    # rows of 4096 floats (128 threads a row: run.cu's queue of quads), most inputs 0 or
    # YMAX after the first layers, with sums exact in any order (2 entries a column at
    # weight 2) and not (4 at 1.1); a shortcut for quads of such inputs was tried
    # (docs/gpu-notes.md version 18)
    shifts = [int(s) for s in rng.choice(np.arange(1, 2048), 6, replace=False)]
    network = rotation_network(rng, shifts, blocks=4096, copies=copies, weight=weight, bias=-1.0)
    features = random_features(rng, 1500, network.neurons, density=0.02)
    engine = CudaEngine()
    found = assert_same(network, features, engine)
    assert engine.kernel_kind(1) == "run" and engine._run_shapes[1][1][1] == 128
    assert found.active_rows[-1] > 0


def test_saturated_rows_retire_only_when_later_layers_keep_them(rng):
    # every weight 1: rows saturate at once; layer 4 cannot keep an all-YMAX row
    neurons = 48
    full = sp.csr_matrix(np.ones((neurons, neurons), np.float32))
    breaking = np.ones((neurons, neurons), np.float32)
    breaking[:, 5] = -1.0
    layers = [full, full, full, sp.csr_matrix(breaking), full, full]
    network = Network(neurons, layers, -1.5)
    features = random_features(rng, 200, neurons, density=0.05)
    for layers_run in (3, 6):
        assert_same(network, features, CudaEngine(), layers_run)


def test_rows_wider_than_shared_memory_stream_in_passes(rng):
    network = random_network(rng, 300, 4, -0.5)
    features = random_features(rng, 120, 300)
    assert_same(network, features, CudaEngine(tile_bytes=1024))      # 256 floats: every layer wide
    merged = generate.radixnet(256, 6, seed=5)
    assert_same(merged, random_features(rng, 120, 256, 0.1), CudaEngine(tile_bytes=2048))


def test_batches_and_streamed_weights_give_the_same_answer(rng):
    network = random_network(rng, 70, 5, 0.5)
    features = random_features(rng, 400, 70)
    assert_same(network, features, CudaEngine(batch_rows=37))
    assert_same(network, features, CudaEngine(resident_weights=False))


def test_graph_replays_and_single_launches_agree(rng):
    network = generate.radixnet(1024, 40, seed=int(rng.integers(1 << 30)))
    features = generate.features(1024, 900, seed=int(rng.integers(1 << 30)))
    engine = CudaEngine(batch_rows=400)                 # three batches, each with its graphs
    first = assert_same(network, features, engine)
    again = infer(network, features, engine)             # the captured graphs replayed
    assert np.array_equal(first.categories, again.categories)
    assert first.active_rows == again.active_rows
    assert_same(network, features, CudaEngine(graphs=False))
    assert_same(network, features, CudaEngine(march=False))


def test_graphs_captured_ahead_read_what_their_first_layer_will_hold(rng):
    # marching may start at layer 1 here, so the first graph holds one layer and every later
    # one starts on the other buffer pair; stale values in both must never be read
    network = random_network(rng, 80, 12, 0.5)
    features = random_features(rng, 300, 80)
    engine = CudaEngine(march=False)
    engine.load_network(network)
    loaded = engine.load_features(features)
    assert engine.march_from == 1
    for buffer in loaded.buffers[:2]:
        buffer.fill(np.nan)
    assert_same(network, features, engine)          # the same features: loaded as they are


@pytest.mark.parametrize("per_column", [(0, 12), (20, 45)])
def test_marched_layers_match_the_cpu_for_any_weights(rng, per_column):
    # mixed weights and entries per column (some none; up to 32 a column's index loads
    # are issued at once, past it one by one), rows wider than a tile
    network = random_network(rng, 251, 7, 0.5, per_column=per_column)
    features = random_features(rng, 500, 251)
    engine = CudaEngine(tile_bytes=512)
    assert_same(network, features, engine)
    assert engine.march_from == 1            # every layer after the first marches


@pytest.mark.parametrize("tile_bytes", [512, None])
def test_marched_layers_of_one_width_match_the_cpu(rng, tile_bytes):
    # 16 entries in every column of every layer: the march is built with the width, the
    # index size and the shift fixed (march_fixed), on raw columns and on tile offsets;
    # the weights still vary (RadiX-Net's constant ones: the test above); the indices are
    # read from chunk-major copies (two 16-byte chunks a column), as float offsets into two
    # copies of each row (251 columns: a last read of fewer lanes)
    network = random_network(rng, 251, 7, -0.5, per_column=(16, 17))
    features = random_features(rng, 500, 251)
    engine = CudaEngine() if tile_bytes is None else CudaEngine(tile_bytes=tile_bytes)
    found = assert_same(network, features, engine)
    assert engine.march_from == 1 and found.active_rows[-1] > 0
    assert engine._march_shape[3] == {"FIXED_WIDTH": 16, "FIXED_INDEX_BYTES": 2,
                                      "FIXED_SHIFT": 0, "CHUNK_MAJOR": 1, "COPY_STRIDE": 256}


def test_a_march_launched_on_too_many_rows_leaves_them_to_the_tiles(rng, monkeypatch):
    # the first march is launched before the row count is known; past MARCH_ROWS it must
    # do nothing, and the layers then run by tiles
    from spdnn.backends import cuda

    network = random_network(rng, 97, 6, 0.5)
    features = random_features(rng, 400, 97)
    engine = CudaEngine()
    monkeypatch.setattr(cuda, "MARCH_ROWS", 10)
    found = assert_same(network, features, engine)
    assert engine.march_from == 1 and found.active_rows[0] > 10
    # launched right behind the first layer, it is not launched again from there
    marches = []
    original = CudaEngine._march

    def spy(self, batch, first, end):
        marches.append(first)
        original(self, batch, first, end)

    monkeypatch.setattr(CudaEngine, "_march", spy)
    again = infer(network, features, engine)
    assert np.array_equal(again.categories, found.categories) and marches == [1]


def test_categories_listed_ahead_serve_only_where_no_row_is_left(rng, monkeypatch):
    # the list launched right after the last layers serves where every row retired or
    # died; where rows are still active it steps aside and the list is made again
    made = []
    original = CudaEngine._list

    def spy(self, batch, alive, rows_left=None, report_left=0):
        made.append("ahead" if rows_left is not None else "now")
        original(self, batch, alive, rows_left, report_left)

    monkeypatch.setattr(CudaEngine, "_list", spy)
    neurons = 48
    saturating = Network(neurons, [sp.csr_matrix(np.ones((neurons, neurons), np.float32))] * 3,
                         -1.5)
    for network, expected in ((saturating, ["ahead"]),
                              (random_network(rng, 61, 5, 0.5), ["ahead", "now"])):
        features = random_features(rng, 200, network.neurons, density=0.05)
        engine = CudaEngine()
        found = assert_same(network, features, engine)
        made.clear()
        again = infer(network, features, engine)   # the same features: no warm-up this time
        assert np.array_equal(again.categories, found.categories) and made == expected


def test_a_march_after_a_merge_learns_the_merged_count(rng, monkeypatch):
    # 20 copies of each row: hundreds of rows reach the merge after layer 31, at most 30
    # leave it, and the march from layer 32 must go by the merged count, not by the one
    # the list launched ahead reported before the merge
    from spdnn.backends import cuda

    network = random_network(rng, 64, 40, 0.5)
    distinct = random_features(rng, 30, 64, duplicates=False)
    features = sp.csr_matrix(sp.vstack([distinct] * 20))
    monkeypatch.setattr(cuda, "MARCH_ROWS", 40)
    engine = CudaEngine()
    found = assert_same(network, features, engine)
    assert engine.march_from == 1
    assert found.distinct_rows[30] > 40 >= found.distinct_rows[31] > 0


def test_categories_of_many_images_are_listed_by_many_blocks(rng):
    # 40000 images: 40 blocks of the list kernel, its last block scanning two words a thread
    network = random_network(rng, 32, 3, -0.5)
    features = random_features(rng, 40000, 32, density=0.1)
    found = assert_same(network, features, CudaEngine())
    assert 0 < found.categories.size < 40000


def test_no_live_rows_and_one_layer(rng):
    network = random_network(rng, 20, 1, -0.5)
    assert infer(network, sp.csr_matrix((5, 20), dtype=np.float32), CudaEngine()).categories.size == 0
    assert_same(network, random_features(rng, 30, 20), CudaEngine())


def test_one_network_on_the_gpu_serves_several_depths(rng):
    network = generate.radixnet(256, 40, seed=9)
    features = generate.features(256, 300, seed=4)
    engine = CudaEngine()
    for layers in (12, 40, 25):
        assert_same(network, features, engine, layers)


def test_official_1024_files_give_the_truth():
    from spdnn.io import tsv

    data = next((d for d in (OFFICIAL, DEVICE_DATA) if (d / "neuron1024").is_dir()), None)
    if data is None:
        pytest.skip(f"official N = 1024 files not found at {OFFICIAL} or {DEVICE_DATA}")
    layers = [tsv.read_weights(data / "neuron1024" / f"n1024-l{k}.tsv.gz", 1024)
              for k in range(1, 121)]
    network = Network(1024, layers, challenge.default_bias(1024))
    features = tsv.read_features(data / "sparse-images-1024-first600.tsv.gz", 1024)
    truth = tsv.read_categories(data / "neuron1024-l120-categories-first600.tsv")
    result = assert_same(network, features, CudaEngine())
    assert np.array_equal(result.categories, truth)
