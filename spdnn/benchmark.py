"""`spdnn bench`: run a set of configurations, each recorded exactly as `spdnn run` records it.

Configurations that would not fit in memory, or whose files a data folder lacks, are
skipped with a note. Every layer count of an N shares one problem: its features and its
deepest network, read (or generated) once, the smaller counts running its first layers.
So with --data-dir every record of an N carries that one read time. Generated problems
are `generate.synthetic_problem`'s, built step by step so that each step shows progress.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from . import challenge, dataset, generate, runner
from .backends import make_engine
from .dataset import Problem, Progress, no_progress
from .errors import InputError, SpdnnError
from .io import tsv
from .network import VALUE_DTYPE, Network

BYTES_PER_NONZERO = np.dtype(np.int32).itemsize + np.dtype(VALUE_DTYPE).itemsize
"""A stored non-zero: its column index and its value."""

FEATURE_DENSITY = 0.10
"""The official images' mean density: the feature set's size is estimated before it exists."""

ACTIVATION_COPIES = 3
"""The features, one layer's input and its output may all be in memory at once."""

GIB = 2**30


def configurations(neurons=(), layers=()) -> list[tuple[int, int]]:
    """Return every (neurons, layers) pair of the choices, smallest first.

    An empty choice means the challenge's: all 12 official configurations by default.
    """
    if not neurons and not layers:
        return challenge.configurations()
    return sorted({(n, depth) for n in neurons or challenge.NEURONS
                   for depth in layers or challenge.LAYERS})


def memory_needed(neurons: int, layers: int, rows: int) -> int:
    """Return an estimate of the bytes a run holds: every layer's weights, the activations."""
    weights = neurons * challenge.WEIGHTS_PER_ROW * layers
    activations = rows * neurons * FEATURE_DENSITY * ACTIVATION_COPIES
    return int((weights + activations) * BYTES_PER_NONZERO)


