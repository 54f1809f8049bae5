"""The sparse network: N x N weight layers and the bias."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

VALUE_DTYPE = np.float32
"""Weights and activations are single precision on every backend, as in the champions' codes."""


def as_layer(matrix, neurons: int) -> sp.csr_matrix:
    """Return `matrix` as an N x N CSR matrix of VALUE_DTYPE with sorted, summed indices."""
    layer = sp.csr_matrix(matrix, dtype=VALUE_DTYPE)
    if layer.shape != (neurons, neurons):
        raise ValueError(f"layer shape {layer.shape} is not ({neurons}, {neurons})")
    layer.sum_duplicates()
    layer.sort_indices()
    return layer


@dataclass
class Network:
    """`layers[k]` is W_{k+1}: row i, column j is the edge from neuron i to neuron j.

    `layers` may be any sequence of CSR matrices, including a lazy one that builds each
    layer when it is indexed (the generator does this for the largest networks); then
    pass `layer_nonzeros` so that sizes are known without building every layer.
    """

    neurons: int
    layers: Sequence[sp.csr_matrix]
    bias: float
    layer_nonzeros: np.ndarray | None = field(default=None)

    def __post_init__(self):
        if self.layer_nonzeros is None:
            self.layer_nonzeros = np.array([layer.nnz for layer in self.layers], dtype=np.int64)
        self.layer_nonzeros = np.asarray(self.layer_nonzeros, dtype=np.int64)

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def nonzeros(self) -> int:
        """Return the non-zeros of all layers together (the challenge's 'edges' per row)."""
        return int(self.layer_nonzeros.sum())

    def first(self, layers: int) -> Network:
        """Return the network made of the first `layers` layers."""
        return Network(self.neurons, self.layers[:layers], self.bias, self.layer_nonzeros[:layers])


def as_features(matrix, neurons: int) -> sp.csr_matrix:
    """Return `matrix` as a rows x N CSR matrix of VALUE_DTYPE, without explicit zeros."""
    features = sp.csr_matrix(matrix, dtype=VALUE_DTYPE)
    if features.shape[1] != neurons:
        raise ValueError(f"features have {features.shape[1]} columns, not {neurons}")
    features.sum_duplicates()
    features.eliminate_zeros()
    features.sort_indices()
    return features
