"""TSV and HDF5 round trips, on fresh random matrices."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import random_network

from spdnn.errors import InputError
from spdnn.io import h5, tsv


@pytest.mark.parametrize("suffix", [".tsv", ".tsv.gz"])
def test_weights_round_trip_through_tsv(rng, tmp_path, suffix):
    layer = random_network(rng, 77, 1, 0.0).layers[0]
    path = tmp_path / ("n77-l1" + suffix)
    tsv.write_triples(path, layer)
    back = tsv.read_weights(path, 77)
    assert (back != layer).nnz == 0


def test_features_round_trip_keeps_trailing_rows(rng, tmp_path):
    dense = (rng.random((40, 25)) < 0.2).astype(np.float32)
    dense[-1, 3] = 1
    path = tmp_path / "f.tsv"
    tsv.write_triples(path, sp.csr_matrix(dense), integer_values=True)
    assert path.read_text().splitlines()[0].split("\t")[2] == "1"
    np.testing.assert_array_equal(tsv.read_features(path, 25).toarray(), dense)


def test_network_and_features_round_trip_through_hdf5(rng, tmp_path):
    network = random_network(rng, 300, 5, -0.25)
    h5.write_network(tmp_path / "net.h5", network, source="s")
    back = h5.read_network(tmp_path / "net.h5", layers=3)
    assert back.depth == 3 and back.bias == -0.25 and back.neurons == 300
    for a, b in zip(back.layers, network.layers):
        assert (a != b).nnz == 0
    features = sp.csr_matrix((rng.random((10, 300)) < 0.1).astype(np.float32))
    h5.write_features(tmp_path / "f.h5", features)
    assert (h5.read_features(tmp_path / "f.h5") != features).nnz == 0
    with pytest.raises(InputError, match="fewer than the 9"):
        h5.read_network(tmp_path / "net.h5", layers=9)
    with pytest.raises(InputError, match="not an spdnn network file"):
        h5.read_network(tmp_path / "f.h5")


def test_categories_file_with_a_bad_id_names_the_line(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("3\n7\nseven\n")
    with pytest.raises(InputError, match=r"c.tsv:3: 'seven' is not an integer id"):
        tsv.read_categories(path)
