"""The inference, backend-independent: the challenge's layer loop and its statistics.

Each layer is Y = min(YMAX, max(0, Y @ W + b)), the bias added only where Y @ W is
non-zero. A backend works on the *active rows*: the rows that are still non-zero, kept
as distinct rows plus, for every active image, which distinct row it currently equals.
Identical rows stay identical through any layer, so computing each distinct row once is
exact; this is what makes the saturated survivors (all YMAX, all alike) nearly free.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from .network import Network

MERGE_BACKOFF_LAYERS = 8
"""After a merge finds no duplicates, wait this many layers before looking again."""


class Engine(Protocol):
    """What a backend provides: the steps of the layer loop on its own active-rows state."""

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


def run_layers(engine: Engine, rows, depth: int, trace: Inference):
    """Return the active rows after `depth` layers, appending per-layer counts to `trace`."""
    look_again_at = 0
    for index in range(depth):
        rows = engine.layer(rows, index)          # Y = min(YMAX, relu(Y W + b on non-zeros))
        rows = engine.prune(rows)                 # rows that became all zero leave the work
        if index >= look_again_at:
            before = engine.counts(rows)[1]
            rows = engine.merge_duplicates(rows)  # identical rows are computed once
            if engine.counts(rows)[1] == before:
                look_again_at = index + MERGE_BACKOFF_LAYERS
        active, distinct = engine.counts(rows)
        trace.active_rows.append(active)
        trace.distinct_rows.append(distinct)
    trace.multiply_adds = engine.multiply_adds
    return rows


def infer(network: Network, features: sp.csr_matrix, engine: Engine) -> Inference:
    """Return the categories of `features` through `network`, timing only the inference."""
    start = time.perf_counter()
    engine.load_network(network)
    rows = engine.load_features(features)
    engine.synchronize()
    upload = time.perf_counter() - start

    trace = Inference(categories=np.empty(0, np.int64), seconds=0.0, upload_seconds=upload)
    start = time.perf_counter()
    rows = run_layers(engine, rows, network.depth, trace)
    trace.categories = engine.categories(rows)
    engine.synchronize()
    trace.seconds = time.perf_counter() - start
    return trace
