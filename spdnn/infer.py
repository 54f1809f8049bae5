"""The inference, backend-independent: the challenge's layer loop and its statistics.

Each layer is Y = min(YMAX, max(0, Y @ W + b)), the bias added only where Y @ W is
non-zero. A backend works on the *active rows*: the rows that are still non-zero, kept
as distinct rows plus, for every active image, which distinct row it currently equals.
Identical rows stay identical through any layer, so computing each distinct row once is
exact; this is what makes the saturated survivors (all YMAX, all alike) nearly free.
"""

from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from .network import Network

MERGE_BACKOFF_LAYERS = 8
"""After a merge finds no duplicates, wait this many layers before looking again."""


class Engine(Protocol):
    """What a backend provides: the steps of the layer loop on its own active-rows state.

    Optional, for engines whose state lives on a device: `batches(rows, depth)` (rows in
    as many batches as fit), `counts_later(rows)` (counts read at the end, not per layer),
    `merge_due(rows, index)` (whether merging is worth its cost now), `settled(rows,
    index)` (True once no later layer can change anything), `layer_span(rows, index)`
    (layer `index` and the layers after it that need no host step between them: the rows
    and the end of the span; such an engine's `counts_later(rows, done)` gives the counts
    after any layer of it) and `clock` (a timer with `mark()` and `seconds_since(mark)`).
    `categories(rows)` returns the 1-based category numbers in ascending order, and the
    batches come in ascending order of their images.
    """

    name: str
    device: str
    multiply_adds: int

    def load_network(self, network: Network) -> None: ...
    def load_features(self, features: sp.csr_matrix): ...
    def layer(self, rows, index: int): ...
    def prune(self, rows): ...
    def merge_duplicates(self, rows): ...
    def counts(self, rows) -> tuple[int, int]: ...
    def categories(self, rows) -> np.ndarray: ...
    def synchronize(self) -> None: ...


@dataclass
class Inference:
    """The categories (1-based, ascending) and what it took to find them."""

    categories: np.ndarray
    seconds: float
    upload_seconds: float
    active_rows: list[int] = field(default_factory=list)
    distinct_rows: list[int] = field(default_factory=list)
    multiply_adds: int = 0
    """Products actually computed: the 'edges computed', against the official edge count."""
    network_seconds: float = 0.0
    """The part of upload_seconds spent preparing and placing the network."""


class WallClock:
    """Times the inference with the host's clock, once the engine has finished its work."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def mark(self) -> float:
        self.engine.synchronize()
        return time.perf_counter()

    def seconds_since(self, mark: float) -> float:
        self.engine.synchronize()
        return time.perf_counter() - mark


def run_layers(engine: Engine, rows, depth: int):
    """Return the active rows after `depth` layers and their (active, distinct) counts per
    layer, each a pair or, on engines that read them later, a function giving the pair."""
    counts_later = getattr(engine, "counts_later", engine.counts)
    merge_due = getattr(engine, "merge_due", lambda rows, index: True)
    settled = getattr(engine, "settled", lambda rows, index: False)
    layer_span = getattr(engine, "layer_span", lambda rows, index: (engine.layer(rows, index),
                                                                       index + 1))
    look_again_at = 0
    per_layer = []
    index = 0
    while index < depth:
        # Y = min(YMAX, relu(Y W + b on non-zeros)) for layers [index, end): one, or those
        # the engine has launched already and needs no host step between
        rows, end = layer_span(rows, index)
        last = end - 1
        rows = engine.prune(rows)                 # rows that became all zero leave the work
        # the span's inner layers' counts (no merge changes them), noted while a GPU works
        per_layer += [counts_later(rows, layer + 1) for layer in range(index, last)]
        # only rows that every later layer keeps all YMAX are left: nothing changes, and
        # nothing is left to merge
        done = settled(rows, last)
        if not done and last >= look_again_at and merge_due(rows, last):
            before = engine.counts(rows)[1]
            rows = engine.merge_duplicates(rows)  # identical rows are computed once
            if engine.counts(rows)[1] == before:
                look_again_at = last + MERGE_BACKOFF_LAYERS
            done = settled(rows, last)   # the merge read fresh counts
        per_layer.append(counts_later(rows))      # after the merge, which changes them
        index = end
        if done:
            break
    return rows, per_layer


def _add_counts(trace: Inference, per_layer: list, depth: int) -> None:
    """Add one batch's per-layer (active, distinct) counts to the trace's totals.

    Layers after an early stop repeat the last counts: nothing changes there.
    """
    per_layer = [counts() if callable(counts) else counts for counts in per_layer]
    per_layer += per_layer[-1:] * (depth - len(per_layer))
    active = [a for a, _ in per_layer]
    distinct = [d for _, d in per_layer]
    if trace.active_rows:
        active = [a + b for a, b in zip(trace.active_rows, active)]
        distinct = [a + b for a, b in zip(trace.distinct_rows, distinct)]
    trace.active_rows, trace.distinct_rows = active, distinct


@contextlib.contextmanager
def collector_paused():
    """Hold Python's cyclic garbage collector off inside the block: a collection there
    (tens of microseconds, much more for a full one over a large heap) would be timed as
    inference. Memory is still freed as references drop."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def infer(network: Network, features: sp.csr_matrix, engine: Engine,
          layers: int | None = None) -> Inference:
    """Return the categories of `features` through the first `layers` layers of `network`
    (all by default), timing only the inference."""
    depth = network.depth if layers is None else layers
    start = time.perf_counter()
    engine.load_network(network)
    engine.synchronize()
    network_seconds = time.perf_counter() - start
    rows = engine.load_features(features)
    engine.synchronize()
    upload = time.perf_counter() - start

    trace = Inference(categories=np.empty(0, np.int64), seconds=0.0, upload_seconds=upload,
                      network_seconds=network_seconds)
    clock = getattr(engine, "clock", None) or WallClock(engine)
    with collector_paused():
        begin = clock.mark()
        batches = engine.batches(rows, depth) if hasattr(engine, "batches") else [rows]
        found, counts = [], []
        for batch in batches:                     # as many rows at a time as the engine holds
            batch, per_layer = run_layers(engine, batch, depth)
            found.append(engine.categories(batch))
            counts.append(per_layer)
        # a batch's categories come ascending (Engine): one batch's are the answer as
        # they are (sorting them again costs ~10 us, timed, at small N)
        trace.categories = found[0] if len(found) == 1 else np.sort(np.concatenate(found))
        trace.seconds = clock.seconds_since(begin)
    for per_layer in counts:      # bookkeeping after the clock: a GPU reads it from its memory
        _add_counts(trace, per_layer, depth)
    trace.multiply_adds = engine.multiply_adds
    return trace
