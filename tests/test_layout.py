"""The GPU weight layout (host code, no GPU): distinct columns, renumbering, tile offsets.

`emulate` runs the layout the way the CUDA kernels do (one float32 multiply and one add
per stored entry, in stored order) and must match the uncompressed network bit for bit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import (
    permuted_inputs,
    random_features,
    random_network,
    reference_categories,
    rotation_network,
)

from spdnn import generate
from spdnn.backends.layout import (
    MAX_PATTERN_INPUTS,
    circulant,
    distinct_columns,
    input_fanout,
    layer_layouts,
    march_words,
    rotation_runs,
    rotation_shift,
    second_copy,
    shared_pattern,
    tile_offsets,
    tile_rows,
)
from spdnn.challenge import YMAX
from spdnn.io import tsv
from spdnn.network import Network


def activate(z: np.ndarray, bias: float) -> np.ndarray:
    y = np.minimum(np.maximum(z + np.float32(bias), np.float32(0)), np.float32(YMAX))
    return np.where(z != 0, y, np.float32(0)).astype(np.float32)


def emulate(network: Network, features, tile_floats: int) -> list[np.ndarray]:
    """Return every layer's activations over the distinct columns, as the kernels compute."""
    y = features.toarray().astype(np.float32)
    out = []
    for layout in layer_layouts(network, tile_floats):
        rows = tile_rows(layout.inputs, tile_floats)
        index = layout.index[:, :layout.width].astype(np.int64)
        if rows:
            index //= rows          # the tile offset of column c is c * rows + (less than rows)
        weights = (layout.values[:, :layout.width] if layout.values is not None
                   else np.full(index.shape, layout.weight, np.float32))
        z = np.zeros((y.shape[0], layout.outputs), np.float32)
        for k in range(layout.width):
            z = z + y[:, index[:, k]] * weights[:, k]
        y = activate(z, network.bias)
        out.append((y, layout.classes))
    return out


def uncompressed(network: Network, features) -> list[np.ndarray]:
    """Return every layer's activations, each output summed over its column in row order."""
    y = features.toarray().astype(np.float32)
    out = []
    for layer in network.layers:
        columns = sp.csc_matrix(layer)
        columns.sort_indices()
        z = np.zeros((y.shape[0], layer.shape[1]), np.float32)
        for j in range(layer.shape[1]):
            acc = np.zeros(y.shape[0], np.float32)
            for k in range(columns.indptr[j], columns.indptr[j + 1]):
                acc = acc + y[:, columns.indices[k]] * columns.data[k]
            z[:, j] = acc
        y = activate(z, network.bias)
        out.append(y)
    return out


@pytest.mark.parametrize("rows", [1, 2, 4, 8, 16, 32])
def test_tile_offsets_fill_the_tile_and_loads_avoid_bank_conflicts(rows):
    inputs = 45
    columns = np.arange(inputs)
    cells = tile_offsets(columns, rows)[:, None] ^ np.arange(rows)[None, :]
    assert np.array_equal(np.sort(cells.ravel()), np.arange(inputs * rows))
    for t in range(rows):           # 32 consecutive columns of one row: 32 different banks
        for start in range(inputs - 31):
            assert np.unique(cells[start:start + 32, t] % 32).size == 32


def test_tile_rows_are_powers_of_two_that_fit():
    assert tile_rows(64, 32768) == 32
    assert tile_rows(4096, 32768) == 8
    assert tile_rows(16384, 32768) == 2
    assert tile_rows(65536, 32768) == 0
    assert tile_rows(3000, 32768) == 8


def test_radixnet_layers_have_one_distinct_column_per_sixteen():
    network = generate.radixnet(256, 12, seed=3)     # M = 16 residues, 4 levels
    for position in (0, 5, 9):
        found = distinct_columns(network.layers[position])
        assert found.index.shape == (16, 32)
        assert np.array_equal(found.classes, np.arange(256) % 16)
    # the last level links residues a and a - M/2: columns a and a + M/2 are equal too
    assert distinct_columns(network.layers[7]).index.shape == (8, 32)


def test_distinct_columns_group_exactly_the_equal_columns(rng):
    base = random_network(rng, 40, 1, -0.5, per_column=(1, 4)).layers[0].toarray()
    base[:, 10:20] = base[:, [3] * 10]                     # ten copies of column 3
    base[:, 25] = base[:, 3]
    base[5, 25] = -base[5, 25] if base[5, 25] else 2.0     # ... and a near copy
    found = distinct_columns(sp.csr_matrix(base))
    for a in range(40):
        for b in range(40):
            same = np.array_equal(base[:, a], base[:, b])
            assert (found.classes[a] == found.classes[b]) == same


@pytest.mark.parametrize("tile_floats", [1 << 15, 64, 24])
def test_layout_matches_the_uncompressed_network_bit_for_bit(rng, tile_floats):
    network = generate.radixnet(64, 9, seed=int(rng.integers(1 << 30)), bias=-0.3)
    features = random_features(rng, 50, 64, density=0.3)
    expected = uncompressed(network, features)
    for (y, classes), full in zip(emulate(network, features, tile_floats), expected):
        assert np.array_equal(y[:, classes].view(np.uint32), full.view(np.uint32))


