"""Finding and loading a problem: weights, features and truth, from TSV or the HDF5 store."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from . import challenge
from .errors import InputError, SpdnnError
from .io import h5, tsv
from .network import Network

Progress = Callable[[Iterable, str], Iterable]
"""Wraps an iterable with a progress display labelled by the string."""


def no_progress(items: Iterable, label: str = "") -> Iterable:
    return items


@dataclass
class Sources:
    """Where a problem's files are; `categories` is None when no truth is known."""

    weights: Path
    features: Path
    categories: Path | None
    neurons: int
    layers: int | None


def is_h5(path: Path) -> bool:
    return path.suffix in (".h5", ".hdf5")


def layer_files(folder: Path, neurons: int) -> list[Path]:
    """Return the consecutive layer files n{N}-l1, -l2, ... that `folder` holds."""
    files = []
    while (path := challenge.find_tsv(folder, challenge.layer_stem(neurons, len(files) + 1))):
        files.append(path)
    return files


def _only_size(folder: Path, pattern: str, what: str) -> int:
    """Return the one N that names an entry of `folder` matching `pattern` (N as group 1)."""
    found = sorted({int(m.group(1)) for f in folder.iterdir()
                    if (m := re.fullmatch(pattern, f.name))})
    if len(found) != 1:
        which = "no" if not found else f"several ({found})"
        raise InputError(folder, f"holds {which} {what}; give --neurons")
    return found[0]


def neurons_in(folder: Path) -> int:
    """Return N for a weights folder holding n{N}-l1.tsv[.gz]; InputError if not exactly one."""
    return _only_size(folder, r"n(\d+)-l1\.tsv(\.gz)?", "n{N}-l1.tsv layer sets")


def neurons_in_data_dir(data_dir: Path) -> int:
    return _only_size(data_dir, r"neuron(\d+)", "neuron{N} folders")


def layers_of_truth(data_dir: Path, neurons: int) -> int | None:
    """Return L when `data_dir` holds exactly one neuron{N}-l{L}-categories.tsv, else None."""
    found = [int(m.group(1)) for f in data_dir.iterdir()
             if (m := re.fullmatch(rf"neuron{neurons}-l(\d+)-categories\.tsv", f.name))]
    return found[0] if len(found) == 1 else None