def host_available_bytes() -> int:
    """Return the memory the system can give without swapping (MemAvailable, else free)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def gpu_free_bytes() -> int:
    """Return the free memory of the current GPU."""
    import cupy

    # blocks that CuPy cached for the last configuration are free for the next one
    cupy.get_default_memory_pool().free_all_blocks()
    return cupy.cuda.runtime.memGetInfo()[0]


def unfit(neurons: int, layers: int, rows: int, backend: str) -> str | None:
    """Return why (neurons, layers) would not fit this machine, or None when it fits."""
    need = memory_needed(neurons, layers, rows)
    places = [("host memory", host_available_bytes)]
    if backend == "cuda":
        places.append(("GPU memory", gpu_free_bytes))
    for where, free_bytes in places:
        free = free_bytes()
        if need > free:
            return f"needs about {need / GIB:.1f} GiB, {where} has {free / GIB:.1f} GiB free"
    return None


def missing_files(data_dir: Path, neurons: int, layers: int) -> str | None:
    """Return what `data_dir` lacks to run (neurons, layers), or None when all is there."""
    try:
        sources = dataset.from_data_dir(data_dir, neurons, layers)
    except InputError as error:
        return str(error)
    found = len(dataset.layer_files(sources.weights, neurons))
    if found < layers:
        return f"{sources.weights} holds {found} layer files, not {layers}"
    return None


def check_generatable(neurons: int) -> None:
    """Raise SpdnnError unless the generator can build N (16 * 2^p neurons, square images)."""
    try:
        generate.check_neurons(neurons)
    except ValueError as error:
        raise SpdnnError(f"cannot generate N = {neurons}: {error}") from None


def measure(problem: Problem, engine, repeat: int, progress: Progress, label: str) -> dict:
    """Return the record of the median of `repeat` inferences, holding every run's time.

    For an even `repeat` the median run is the faster of the two middle ones, so that
    the record stays one real run: its TE/s follows from its own inference time.
    """
    entries = [runner.run(problem, engine)[1] for _ in progress(range(repeat), label)]
    times = [entry["inference_seconds"] for entry in entries]
    median = sorted(entries, key=lambda entry: entry["inference_seconds"])[(repeat - 1) // 2]
    return {**median, "repeat": repeat, "inference_seconds_all": times}


def bench(chosen: list[tuple[int, int]], backend: str = "auto", threads: int | None = None,
          data_dir: Path | None = None, rows: int = challenge.FEATURE_ROWS,
          seed: int = challenge.DEFAULT_SEED, repeat: int = 1,
          progress: Progress = no_progress,
          note: Callable[[str], None] = print) -> Iterator[dict]:
    """Yield the record of each configuration of `chosen` that can run here, in order.

    Problems come from `data_dir` (the official layout) or, without it, from the
    generator with `rows` images and `seed`. `note` receives one line per configuration
    and the reason for every one skipped.
    """
    backend = make_engine(backend, threads).name   # resolves 'auto'; fails early without GPU
    if data_dir is None:
        for neurons in sorted({n for n, _ in chosen}):
            check_generatable(neurons)
    else:
        rows = challenge.FEATURE_ROWS
    data = f"generated, seed {seed}" if data_dir is None else str(data_dir)
    generated = f", {rows} generated features" if data_dir is None else ""
    count = 0
    for neurons, group in itertools.groupby(chosen, key=lambda pair: pair[0]):
        depths = [layers for _, layers in group]
        shared = None   # the last N's problem goes before this N is sized
        reasons = {layers: _why_not(data_dir, neurons, layers, rows, backend)
                   for layers in depths}
        deepest = max((layers for layers in depths if reasons[layers] is None), default=0)
        for layers in depths:
            count += 1
            note(f"bench {count}/{len(chosen)}: N={neurons}, {layers} layers{generated}")
            if reasons[layers] is not None:
                note(f"  skipped: {reasons[layers]}")
                continue
            if shared is None:
                shared = _shared_problem(data_dir, neurons, deepest, rows, seed, progress)
            problem = _problem(shared, layers, data_dir)
            engine = make_engine(backend, threads)
            entry = measure(problem, engine, repeat, progress, f"inference {neurons}-{layers}")
            # let the GPU memory of this configuration go before the next one runs
            del problem, engine
            yield {**entry, "data": data}


def _why_not(data_dir: Path | None, neurons: int, layers: int, rows: int,
             backend: str) -> str | None:
    """Return why (neurons, layers) cannot run here, or None when it can."""
    reason = missing_files(data_dir, neurons, layers) if data_dir is not None else None
    return reason or unfit(neurons, layers, rows, backend)


def _shared_problem(data_dir: Path | None, neurons: int, layers: int, rows: int, seed: int,
                    progress: Progress) -> Problem:
    """Return the features and `layers`-layer network of N, without truth.

    Read from `data_dir`, timed; or generated, with the lazy layers built here, before
    any clock starts: the challenge times the inference, not the making of the weights.
    """
    if data_dir is not None:
        sources = dataset.from_data_dir(data_dir, neurons, layers)
        return dataset.load(dataclasses.replace(sources, categories=None), None, progress)
    features = generate.features(neurons, rows, seed, progress)
    lazy = generate.radixnet(neurons, layers, seed)
    network = Network(neurons, list(progress(lazy.layers, "building layers")), lazy.bias,
                      lazy.layer_nonzeros)
    return Problem(network, features, None, read_seconds=0.0)


def _problem(shared: Problem, layers: int, data_dir: Path | None) -> Problem:
    """Return the problem of the first `layers` layers of `shared`, with its truth.

    The truth is read from `data_dir` when it has one (its read time is added), else
    computed for generated problems.
    """
    network = shared.network.first(layers)
    if data_dir is None:
        return Problem(network, shared.features, generate.truth(network, shared.features),
                       shared.read_seconds)
    start = time.perf_counter()
    categories = dataset.from_data_dir(data_dir, network.neurons, layers).categories
    truth = tsv.read_categories(categories) if categories else None
    return Problem(network, shared.features, truth,
                   shared.read_seconds + time.perf_counter() - start)