@pytest.mark.parametrize("bias", [-0.5, 0.5, -1.5])
def test_layout_of_mixed_weights_and_counts_gives_the_reference(rng, bias):
    network = random_network(rng, 33, 5, bias, per_column=(0, 7))
    features = random_features(rng, 60, 33)
    emulated = emulate(network, features, 1 << 15)
    y, _ = emulated[-1]
    assert np.array_equal(np.flatnonzero(y.any(axis=1)) + 1,
                          reference_categories(network, features))
    for (y, classes), full in zip(emulated, uncompressed(network, features)):
        assert np.array_equal(y[:, classes], full)


def test_constant_weights_store_no_values_and_padding_has_weight_zero(rng):
    network = generate.radixnet(64, 3, seed=1)
    layouts = list(layer_layouts(network, 1 << 15))
    assert all(layout.values is None and layout.weight == 1 / 16 for layout in layouts)
    assert [layout.inputs for layout in layouts] == [64, 4, 2]   # M = 4; level 1 links a, a - 2
    mixed = random_network(rng, 20, 2, -0.5, per_column=(1, 5))
    for layout in layer_layouts(mixed, 1 << 15):
        assert layout.values is not None
        counts = (layout.values != 0).sum(axis=1)
        assert counts.sum() <= layout.entries


def test_radixnet_first_block_reads_two_inputs_in_one_alternating_order():
    network = generate.radixnet(256, 10, seed=2)      # 4 levels a block, then permuted
    layouts = list(layer_layouts(network, 1 << 15))
    for layout in layouts[1:4]:
        assert layout.pattern == (0, 1) * 16
        index = layout.index[:, :layout.width].astype(np.int64) // 32   # undo tile offsets
        assert np.array_equal(layout.sources[list(layout.pattern)].T, index)
    assert layouts[0].pattern is None and layouts[0].fanout is not None
    assert all(layout.fanout is None for layout in layouts[1:])


def test_rotation_shift_is_found_in_radixnet_and_in_rotations_only(rng):
    network = generate.radixnet(4096, 8, seed=3)
    assert [layout.shift for layout in layer_layouts(network, 1 << 15)] == \
        [None, 2, 4, 8, 16, 32, 64, 128]
    shifts = [5, 2, 12, 127, 1]
    rotated = rotation_network(rng, shifts)
    assert [layout.shift for layout in layer_layouts(rotated, 1 << 15)] == [None, *shifts]
    column = np.arange(16)
    lower, upper = np.minimum(column, (column + 3) % 16), np.maximum(column, (column + 3) % 16)
    assert rotation_shift(np.stack([lower, upper]), 16) == 3
    assert rotation_shift(np.stack([column, (column + 3) % 16]), 16) is None   # not smaller first
    assert rotation_shift(np.stack([lower, upper])[:, rng.permutation(16)], 16) is None
    assert rotation_shift(np.stack([lower, upper, upper]), 16) is None


def test_rotation_runs_are_consecutive_rotations_in_one_pattern(rng):
    layouts = list(layer_layouts(generate.radixnet(4096, 12, seed=int(rng.integers(1 << 30))),
                                 4096))
    assert rotation_runs(layouts, 15) == [range(1, 8)]      # layer 0 counts, layer 8 mixes
    assert rotation_runs(layouts, 4) == [range(1, 5), range(5, 8)]
    assert rotation_runs(layouts, 3) == [range(1, 4), range(4, 7)]    # layer 7 alone: none
    reversed_order = tuple(1 - k for k in layouts[4].pattern)
    layouts[4] = dataclasses.replace(layouts[4], pattern=reversed_order)
    assert rotation_runs(layouts, 15) == [range(1, 4), range(5, 8)]
    layouts[6] = dataclasses.replace(layouts[6], shift=None)
    assert rotation_runs(layouts, 15) == [range(1, 4)]


def test_shared_pattern_needs_one_order_of_few_distinct_inputs(rng):
    sources = np.stack([rng.permutation(50)[:20] for _ in range(3)])   # (3, 20): per column
    while np.any(sources[0] == sources[1]) or np.any(sources[0] == sources[2]) or \
            np.any(sources[1] == sources[2]):
        sources = np.stack([rng.permutation(50)[:20] for _ in range(3)])
    order = [0, 1, 1, 2, 0, 2, 1]
    index = sources[order].T
    pattern, found = shared_pattern(index)
    assert pattern == tuple(order) and np.array_equal(found, sources)
    other = index.copy()
    other[4, 2] = other[4, 0]                      # one column with another order
    assert shared_pattern(other) is None
    clash = index.copy()
    clash[7, [0, 4]] = clash[7, 1]                 # one column whose first two inputs agree
    assert shared_pattern(clash) is None
    many = rng.integers(0, 50, size=(20, 2 * MAX_PATTERN_INPUTS + 2))
    many[:, :MAX_PATTERN_INPUTS + 1] = np.arange(MAX_PATTERN_INPUTS + 1)
    assert shared_pattern(many) is None