def from_data_dir(data_dir: Path, neurons: int | None, layers: int | None) -> Sources:
    """Return the official layout's paths: neuron{N}/, sparse-images-{N}, the categories."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(data_dir, "no such folder")
    neurons = neurons or neurons_in_data_dir(data_dir)
    layers = layers or layers_of_truth(data_dir, neurons) or challenge.LAYERS[0]
    features = challenge.find_tsv(data_dir, challenge.features_stem(neurons))
    if features is None:
        stem = challenge.features_stem(neurons)
        raise InputError(data_dir / f"{stem}.tsv", "no such file (nor .tsv.gz)")
    categories = data_dir / challenge.categories_name(neurons, layers)
    return Sources(challenge.weights_dir(data_dir, neurons), features,
                   categories if categories.is_file() else None, neurons, layers)


def read_network(path: Path, neurons: int | None, layers: int | None, bias: float | None,
                 progress: Progress = no_progress) -> Network:
    """Return the first `layers` layers (all when None) from a TSV folder or an HDF5 file."""
    path = Path(path)
    if is_h5(path):
        network = h5.read_network(path, layers, lambda items: progress(items, "reading layers"))
        if neurons is not None and neurons != network.neurons:
            raise InputError(path, f"holds N = {network.neurons}, not the {neurons} asked for")
        if bias is not None:
            network.bias = bias
        return network
    if not path.is_dir():
        raise InputError(path, "no such folder or .h5 file")
    neurons = neurons or neurons_in(path)
    files = layer_files(path, neurons)
    layers = len(files) if layers is None else layers
    if len(files) < layers:
        missing = path / (challenge.layer_stem(neurons, len(files) + 1) + ".tsv")
        raise InputError(missing, f"no such file (nor .gz): {layers} layers asked for, "
                         f"{len(files)} found")
    if not files:
        raise InputError(path, f"holds no n{neurons}-l1.tsv layer file")
    bias = resolve_bias(neurons, bias)
    workers = min(len(files), len(os.sched_getaffinity(0)))
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(tsv.read_weights, f, neurons) for f in files[:layers]]
        matrices = [future.result() for future in progress(futures, "reading layers")]
    return Network(neurons, matrices, bias)


def resolve_bias(neurons: int, bias: float | None) -> float:
    if bias is not None:
        return bias
    try:
        return challenge.default_bias(neurons)
    except KeyError:
        raise SpdnnError(f"N = {neurons} has no official bias; give --bias") from None


def read_features(path: Path, neurons: int) -> sp.csr_matrix:
    path = Path(path)
    if is_h5(path):
        features = h5.read_features(path)
        if features.shape[1] != neurons:
            raise InputError(path, f"holds features of N = {features.shape[1]}, "
                             f"not {neurons}")
        return features
    return tsv.read_features(path, neurons)


@dataclass
class Problem:
    network: Network
    features: sp.csr_matrix
    truth: np.ndarray | None
    read_seconds: float


def load(sources: Sources, bias: float | None, progress: Progress = no_progress) -> Problem:
    """Return the problem `sources` names, timing the reading."""
    start = time.perf_counter()
    network = read_network(sources.weights, sources.neurons, sources.layers, bias, progress)
    features = read_features(sources.features, network.neurons)
    truth = tsv.read_categories(sources.categories) if sources.categories else None
    return Problem(network, features, truth, time.perf_counter() - start)


def synthetic(neurons: int, layers: int, rows: int, seed: int, bias: float | None) -> Problem:
    """Return a generated problem without truth; its read time is the generation time."""
    from . import generate

    start = time.perf_counter()
    try:
        network, features, _ = generate.synthetic_problem(neurons, layers, rows, seed,
                                                          with_truth=False, bias=bias)
    except ValueError as error:
        raise SpdnnError(f"--synthetic: {error}") from None
    return Problem(network, features, None, time.perf_counter() - start)


def fingerprint(paths: Iterable[Path], **settings) -> str:
    """Return a string that changes when any input file or setting changes."""
    files = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    return json.dumps({"files": files, **settings}, sort_keys=True)


def convert(sources: Sources, out_dir: Path, bias: float | None,
            progress: Progress = no_progress) -> tuple[Path, Path, bool]:
    """Write the network and features of `sources` as HDF5 under `out_dir`.

    Returns the two paths and whether anything was written: outputs whose stored
    fingerprint matches the inputs are reused.
    """
    if is_h5(sources.weights):
        raise InputError(sources.weights, "is already an HDF5 network; convert reads TSV layers")
    if not sources.weights.is_dir():
        raise InputError(sources.weights, "no such folder")
    neurons = sources.neurons or neurons_in(sources.weights)
    weight_files = layer_files(sources.weights, neurons)
    layers = sources.layers or len(weight_files)
    bias = resolve_bias(neurons, bias)
    network_path = Path(out_dir) / challenge.network_store_name(neurons, layers)
    features_path = Path(out_dir) / challenge.features_store_name(neurons)
    network_source = fingerprint(weight_files[:layers], layers=layers, bias=bias)
    features_source = fingerprint([sources.features], neurons=neurons)
    wrote = False
    if h5.source_of(network_path) != network_source:
        network = read_network(sources.weights, neurons, layers, bias, progress)
        h5.write_network(network_path, network, network_source,
                         lambda items: progress(items, "writing layers"))
        wrote = True
    if h5.source_of(features_path) != features_source:
        h5.write_features(features_path, read_features(sources.features, neurons),
                          features_source)
        wrote = True
    return network_path, features_path, wrote
