"""The sparse network: N x N weight layers and the bias."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

VALUE_DTYPE = np.float32
"""Weights and activations are single precision on every backend, as in the champions' codes."""


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