def test_input_fanout_lists_every_column_an_input_feeds(rng):
    index = np.stack([rng.permutation(30)[:6] for _ in range(11)])       # 11 columns of 6
    fanout = input_fanout(index, 30)
    for i in range(30):
        listed = sorted(d for d in fanout[i] if d != 11)
        assert listed == sorted(np.flatnonzero((index == i).any(axis=1)).tolist())
    twice = index.copy()
    twice[3, 1] = twice[3, 0]
    assert input_fanout(twice, 30) is None


def test_radixnet_first_layer_fanout_is_circulant_until_its_inputs_move(rng):
    network = generate.radixnet(1024, 2, seed=int(rng.integers(1 << 30)))
    layout = next(layer_layouts(network, 1 << 15))
    assert layout.circulant
    shifts = layout.fanout[0].astype(np.int64)
    for i in rng.integers(0, 1024, size=50):
        assert set(layout.fanout[i]) == set(((i + shifts) % layout.outputs).tolist())
    moved = next(layer_layouts(permuted_inputs(network, rng), 1 << 15))
    assert moved.fanout is not None and not moved.circulant
    one_off = layout.fanout.copy()
    one_off[7] = np.sort((one_off[7] + 1) % layout.outputs)
    assert not circulant(one_off, layout.outputs)
    padded = np.full_like(layout.fanout, layout.outputs)      # inputs feeding no column
    assert not circulant(padded, layout.outputs)


def test_official_first_layer_fanout_is_circulant(official):
    weights = tsv.read_weights(official / "neuron1024" / "n1024-l1.tsv.gz", 1024)
    layout = next(layer_layouts(Network(1024, [weights], -0.3), 1 << 15))
    assert layout.circulant and layout.outputs == 64


@pytest.mark.parametrize("dtype,entries", [(np.uint16, 32), (np.uint16, 16), (np.uint32, 16)])
def test_chunk_major_puts_each_chunk_of_every_column_side_by_side(rng, dtype, entries):
    # the march's copy of a layer's indices (kernels/march.cu, CHUNK_MAJOR): uint4 number
    # c * columns + d holds entries of column d from c * (16 / itemsize) on, in order
    from spdnn.backends.cuda import chunk_major

    columns = 37
    index = rng.integers(0, 1 << 15, size=(columns, entries)).astype(dtype)
    copy = chunk_major(index)
    per_chunk = 16 // index.itemsize
    chunks = copy.reshape(-1, per_chunk)
    assert chunks.shape[0] == columns * entries // per_chunk
    for d in rng.integers(0, columns, size=10):
        for c in range(entries // per_chunk):
            assert np.array_equal(chunks[c * columns + d], index[d, c * per_chunk:(c + 1) * per_chunk])


def test_second_copy_turns_each_line_of_a_row_within_itself():
    for stride in (64, 256):
        places = second_copy(np.arange(stride), stride)
        assert sorted(places.tolist()) == list(range(stride, 2 * stride))
        assert np.array_equal(places // 32, np.arange(stride) // 32 + stride // 32)


def test_march_words_read_each_input_from_one_copy_with_fewer_bank_conflicts(rng):
    # the two-copy march (kernels/march.cu, COPY_STRIDE): every offset is input i in the
    # first copy or in the second, lanes of one read that read one input read one word, and
    # on RadiX-Net at 4096 (256 distinct columns) a read needs fewer wavefronts
    seed = int(rng.integers(1 << 30))
    print("radixnet seed", seed)
    network = generate.radixnet(4096, 14, seed=seed)
    layout = list(layer_layouts(network, 1 << 15))[12]
    inputs = layout.index.astype(np.int64) >> 5          # tile offsets of 32-row tiles
    assert inputs.max() < 256 and layout.outputs == 256
    words, = march_words([inputs], 256)
    assert np.all((words == inputs) | (words == second_copy(inputs, 256)))

    def wavefronts(offsets):
        reads = offsets.reshape(-1, 32, offsets.shape[1]).transpose(0, 2, 1).reshape(-1, 32)
        return np.mean([np.bincount(np.unique(read) & 31, minlength=32).max() for read in reads])

    for read, words_read in zip(inputs.reshape(-1, 32, 32).transpose(0, 2, 1).reshape(-1, 32),
                                words.reshape(-1, 32, 32).transpose(0, 2, 1).reshape(-1, 32)):
        for value in np.unique(read):
            assert len(set(words_read[read == value].tolist())) == 1
    before, after = wavefronts(inputs), wavefronts(words)
    print(f"wavefronts a read: {before:.2f} -> {after:.2f}")
    assert before > 2.8 and after < 2.3
    # several layers at once, one of columns not a multiple of 32: each as if alone
    ragged, again = march_words([inputs[:251], inputs], 256)
    assert np.all((ragged == inputs[:251]) | (ragged == second_copy(inputs[:251], 256)))
    assert np.array_equal(again, words)
