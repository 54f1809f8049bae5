"""spdnn's HDF5 store: one file per network, one per feature set, CSR arrays compressed.

Network file: attributes `spdnn_format = "network"`, `format_version`, `neurons`, `layers`,
`bias`, `source` (a fingerprint of the inputs it was made from); group `layers/{k}`
(k = 1..layers) with datasets `indptr`, `indices`, `data`.
Feature file: attributes `spdnn_format = "features"`, `format_version`, `neurons`, `rows`,
`source`; datasets `indptr`, `indices`, `data`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from ..network import VALUE_DTYPE, Network
from .atomic import atomic_path

FORMAT_VERSION = 1
COMPRESSION = {"compression": "gzip", "compression_opts": 1, "shuffle": True}


def index_dtype(neurons: int) -> np.dtype:
    """Return the narrowest unsigned type that holds a 0-based neuron index."""
    return np.dtype(np.uint16 if neurons <= 1 << 16 else np.uint32)


def _write_csr(group, matrix: sp.csr_matrix, neurons: int) -> None:
    chunked = dict(COMPRESSION) if matrix.nnz else {}
    group.create_dataset("indptr", data=matrix.indptr.astype(np.int64), **chunked)
    group.create_dataset("indices", data=matrix.indices.astype(index_dtype(neurons)), **chunked)
    group.create_dataset("data", data=matrix.data.astype(VALUE_DTYPE), **chunked)


def _read_csr(group, shape: tuple[int, int]) -> sp.csr_matrix:
    return sp.csr_matrix((group["data"][()], group["indices"][()].astype(np.int32),
                          group["indptr"][()]), shape=shape)


def write_network(path: Path | str, network: Network, source: str = "",
                  progress: Callable[[Iterable], Iterable] = iter) -> None:
    """Write `network` to `path` atomically; `progress` wraps the loop over layers."""
    import h5py

    with atomic_path(path) as temporary, h5py.File(temporary, "w") as store:
        store.attrs.update(spdnn_format="network", format_version=FORMAT_VERSION,
                           neurons=network.neurons, layers=network.depth,
                           bias=float(network.bias), source=source)
        layers = store.create_group("layers")
        for k in progress(range(network.depth)):
            _write_csr(layers.create_group(str(k + 1)), network.layers[k], network.neurons)


def write_features(path: Path | str, features: sp.csr_matrix, source: str = "") -> None:
    import h5py

    with atomic_path(path) as temporary, h5py.File(temporary, "w") as store:
        store.attrs.update(spdnn_format="features", format_version=FORMAT_VERSION,
                           neurons=features.shape[1], rows=features.shape[0], source=source)
        _write_csr(store, features, features.shape[1])


def _open(path: Path, kind: str):
    import h5py

    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        store = h5py.File(path, "r")
    except OSError as error:
        raise InputError(path, f"not a readable HDF5 file ({error})") from None
    if store.attrs.get("spdnn_format") != kind:
        store.close()
        raise InputError(path, f"not an spdnn {kind} file (no spdnn_format = {kind!r})")
    if store.attrs.get("format_version") != FORMAT_VERSION:
        store.close()
        raise InputError(path, f"format version {store.attrs.get('format_version')} is not "
                         f"the {FORMAT_VERSION} this spdnn reads")
    return store


def source_of(path: Path | str) -> str | None:
    """Return the fingerprint stored in an spdnn HDF5 file, or None if it is not one."""
    import h5py

    try:
        with h5py.File(path, "r") as store:
            return str(store.attrs.get("source"))
    except (OSError, KeyError):
        return None


def network_attributes(path: Path | str) -> dict:
    """Return the network file's attributes (neurons, layers, bias) without reading layers."""
    with _open(Path(path), "network") as store:
        return {key: store.attrs[key].item() for key in ("neurons", "layers", "bias")}


def read_network(path: Path | str, layers: int | None = None,
                 progress: Callable[[Iterable], Iterable] = iter) -> Network:
    """Return the first `layers` layers (all when None) of a network file."""
    path = Path(path)
    with _open(path, "network") as store:
        neurons = int(store.attrs["neurons"])
        stored = int(store.attrs["layers"])
        layers = stored if layers is None else layers
        if layers > stored:
            raise InputError(path, f"holds {stored} layers, fewer than the {layers} asked for")
        try:
            matrices = [_read_csr(store["layers"][str(k + 1)], (neurons, neurons))
                        for k in progress(range(layers))]
        except (KeyError, OSError) as error:
            raise InputError(path, f"damaged layer data ({error})") from None
        return Network(neurons, matrices, float(store.attrs["bias"]))


def read_features(path: Path | str) -> sp.csr_matrix:
    path = Path(path)
    with _open(path, "features") as store:
        shape = (int(store.attrs["rows"]), int(store.attrs["neurons"]))
        try:
            return _read_csr(store, shape)
        except (KeyError, OSError) as error:
            raise InputError(path, f"damaged feature data ({error})") from None
