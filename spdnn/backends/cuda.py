"""The CUDA backend: the whole inference on one NVIDIA GPU, one fused kernel per layer.

Weights sit on the GPU in `layout.py`'s form (each layer's distinct columns in ELL).
Activations are dense rows of the previous layer's distinct columns, one row per *slot*
of a batch. The layer kernel (kernels/layer.cu) computes the active slots, drops the
rows that die and retires the rows that are all YMAX when every later layer keeps them
so, writing the next active list itself: no host round trip per layer. Two shapes of
constant-weight layer have faster kernels of their own: a first layer whose features and
weights are powers of two counts (kernels/first.cu: each feature once where the fanout
is circulant, as in RadiX-Net, from the features folded into bit masks where those
are fewer bytes than their indices), and a layer whose columns all read a few inputs in one
order replays that order on registers (kernels/pattern.cu; computing the inputs'
addresses where they are rotations, as in RadiX-Net); both are exact for any input that
meets their conditions. Consecutive rotation layers (RadiX-Net's first block) run as one
launch (kernels/run.cu), each row carried through them in shared memory. (CuPy compiles
with -ftz=true; kernels/ieee.cuh keeps subnormal values all the same, as the CPU does.)
The host learns the active count a few layers late, through pinned memory, and stops
launching once nothing is left to compute; the categories are listed on the GPU right
after each launch that may leave nothing to compute, so that the host only reads them.
Identical rows are merged on the GPU (kernels/rows.cu) when the layer loop asks. Layers
are launched GRAPH_LAYERS at a time as CUDA graphs, captured once per batch (the first
ones while the features load) and replayed by every inference. Kernels are compiled at
run time by CuPy (NVRTC) and cached on disk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..challenge import YMAX
from ..network import VALUE_DTYPE, Network
from .layout import LayerLayout, layer_layouts, march_words, rotation_runs, tile_rows

KERNELS = Path(__file__).resolve().parent.parent / "kernels"

TILE_BYTES = 128 * 1024
"""Shared memory for one block's input tile (the widest rows are streamed in such chunks)."""
THREADS_PER_MULTIPROCESSOR = 1024
"""The layer kernel keeps to 64 registers a thread: 1024 threads fill a multiprocessor."""
COLUMNS_PER_THREAD = 4
MERGE_INTERVAL = 32
"""The GPU merges identical rows only after every this many layers: saturated rows (the
common duplicates) retire without it, and each merge costs a few host round trips.
A multiple of GRAPH_LAYERS, so that no graph runs past a merge."""
ROW_THREADS = 256
"""Threads per block of the row hashing and comparing kernels (a warp per row)."""

ACTIVATION_MEMORY_FRACTION = 0.6
"""Share of the free device memory that a batch's activations may take."""
WEIGHT_MEMORY_FRACTION = 0.5
"""Share of the free device memory that resident weights may take; the rest stream."""
GRAPH_LAYERS = 8
"""Layers launched together as one CUDA graph: the host's cost per layer falls from a
kernel launch (~15 us from Python) to an eighth of a graph launch."""
CAPTURED_LAYERS = 64
"""Layers whose graphs load_features captures ahead; later ones are captured when first run."""
POLLS_PER_QUERY = 256
"""While the host waits for a count that a kernel writes to host memory, it asks whether
the stream has finished (or failed) once per this many looks at the memory (tens of
microseconds; a count the kernels always write ends the wait at once): asking at every
look slowed the GPU's work at N = 1024 (docs/gpu-notes.md, version 17)."""
MARCH_ROWS = 8192
"""At most this many active rows at the first general layer (or after a merge): the layers up
to the next merge run as one march launch (kernels/march.cu) instead of one launch each."""
MARCH_THREADS = 256
MARCH_OUTPUTS_PER_THREAD = 2
"""Outputs of a layer one march thread computes (rounded to a power of two threads a row,
32 to MARCH_THREADS): a row's time is its chain of dependent sums, so it gets many threads."""
MARCH_WIDEST = 256
"""Layers at most this wide (in distinct columns, layout.py) march; wider ones go by tiles.
A row marches alone, so its time is one chain of dependent sums per layer. On an H200
(bench/results/march-2026-12-02-*): 4096 (256 distinct) 1.29 -> about 1.0 ms with
marching; 16384 (1024 distinct) 1.82 ms without, 2.0-2.3 with; 65536 (4096) 5.3 ms
without, 6.0 with."""
MARCH_COPIES_FROM = 128
"""Rows at least this wide march with two copies in shared memory (kernels/march.cu,
COPY_STRIDE), each read taking the copy that spreads a warp's words over more banks: at
N = 4096 (256 distinct columns) 3.1 -> 2.1 wavefronts a read; at 1024 (64) 2.0 either way."""
MARCH_LAYER = np.dtype([("index", "<u8"), ("values", "<u8"), ("inputs", "<i4"),
                        ("outputs", "<i4"), ("width", "<i4"), ("stride", "<i4"),
                        ("shift", "<i4"), ("index_bytes", "<i4"), ("weight", "<f4"),
                        ("unused", "<i4")])
"""kernels/march.cu's MarchLayer, field for field."""
RUN_LAYERS = 15
"""Layers one launch of the run kernel (kernels/run.cu) takes at most: odd, see launch_end."""
RUN_LAYER = np.dtype([("inputs", "<i4"), ("outputs", "<i4"), ("shift", "<i4"),
                      ("weight", "<f4")])
"""kernels/run.cu's RunLayer, field for field."""
RUN_THREADS = 256
"""Threads of a run kernel block (more where one row takes more)."""
RUN_ROW_THREADS = 256
"""Threads that carry one row of a run at most (4 outputs each at a time)."""
RUN_QUADS = 2
"""Quads of outputs a thread of the run kernel computes per layer, where rows allow: at
4096 a warp a row, the run launch 131-133 -> 103-108 us against 4 quads and 16 threads a
row (run-quads2-ab-2026-12-03-*); at 1024 45-47 us with 4, 8 or 16 threads a row."""
RUN_WIDE_ROWS = 1024
"""Rows of at least this many floats take RUN_WIDE_QUADS a thread, registers for
RUN_WIDE_OCCUPANCY threads an SM."""
RUN_WIDE_QUADS = 8
"""RUN_QUADS for rows of RUN_WIDE_ROWS floats or more (run-quads8-ab-2026-12-03-*: 3-5%
faster than 4 at 16384 and 65536)."""
RUN_OCCUPANCY = 1024
"""Threads an SM that a run kernel's registers are sized for (64 registers a thread; ncu
found the run launch at 1024 and 4096 at 40-44% occupancy for that: gpu-notes version
18)."""
RUN_WIDE_OCCUPANCY = 768
"""RUN_OCCUPANCY for rows of RUN_WIDE_ROWS floats or more."""
WARM_UP_ROWS = 8
WARM_UP_MERGE_ROWS = 65536
SMALL_THREADS = 256
"""Threads per block of the batch bookkeeping kernels."""
LIST_THREADS = 1024
"""Threads a block of the kernel that lists a batch's categories (kernels/batch.cu)."""
LIST_PENDING = -2
"""listed[0] while a list launched ahead has not run (the kernel writes -1 when it skips)."""
PATTERN_THREADS = 512
FIRST_THREADS = 512
FIRST_SHARED_BYTES = 48 * 1024
"""Shared memory of a first-layer block: the counters (or masks) of the rows it works on at once."""
FEATURES_PER_THREAD = 8
"""The first layer gives a row about this many of its features per thread."""
MAX_SHIFTS = 8
"""Folded feature masks: a circulant first layer's shifts at most (kernels/first.cu SHIFT0..7)."""


def first_counters(layout) -> int:
    """Return the counters of one row of the counting first layer (kernels/first.cu): two
    sets of `outputs` when the fanout is circulant, else `outputs` and one for padding,
    rounded up to a multiple of 4 (rows of counters stay 16-byte aligned)."""
    return 2 * layout.outputs if layout.circulant else (layout.outputs + 4) & ~3


def first_group_words(layout, row_stride: int, rows_at_once: int = 1) -> int:
    """Return the 4-byte words of shared memory a row group of the counting first layer
    keeps: its counters or, with folded masks (`row_stride` words a row, 0 without), two
    buffers of the `rows_at_once` rows it takes side by side (kernels/first.cu)."""
    return 2 * rows_at_once * row_stride if row_stride else first_counters(layout)


def pattern_vector(layout) -> int:
    """Return the outputs a lane of the pattern kernel (kernels/pattern.cu) takes at once:
    4 where rows of inputs and of outputs stay 16-byte aligned and a step of 128 outputs
    divides the row (and the lane's few distinct inputs leave registers to spare), else 1."""
    fits = layout.outputs % 128 == 0 and layout.inputs % 4 == 0 and layout.sources.shape[0] <= 2
    return 4 if fits else 1


def run_shared_bytes(threads: int, row_threads: int, widest: int) -> int:
    """Return the shared memory of a run kernel block: two rows of `widest` floats for
    each of its groups of `row_threads` threads."""
    return threads // row_threads * 2 * widest * 4


def pattern_shifted(layout) -> bool:
    """Return whether the pattern kernel computes the layer's sources from its `shift`
    (4 outputs a lane, RadiX-Net's rotations) instead of loading them."""
    return layout.shift is not None and pattern_vector(layout) == 4


def _cupy():
    import cupy

    return cupy


_functions: dict = {}


def kernel_source(file: str, pasted: set[str] | None = None) -> str:
    """Return kernels/`file` with its local `#include "x.cuh"` lines replaced by the files
    (each once, as `#pragma once` would), so that the text CuPy caches on covers everything
    the kernel is built from."""
    pasted = set() if pasted is None else pasted

    def paste(match: re.Match) -> str:
        header = match.group(1)
        if header in pasted:
            return ""
        pasted.add(header)
        return kernel_source(header, pasted).replace("#pragma once", "")

    return re.sub(r'^#include "([\w.]+)"$', paste, (KERNELS / file).read_text(), flags=re.MULTILINE)


def kernel(file: str, name: str, **defines):
    """Return kernel `name` of kernels/`file` compiled with `defines` (cached per process;
    CuPy also caches the binary on disk)."""
    key = (file, name, tuple(sorted(defines.items())))
    if key not in _functions:
        cp = _cupy()
        options = tuple(f"-D{k}={v}" for k, v in sorted(defines.items()))
        module = cp.RawModule(code=kernel_source(file), options=options)
        _functions[key] = module.get_function(name)
    return _functions[key]


def allow_shared(function, shared: int) -> None:
    """Let `function` launch with `shared` bytes of dynamic shared memory: past 48 KB with
    its static shared memory, a kernel must opt in."""
    if shared + function.shared_size_bytes > 48 * 1024 and \
            function.max_dynamic_shared_size_bytes < shared:
        function.max_dynamic_shared_size_bytes = shared


def march_fixed(layers: list) -> dict[str, int]:
    """Return the march kernel's settings for what all of `layers` (DeviceLayer) share:
    FIXED_WIDTH (entries a column, equal to the stride), FIXED_INDEX_BYTES, FIXED_SHIFT (a
    tile's rows, log 2) and CONSTANT_WEIGHTS (no layer has values); each left out where
    two layers differ, so the kernel reads it from each layer's record. CHUNK_MAJOR where
    a fixed column is whole 16-byte chunks, at most 4: the records then point to
    `chunk_major` copies of the indices."""
    def shared(values) -> int | None:
        found = set(values)
        return found.pop() if len(found) == 1 else None

    fixed = {"FIXED_WIDTH": shared(layer.layout.width if layer.layout.width == layer.layout.stride
                                   else -1 for layer in layers),
             "FIXED_INDEX_BYTES": shared(layer.layout.index.dtype.itemsize for layer in layers),
             "FIXED_SHIFT": shared(layer.rows.bit_length() - 1 for layer in layers),
             "CONSTANT_WEIGHTS": 1 if all(layer.layout.values is None for layer in layers) else None}
    fixed = {name: value for name, value in fixed.items() if value is not None and value >= 0}
    column_bytes = fixed.get("FIXED_WIDTH", 0) * fixed.get("FIXED_INDEX_BYTES", 0)
    if column_bytes and column_bytes % 16 == 0 and column_bytes <= 64:
        fixed["CHUNK_MAJOR"] = 1
    return fixed


def chunk_major(index):
    """Return a copy of `index` (columns x entries, cupy) with its 16-byte chunk c of every
    column side by side, then chunk c + 1 (kernels/march.cu, CHUNK_MAJOR)."""
    per_chunk = 16 // index.dtype.itemsize
    columns = index.shape[0]
    return index.reshape(columns, -1, per_chunk).transpose(1, 0, 2).copy()


def power_of_two(value: float) -> bool:
    """Return whether float32 `value` is +-2^k, a normal number (products with it are exact)."""
    value = np.float32(value)
    return bool(np.isfinite(value) and value != 0 and np.frexp(value)[0] in (0.5, -0.5)
                and abs(value) >= np.finfo(np.float32).tiny)


@dataclass
class DeviceLayer:
    """One layer's layout on the GPU (or in host memory, streamed in when used) and how
    the layer kernel is launched for it."""

    layout: LayerLayout
    index: object
    values: object
    rows: int
    """Rows of a shared-memory tile; 1 with `chunk` < inputs for rows streamed in passes."""
    chunk: int
    threads: int
    shared: int
    sources: object = None
    """layout.sources on the GPU (small, always resident): the pattern kernel's inputs."""
    fanout: object = None
    """layout.fanout on the GPU: the counting first layer's columns per feature."""

    @property
    def inputs(self) -> int:
        return self.layout.inputs

    @property
    def outputs(self) -> int:
        return self.layout.outputs

    @property
    def resident(self) -> bool:
        return not isinstance(self.index, np.ndarray)


@dataclass
class LayerPlan:
    """How one layer's kernel is launched: which kernel (`kind`: tile, pattern or first),
    its grid, block, shared memory and the layer's own arguments."""

    kind: str
    function: object
    grid: int
    threads: int
    shared: int
    weights: tuple | None
    """The layer's arguments after the common ones; None for weights streamed per launch."""


@dataclass
class FirstLayer:
    """The counting first layer's settings for the loaded features (kernels/first.cu)."""

    term: np.float32
    """The one product: feature value x weight."""
    row_warps: int
    outputs: int
    """The layer's outputs (distinct columns): the fold of the features into masks."""
    mask_bytes: int = 0
    """Bytes of a slot's mask where the features are folded into masks (kernels/first.cu
    BITS: 1, 2 or 4 for up to 8, 16, 32 planes); 0: they are read as column indices."""

    @property
    def row_stride(self) -> int:
        """Return the 32-bit words of one row of folded masks, whole 16-byte chunks (0
        without masks)."""
        return (self.outputs * self.mask_bytes // 4 + 3) & ~3

    @property
    def rows_at_once(self) -> int:
        """Return the rows a group of one warp takes side by side with folded masks: as many
        as leave each row's quads of outputs a lane each (2 at 64 outputs, N = 1024), so that
        no lane idles; 1 otherwise."""
        if not self.mask_bytes or self.row_warps != 1:
            return 1
        quads = -(-self.outputs // 4)
        return max(1, 32 >> (quads - 1).bit_length())


@dataclass
class BatchPlace:
    """The device state of one batch of rows that stays put from one inference to the
    next, so that every launch of a layer gets the same arguments and the CUDA graph of a
    run of layers, captured once, can be replayed."""

    history: object
    """Per layer (0 = the features): active slots, their images, retired slots, their images."""
    retire: object
    """Per layer: 1 where an all-YMAX row stays so through every later layer of the run."""
    seen: np.ndarray
    """Mapped host memory: each layer's kernel writes its input count here (-1 before)."""
    listed: np.ndarray
    """Mapped host memory: the batch's categories (their number, then their positions)."""
    features: tuple
    """The batch's rows on the GPU, the first input: CSR (indptr by slot, indices, values)
    and the folded masks by slot (or None)."""
    numbers: np.ndarray
    """The batch's category numbers (its images + 1), by position: what `listed` points to."""
    retire_depth: int = -1
    graphs: dict = field(default_factory=dict)
    """(first layer, end) -> the captured graph of those layers."""


@dataclass
class Features:
    """The live feature rows on the GPU and the buffers that batches of them use."""

    images: np.ndarray
    """0-based ids of the rows that are not empty."""
    indptr: object
    indices: object
    values: object
    batch_rows: int
    buffers: tuple
    bits: object = None
    """The rows folded into masks for the first layer (rows x words; kernels/first.cu), or None."""
    places: dict = field(default_factory=dict)
    """Batch start -> its BatchPlace."""

    def head(self, rows: int) -> Features:
        """Return the first `rows` live rows, in batches of that many, on the same buffers."""
        return Features(self.images[:rows], self.indptr[:rows + 1], self.indices, self.values,
                        rows, self.buffers, self.bits)


@dataclass
class Batch:
    """Active rows of one batch: slot s holds one distinct row; image i is in slot which[i]."""

    images: np.ndarray
    features: tuple
    """The batch's rows on the GPU (BatchPlace.features): the first input."""
    values: object
    spare: object
    active: object
    spare_active: object
    which: object
    multiplicity: object
    retired: object
    place: BatchPlace
    state: dict
    """Per-slot arrays of the kernels: multiplicity, retired flags, counters."""
    depth: int
    done: int = 0
    launched: int = 0
    """Layers launched so far: a graph launches several ahead of the layer loop."""
    landed: int = 0
    final_history: np.ndarray | None = None
    read: tuple[int, np.ndarray] | None = None
    """(layers done, history) as last read: its rows up to `done` stay put (_read)."""
    empty: bool = False
    """Whether a read found no active row left (counts only fall: it stays so)."""
    listed_ahead: int = 0
    """The layer count after which the last list of categories was launched ahead (0: none)."""
    march_declined: int = -1
    """The layer a march launched from found too many rows at (it did nothing; -1: none)."""

    @property
    def history(self):
        return self.place.history

    @property
    def seen(self) -> np.ndarray:
        return self.place.seen

    @property
    def report(self) -> int:
        return self.place.seen.ctypes.data


class EventClock:
    """Times the inference with CUDA events on the engine's stream."""

    def __init__(self, cp):
        self.cp = cp

    def mark(self):
        event = self.cp.cuda.Event()
        event.record()
        return event

    def seconds_since(self, mark) -> float:
        end = self.mark()
        end.synchronize()
        return self.cp.cuda.get_elapsed_time(mark, end) / 1e3


class CudaEngine:
    name = "cuda"

    def __init__(self, threads: int | None = None, batch_rows: int | None = None,
                 tile_bytes: int = TILE_BYTES, resident_weights: bool | None = None,
                 graphs: bool = True, march: bool = True, runs: bool = True):
        import os

        cp = _cupy()
        self.cp = cp
        properties = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        self.device = properties["name"].decode() if isinstance(properties["name"], bytes) \
            else str(properties["name"])
        self.multiprocessors = properties["multiProcessorCount"]
        self.shared_per_multiprocessor = properties["sharedMemPerMultiprocessor"]
        self.shared_per_block = properties["sharedMemPerBlockOptin"]
        self.tile_floats = min(tile_bytes, self.shared_per_block - 1024) // 4
        self.threads = threads or len(os.sched_getaffinity(0))
        self.batch_rows = batch_rows
        self.resident_weights = resident_weights
        self.network: Network | None = None
        self.layers: list[DeviceLayer] = []
        self.clock = EventClock(cp)
        self._batches: list[Batch] = []
        self._features = None
        self._plans: dict = {}
        self._first: FirstLayer | None = None
        self._reports: list = []
        self._dummy = cp.zeros(4, cp.int32)
        self.graphs = graphs
        """Launch runs of GRAPH_LAYERS layers as captured CUDA graphs (else one by one)."""
        self.march = march
        """Run the few rows left after the busy layers through many layers per launch."""
        self.runs = runs
        """Run consecutive rotation pattern layers as one launch (kernels/run.cu)."""
        self._capture_stream = None

    # ------------------------------------------------------------------ network

    def load_network(self, network: Network) -> None:
        """Lay out and upload every layer, then find which layers keep an all-YMAX row."""
        if network is self.network:
            return
        cp = self.cp
        self.network = network
        self._features = None
        self._plans = {}
        self.bias = np.float32(network.bias)
        self.feature_index = np.dtype(np.uint16 if network.neurons <= 1 << 16 else np.int32)
        """The features' column indices on the GPU (kernels/features.cuh)."""
        self.layers = []
        budget = self._free_bytes() * WEIGHT_MEMORY_FRACTION
        for layout in layer_layouts(network, self.tile_floats, threads=self.threads):
            size = layout.index.nbytes + (layout.values.nbytes if layout.values is not None else 0)
            resident = self.resident_weights if self.resident_weights is not None \
                else size <= budget
            budget -= size if resident else 0
            place = cp.asarray if resident else (lambda array: array)
            rows = tile_rows(layout.inputs, self.tile_floats)
            chunk = layout.inputs if rows else self.tile_floats
            shared = chunk * max(rows, 1) * 4
            self.layers.append(DeviceLayer(
                layout, place(layout.index),
                place(layout.values) if layout.values is not None else None,
                rows=max(rows, 1), chunk=chunk, threads=self._threads(shared, rows, layout),
                shared=shared,
                sources=cp.asarray(layout.sources) if layout.sources is not None else None,
                fanout=cp.asarray(layout.fanout) if layout.fanout is not None else None))
        self.keeps_saturated = self._saturation_check()
        self._resident_until = [len(self.layers)] * (len(self.layers) + 1)
        for index in reversed(range(len(self.layers))):
            self._resident_until[index] = self._resident_until[index + 1] \
                if self.layers[index].resident else index
        self._march_setup()
        self._runs_setup()

    def _resident(self, first: int, end: int) -> bool:
        """Return whether the weights of layers [first, end) are all on the GPU."""
        return self._resident_until[first] >= end

    def _pattern_layer(self, index: int) -> bool:
        layout = self.layers[index].layout
        return index > 0 and layout.pattern is not None and layout.outputs % 32 == 0

    def _march_setup(self) -> None:
        """Find where marching may start (the first layer after 0 that the pattern kernel
        does not take) and, where the layers from there are narrow enough, describe every
        resident layer for the march kernel."""
        self._march_plan_cache = None
        self._march_indexes = []      # chunk-major copies, kept while the table points to them
        self.march_from = next((i for i in range(1, len(self.layers))
                                if not self._pattern_layer(i)), None)
        if self.march_from is None:
            return
        widest = max(max(layer.inputs, layer.outputs) for layer in self.layers[self.march_from:])
        wanted = -(-widest // MARCH_OUTPUTS_PER_THREAD)
        row_threads = min(MARCH_THREADS, max(32, 1 << (wanted - 1).bit_length()))
        fixed = march_fixed(self.layers[self.march_from:])
        buffer = widest
        if fixed.get("CHUNK_MAJOR") and widest >= MARCH_COPIES_FROM:
            fixed.update(COPY_STRIDE=-(-widest // 32) * 32, FIXED_SHIFT=0)
            buffer = 2 * fixed["COPY_STRIDE"]
        shared = MARCH_THREADS // row_threads * 2 * buffer * 4
        if shared > self.shared_per_block or widest > MARCH_WIDEST:
            self.march_from = None
            return
        self._march_shape = (widest, row_threads, shared, fixed)
        table = np.zeros(len(self.layers), MARCH_LAYER)
        marching = {index for index in range(self.march_from, len(self.layers))
                    if self.layers[index].resident and fixed.get("CHUNK_MAJOR")}
        words = {}
        if marching and "COPY_STRIDE" in fixed:    # float offsets, in one copy or the other
            order = sorted(marching)
            words = dict(zip(order, march_words(
                [self.layers[index].layout.index >> (self.layers[index].rows.bit_length() - 1)
                 for index in order],
                fixed["COPY_STRIDE"])))
        for index, layer in enumerate(self.layers):
            if layer.resident:
                layout = layer.layout
                marched = layer.index
                if index in words:
                    marched = self.cp.asarray(words.pop(index).astype(layout.index.dtype))
                if index in marching:
                    marched = chunk_major(marched)
                    self._march_indexes.append(marched)
                table[index] = (marched.data.ptr,
                                layer.values.data.ptr if layer.values is not None else 0,
                                layout.inputs, layout.outputs, layout.width, layout.stride,
                                layer.rows.bit_length() - 1, layout.index.dtype.itemsize,
                                layout.weight or 0.0, 0)
        self._march_table = self.cp.asarray(table.view(np.uint8))

    def _runs_setup(self) -> None:
        """Find the runs of layers that kernels/run.cu takes in one launch (layout.py's
        `rotation_runs` whose widest row fits a block's shared memory twice per row
        group) and describe every layer of them for the kernel."""
        self._run_shapes = {}         # layer -> (stop of its run, the run's kernel settings)
        table = np.zeros(max(1, len(self.layers)), RUN_LAYER)
        for run in rotation_runs([layer.layout for layer in self.layers], RUN_LAYERS):
            layouts = [self.layers[index].layout for index in run]
            widest = max(max(layout.inputs, layout.outputs) for layout in layouts)
            wide = widest >= RUN_WIDE_ROWS
            wanted = widest // (4 * (RUN_WIDE_QUADS if wide else RUN_QUADS))
            row_threads = min(RUN_ROW_THREADS, max(4, 1 << (wanted - 1).bit_length()))
            threads = max(RUN_THREADS, row_threads)
            occupancy = RUN_WIDE_OCCUPANCY if wide else RUN_OCCUPANCY
            if run_shared_bytes(threads, row_threads, widest) > self.shared_per_block:
                continue
            pattern = "".join(map(str, layouts[0].pattern))
            for index, layout in zip(run, layouts, strict=True):
                self._run_shapes[index] = (run.stop, (threads, row_threads, widest, pattern,
                                                      occupancy))
                table[index] = (layout.inputs, layout.outputs, layout.shift, layout.weight)
        self._run_table = self.cp.asarray(table.view(np.uint8))

    def launch_end(self, index: int, limit: int) -> int:
        """Return where one launch from layer `index` ends, at most at `limit`: the end of
        the run kernel's layers from there, or index + 1 (then the layer has a kernel of
        its own). A launch runs an odd number of layers, so that it reads one buffer pair
        and writes the other, as the layers one by one would."""
        stop = min(self._run_shapes[index][0], limit) if self.runs and index in \
            self._run_shapes else index + 1
        stop -= (stop - index) % 2 == 0
        return stop

    def _run_plan(self, settings: tuple) -> tuple:
        """Return (kernel, grid, threads, shared bytes) of the run kernel for `settings`."""
        plan = self._plans.get(("run", settings))
        if plan is None:
            threads, row_threads, widest, pattern, occupancy = settings
            function = kernel("run.cu", "pattern_run", THREADS=threads, ROW_THREADS=row_threads,
                              WIDEST=widest, PATTERN=f'"{pattern}"', MAX_LAYERS=RUN_LAYERS,
                              OCCUPANCY=occupancy, NEGATIVE_BIAS=int(self.bias < 0))
            shared = run_shared_bytes(threads, row_threads, widest)
            allow_shared(function, shared)
            plan = self._plans[("run", settings)] = (
                function, self._blocks(function, threads, shared), threads, shared)
        return plan

    def _run(self, batch: Batch, first: int, end: int, values, spare, active,
             spare_active) -> None:
        """Launch the run kernel over layers [first, end) (an odd number of them)."""
        function, grid, threads, shared = self._run_plan(self._run_shapes[first][1])
        state = batch.state
        function((grid,), (threads,),
                 (self._run_table, np.int32(first), np.int32(end), values, spare, active,
                  spare_active, batch.history, np.uint64(batch.report), state["multiplicity"],
                  state["retired"], state["staged"], batch.place.retire, state["run_done"],
                  self.bias, np.float32(YMAX)), shared_mem=shared)

    def _march_plan(self) -> tuple:
        """Return (kernel, grid, shared bytes, widest row) of the march kernel."""
        if self._march_plan_cache is None:
            widest, row_threads, shared, fixed = self._march_shape
            function = kernel("march.cu", "march", THREADS=MARCH_THREADS, ROW_THREADS=row_threads,
                              MAX_LAYERS=MERGE_INTERVAL, **fixed)
            allow_shared(function, shared)
            self._march_plan_cache = (function, self._blocks(function, MARCH_THREADS, shared),
                                      shared, widest)
        return self._march_plan_cache

    def _threads(self, shared: int, rows: int, layout: LayerLayout) -> int:
        """Return the block size: the blocks that fit a multiprocessor's shared memory share
        its 1024 threads, and a block has no more warps than one step of columns needs."""
        fit = max(1, self.shared_per_multiprocessor // (shared + 1024))
        threads = 1 << (max(1, THREADS_PER_MULTIPROCESSOR // fit).bit_length() - 1)
        columns_per_warp = (32 // max(rows, 1)) * COLUMNS_PER_THREAD
        warps = -(-layout.outputs // columns_per_warp)
        needed = 32 << max(0, (warps - 1).bit_length())
        return min(1024, max(128, min(threads, needed)))

    def _free_bytes(self) -> int:
        pool = self.cp.get_default_memory_pool()
        return self.cp.cuda.runtime.memGetInfo()[0] + pool.free_bytes()

    def _saturation_check(self) -> np.ndarray:
        """Return, per layer, whether an all-YMAX input row gives an all-YMAX output row.

        Computed by the layer kernel itself, so the answer holds for its exact arithmetic.
        The first layer's answer is never needed (its input is the features).
        """
        cp = self.cp
        depth = len(self.layers)
        keeps = np.zeros(depth, bool)
        if depth < 2:
            return keeps
        widest = max(layer.inputs for layer in self.layers[1:])
        row = cp.full(widest, YMAX, cp.float32)
        out = cp.empty(max(layer.outputs for layer in self.layers), cp.float32)
        scratch = self._scratch_state(1)
        history = cp.zeros(8, cp.int32)
        answers = []
        for index in range(1, depth):
            history[:] = cp.array([1, 1, 0, 0, 0, 0, 0, 0], cp.int32)   # one row in, none out yet
            self._launch(index, row, None, out, scratch["active"], scratch["active_out"],
                         history, 0, scratch, retire=self._dummy)   # zeros: no retiring
            answers.append(cp.all(out[:self.layers[index].outputs] == YMAX))
        keeps[1:] = cp.stack(answers).get()
        return keeps

    def _scratch_state(self, slots: int) -> dict:
        cp = self.cp
        return {"active": cp.zeros(slots, cp.int32), "active_out": cp.zeros(slots, cp.int32),
                "multiplicity": cp.ones(slots, cp.int32),
                "retired": cp.zeros(slots, cp.uint8), "slot_stats": cp.zeros(2 * slots, cp.int32),
                "tile_done": cp.zeros(slots, cp.int32), "staged": cp.zeros(slots, cp.int32),
                "which": cp.zeros(slots, cp.int32), "alive": cp.zeros(slots, cp.uint8),
                "march_done": cp.zeros(1, cp.int32), "run_done": cp.zeros(1, cp.int32),
                "list_words": cp.zeros(-(-slots // 32), cp.uint32),
                "list_done": cp.zeros(1, cp.int32)}

    # ------------------------------------------------------------------ the layer kernel

    def _launch(self, index: int, y_in, x, y_out, active_in, active_out, history,
                layer_index: int, state: dict, retire, report: int = 0) -> None:
        """Run layer `index` on the slots listed in active_in, counting in
        history[4 * layer_index] (in) and history[4 * layer_index + 4] (out)."""
        plan = self._plan(index, x is not None)      # retire: per layer flags on the device
        rows = (active_in, active_out, history, np.int32(layer_index), np.uint64(report),
                state["multiplicity"], state["retired"])
        if plan.kind == "first":
            bits = x[3] if x[3] is not None else self._dummy
            args = (x[0], x[1], bits, y_out, *rows, state["staged"], *plan.weights, retire)
        elif plan.kind == "pattern":
            args = (y_in, y_out, *rows, state["staged"], *plan.weights, retire)
        else:
            x_ptr, x_col, x_val = x[:3] if x is not None else (self._dummy,) * 3
            weights = plan.weights if plan.weights is not None else self._streamed(index)
            args = (y_in if y_in is not None else self._dummy, x_ptr, x_col, x_val, y_out,
                    *rows, state["slot_stats"], state["tile_done"], *weights, retire)
        plan.function((plan.grid,), (plan.threads,), args, shared_mem=plan.shared)

    def _plan(self, index: int, sparse: bool) -> LayerPlan:
        """Return how layer `index` is launched (on the features when `sparse`)."""
        first = self._first if sparse and self.layers[index].fanout is not None else None
        key = (index, sparse,
               (float(first.term), first.row_warps, first.mask_bytes) if first else None)
        plan = self._plans.get(key)
        if plan is None:
            layer = self.layers[index]
            layout = layer.layout
            if first is not None:
                plan = self._first_plan(layer, first)
            elif not sparse and self._pattern_layer(index):
                function = kernel("pattern.cu", "pattern_layer", THREADS=PATTERN_THREADS,
                                  PATTERN='"' + "".join(map(str, layout.pattern)) + '"',
                                  UNIQUE=layout.sources.shape[0], VEC=pattern_vector(layout),
                                  SHIFTED=int(pattern_shifted(layout)))
                plan = LayerPlan("pattern", function,
                                 self._blocks(function, PATTERN_THREADS, 0), PATTERN_THREADS, 0,
                                 (layer.sources, np.int32(layout.inputs),
                                  np.int32(layout.outputs), np.float32(layout.weight),
                                  self.bias, np.float32(YMAX)))
            else:
                function = kernel("layer.cu", "layer", ROWS=layer.rows, THREADS=layer.threads,
                                  COLS=COLUMNS_PER_THREAD, SPARSE_INPUT=int(sparse),
                                  CONST_WEIGHT=int(layout.values is None),
                                  INDEX_BYTES=layout.index.dtype.itemsize,
                                  FEATURE_INDEX_BYTES=self.feature_index.itemsize)
                allow_shared(function, layer.shared)
                weights = self._weight_args(layer, layer.index, layer.values) \
                    if layer.resident else None
                plan = LayerPlan("tile", function,
                                 self._blocks(function, layer.threads, layer.shared),
                                 layer.threads, layer.shared, weights)
            self._plans[key] = plan
        return plan

    def _first_plan(self, layer: DeviceLayer, first: FirstLayer) -> LayerPlan:
        outputs = layer.outputs
        groups = FIRST_THREADS // 32 // first.row_warps
        shared = groups * first_group_words(layer.layout, first.row_stride,
                                            first.rows_at_once) * 4
        shifts = {f"SHIFT{f}": int(shift) for f, shift in enumerate(layer.layout.fanout[0])} \
            if first.mask_bytes else {}
        function = kernel("first.cu", "first_layer", THREADS=FIRST_THREADS,
                          ROW_WARPS=first.row_warps, FANOUT=layer.fanout.shape[1],
                          CIRCULANT=int(layer.layout.circulant), OUTPUTS=outputs,
                          VEC=4 if outputs % 4 == 0 else 1, BITS=int(first.mask_bytes > 0),
                          MASK_BYTES=first.mask_bytes or 2, ROWS_AT_ONCE=first.rows_at_once,
                          **shifts,
                          FEATURE_INDEX_BYTES=self.feature_index.itemsize)
        allow_shared(function, shared)
        return LayerPlan("first", function, self._blocks(function, FIRST_THREADS, shared),
                         FIRST_THREADS, shared,
                         (layer.fanout, np.int32(outputs), first.term, self.bias,
                          np.float32(YMAX)))

    def _first_layer(self, values: np.ndarray, row_features: float) -> FirstLayer | None:
        """Return the counting first layer's settings, or None when it does not apply:
        it needs every feature value and every first-layer weight to be one power of two,
        and a row of counters that fits FIRST_SHARED_BYTES. It reads the features folded
        into masks where the fanout is circulant and the masks are fewer bytes than the
        rows' column indices (`row_features` non-zeros a row on average)."""
        if not self.layers or self.layers[0].fanout is None or values.size == 0:
            return None
        layout = self.layers[0].layout
        value = np.float32(values[0])
        if not (power_of_two(value) and power_of_two(layout.weight or 0.0)
                and np.all(values == value)):
            return None
        term = np.float32(value * np.float32(layout.weight))
        if not power_of_two(term) or not np.isfinite(term * np.float32(2 ** 24)) \
                or layout.width >= 2 ** 24:
            return None
        first = FirstLayer(term, 1, layout.outputs)
        planes = -(-layout.inputs // layout.outputs)
        first.mask_bytes = next((size for size in (1, 2, 4) if planes <= 8 * size), 0)
        if not (layout.circulant and layout.outputs % 4 == 0
                and layout.fanout.shape[1] <= MAX_SHIFTS
                and first.row_stride * 4 <= row_features * self.feature_index.itemsize):
            first.mask_bytes = 0
        if first_group_words(layout, first.row_stride) * 4 > FIRST_SHARED_BYTES:
            first.mask_bytes = 0       # counting from the indices needs less shared memory
        warps = FIRST_THREADS // 32
        groups_fit = FIRST_SHARED_BYTES // (first_group_words(layout, first.row_stride) * 4)
        if groups_fit < 1:
            return None
        wanted = int(row_features // (32 * FEATURES_PER_THREAD))     # warps a row keeps busy
        by_features = 1 << max(0, wanted.bit_length() - 1)
        by_shared = 1 << (-(-warps // groups_fit) - 1).bit_length()
        first.row_warps = min(warps, max(by_features, by_shared))
        return first

    def kernel_kind(self, index: int) -> str:
        """Return which kernel runs layer `index` on the loaded features in a full-depth
        run: first, run (with the layers around it), pattern or tile (layer.cu)."""
        if self.runs and index in self._run_shapes:
            return "run"
        return self._plan(index, index == 0).kind

    def feature_bytes(self, rows: int, nonzeros: int) -> int:
        """Return the bytes the first layer reads of `rows` feature rows holding `nonzeros`
        non-zeros: the folded masks, or each non-zero's column index and, except in the
        counting kernel, its value."""
        first = self._first
        if first is not None and first.mask_bytes:
            return rows * first.row_stride * 4
        return nonzeros * (self.feature_index.itemsize + (0 if first is not None else 4))

    def _weight_args(self, layer: DeviceLayer, index_array, values) -> tuple:
        layout = layer.layout
        return (index_array, values if values is not None else self._dummy,
                np.int32(layout.inputs), np.int32(layout.outputs), np.int32(layout.width),
                np.int32(layout.stride), np.int32(layer.chunk), np.float32(layout.weight or 0.0),
                self.bias, np.float32(YMAX))

    def _streamed(self, index: int) -> tuple:
        """Return the weight arguments of a layer kept in host memory, copied in now."""
        layer = self.layers[index]
        values = self.cp.asarray(layer.values) if layer.values is not None else None
        return self._weight_args(layer, self.cp.asarray(layer.index), values)

    def _blocks(self, function, threads: int, shared: int) -> int:
        """Return a persistent grid: as many blocks as fit on the device at once, as the
        driver counts them. (A count from registers and shared memory alone missed the
        named barriers: at N = 4096 the march's 16 barriers an SM hold 4 of its blocks, not
        the 5 its registers allow, and a fifth of the grid waited for a second wave;
        bench/results/ncu-2026-12-03-n4096-march-40be9b4.txt.)"""
        driver = self.cp.cuda.driver
        fit = driver.occupancyMaxActiveBlocksPerMultiprocessor(function.kernel.ptr, threads, shared)
        return max(1, fit) * self.multiprocessors

    # ------------------------------------------------------------------ features and batches

    def load_features(self, features: sp.csr_matrix) -> Features:
        """Upload the non-empty feature rows; size batches from free device memory."""
        cp = self.cp
        self._batches = []
        if self._features is not None and self._features[0] is features:
            return self._features[1]      # the same features again: already on the GPU
        given = features
        features = sp.csr_matrix(features, dtype=VALUE_DTYPE)
        features.sort_indices()
        live = np.flatnonzero(np.diff(features.indptr))
        rows = features[live]
        widest = max([layer.outputs for layer in self.layers] + [1])
        per_slot = 2 * widest * 4 + 64
        fit = int(self._free_bytes() * ACTIVATION_MEMORY_FRACTION // per_slot)
        batch_rows = max(1, min(live.size, self.batch_rows or live.size, fit))
        buffers = (cp.empty(batch_rows * widest, cp.float32),
                   cp.empty(batch_rows * widest, cp.float32),
                   self._scratch_state(batch_rows))
        self._first = self._first_layer(rows.data, rows.nnz / max(1, live.size))
        loaded = Features(live, cp.asarray(rows.indptr.astype(np.int64)),
                          cp.asarray(rows.indices.astype(self.feature_index)), cp.asarray(rows.data),
                          batch_rows, buffers)
        loaded.bits = self._fold_bits(loaded)
        self._warm_up(loaded)
        if self.graphs:        # capture the graphs of the first layers, outside any timing
            depth = min(len(self.layers), CAPTURED_LAYERS)
            for batch in self.batches(loaded, depth):
                first = 0
                while first < depth:
                    end = self._chunk_end(batch, first)
                    self._graph(batch, first, end)
                    first = end
        self._batches = []
        self._features = (given, loaded)
        return loaded

    def _fold_bits(self, features: Features):
        """Return the live rows folded into masks for the first layer (kernels/first.cu
        fold_bits), or None where it reads column indices."""
        first = self._first
        if first is None or not first.mask_bytes:
            return None
        cp = self.cp
        rows = features.images.size
        bits = cp.zeros((rows, first.row_stride), cp.uint32)
        function = kernel("first.cu", "fold_bits", OUTPUTS=first.outputs,
                          MASK_BYTES=first.mask_bytes, FEATURE_INDEX_BYTES=self.feature_index.itemsize)
        function((min(rows, 65536),), (256,),
                 (features.indptr, features.indices, np.int32(rows), bits))
        return bits

    def _warm_up(self, features: Features) -> None:
        """Run every kernel the timed region may use once (compiling and loading it)."""
        cp = self.cp
        rows = min(WARM_UP_ROWS, features.images.size)
        if rows == 0 or not self.layers:
            return
        depth = min(2, len(self.layers))
        sample = features.head(rows)
        self.graphs, graphs = False, self.graphs      # real launches: load every kernel
        try:
            for batch in self.batches(sample, depth):
                for index in range(depth):
                    batch = self.layer(batch, index)
                    self.counts(batch)
                    self.merge_duplicates(batch)
                    self.settled(batch, index)
                self.categories(batch)
        finally:
            self.graphs = graphs
        for batch in self.batches(sample, len(self.layers)):   # the multi-layer kernels:
            batch.place.history.fill(0)                        # one launch with no rows
            if self.march_from is not None:
                self._march(batch, self.march_from, self.march_from + 1)
            loaded = set()
            for index, (stop, settings) in self._run_shapes.items():
                end = self.launch_end(index, stop)
                if end > index + 1 and settings not in loaded:
                    loaded.add(settings)
                    self._run(batch, index, end, batch.values, batch.spare, batch.active,
                              batch.spare_active)
        # a merge of a full batch of equal rows: CuPy compiles its scans by size class
        many = min(features.batch_rows, WARM_UP_MERGE_ROWS)
        if many > 1:
            sample = features.head(many)
            batch = next(iter(self.batches(sample, 1)))
            batch.spare[:many * self.layers[0].outputs] = 0
            batch.spare_active[:many] = cp.arange(many, dtype=cp.int32)
            batch.history[4:6] = many
            self._swap(batch)
            batch.done = 1
            self.merge_duplicates(batch)
            self.categories(batch)
        self.synchronize()

    def batches(self, features: Features, depth: int):
        """Yield the live rows in batches that fit in device memory, as fresh active rows."""
        cp = self.cp
        first_values, second_values, state = features.buffers
        total = features.images.size
        for start in range(0, max(total, 1), features.batch_rows):
            count = min(features.batch_rows, total - start)
            place = features.places.get(start)
            if place is None:
                place = features.places[start] = BatchPlace(
                    cp.zeros((len(self.layers) + 1) * 4, cp.int32),
                    cp.zeros(max(1, len(self.layers)), cp.int32), self._mapped(len(self.layers) + 1),
                    self._mapped(features.batch_rows + 1),
                    (features.indptr[start:start + count + 1], features.indices, features.values,
                     features.bits[start:start + count] if features.bits is not None else None),
                    features.images[start:start + count] + 1)
            if place.retire_depth != depth:        # the host's work here is on the clock
                place.retire.set(self._retiring_layers(depth))
                place.retire_depth = depth
            place.seen[:] = -1
            batch = Batch(images=features.images[start:start + count],
                          features=place.features,
                          values=first_values, spare=second_values, active=state["active"],
                          spare_active=state["active_out"],
                          which=state["which"],
                          multiplicity=state["multiplicity"], retired=state["retired"],
                          place=place, state=state, depth=depth)
            if not (self.graphs and (0, self._chunk_end(batch, 0)) in place.graphs):
                self._start(batch)          # else the graph of the first layers starts it
            self._batches.append(batch)
            yield batch

    def _start(self, batch: Batch) -> None:
        """Launch the batch's start: every row active in its own slot (kernels/batch.cu)."""
        size, state = batch.history.size, batch.state
        kernel("batch.cu", "start_batch")(
            (self._small_grid(max(batch.images.size, size)),), (SMALL_THREADS,),
            (np.int32(batch.images.size), batch.history, np.int32(size), state["active"],
             state["which"], state["multiplicity"], state["retired"]))

    def _retiring_layers(self, depth: int) -> np.ndarray:
        """Return, per layer, 1 where a row all YMAX after it stays so through layer depth - 1:
        every later layer of the run keeps an all-YMAX row so."""
        retire = np.zeros(len(self.layers), np.int32)
        keeps = np.append(self.keeps_saturated[1:depth], True)
        retire[:depth] = np.flip(np.logical_and.accumulate(np.flip(keeps)))
        return retire

    def _mapped(self, size: int) -> np.ndarray:
        """Return `size` int32 of pinned host memory that kernels write directly (UVA)."""
        import ctypes

        pointer = self.cp.cuda.runtime.hostAlloc(4 * size, 3)   # portable | mapped
        array = np.ctypeslib.as_array((ctypes.c_int32 * size).from_address(pointer))
        self._reports.append((pointer, array))
        return array

    def __del__(self):
        import contextlib

        for pointer, _ in getattr(self, "_reports", []):
            with contextlib.suppress(Exception):   # the runtime may be gone at exit
                self.cp.cuda.runtime.freeHost(pointer)

    # ------------------------------------------------------------------ the layer loop's steps

    def layer(self, batch: Batch, index: int) -> Batch:
        """Compute layer `index`, or note it done when a march or a graph launched it
        already: a march when few rows are left, else a graph of the layers up to the
        next chunk end, else (weights streamed, graphs off) the layer alone or the run
        kernel's layers from it. A launch that ends where marching may start is followed
        at once by the march, queued behind it: the GPU then goes on without waiting for
        the host's steps between."""
        if index >= batch.launched:
            batch.launched = self._try_march(batch, index)
            if not batch.launched:
                end = self._chunk_end(batch, index)
                graph = self._graph(batch, index, end) if self.graphs else None
                if graph is not None:
                    graph.launch()
                else:
                    end = self._launch_from(batch, index, end, batch.values, batch.spare,
                                            batch.active, batch.spare_active)
                batch.launched = end
                if end == self.march_from and end < batch.depth:
                    batch.launched = self._try_march(batch, end) or end
            if batch.launched % MERGE_INTERVAL == 0 or batch.launched == batch.depth:
                self._list_ahead(batch, batch.launched)
        self._swap(batch)
        batch.done = index + 1
        return batch

    def layer_span(self, batch: Batch, index: int) -> tuple[Batch, int]:
        """Compute layer `index` and take with it the layers after it that a graph or a
        march launched already, up to the next merge: the host has nothing to do between
        them, and stepping through them one by one (a few microseconds each) can outlast
        the GPU's work at small N. Return the batch and the span's end."""
        batch = self.layer(batch, index)
        end = min(batch.launched, self._next_merge(batch, index))
        if (end - batch.done) % 2:       # each layer's output is the next one's input
            self._swap(batch)
        batch.done = end
        return batch, end

    @staticmethod
    def _next_merge(batch: Batch, index: int) -> int:
        """Return the layer after the next merge from layer `index` on, or the depth."""
        return min(batch.depth, (index // MERGE_INTERVAL + 1) * MERGE_INTERVAL)

    @staticmethod
    def _swap(batch: Batch) -> None:
        """Swap the batch's input and output buffers, as a layer does."""
        batch.values, batch.spare = batch.spare, batch.values
        batch.active, batch.spare_active = batch.spare_active, batch.active

    def _chunk_end(self, batch: Batch, index: int) -> int:
        """Return where the graph that starts at layer `index` ends: at a multiple of
        GRAPH_LAYERS (or past it, at the end of a run kernel's layers that go on past
        it), the depth, or the layer where marching may start."""
        end = min(batch.depth, (index // GRAPH_LAYERS + 1) * GRAPH_LAYERS)
        if self.runs and end - 1 in self._run_shapes:
            end = min(batch.depth, max(end, self._run_shapes[end - 1][0]))
        if self.march_from is not None and index < self.march_from:
            end = min(end, self.march_from)
        return end

    def _try_march(self, batch: Batch, index: int) -> int:
        """Launch a march from layer `index` when few rows are left; return its end, or 0
        when no march runs from there.

        A march starts where marching may start or right after a merge and runs to the
        next merge or the depth. After a merge the row count is known. Where marching
        starts it is not: the march is launched at once (it does nothing past MARCH_ROWS
        rows), so that the GPU goes on from the layers before without waiting for the
        host, and the host then waits for the count the kernel reports.
        """
        if not self.march or self.march_from is None or index < self.march_from or \
                index == batch.march_declined:
            return 0
        if index != self.march_from and index % MERGE_INTERVAL:
            return 0
        end = self._next_merge(batch, index)
        if not self._resident(index, end):
            return 0
        known = self._read_already(batch) if index == batch.done else None
        if known is not None and int(known[index, 0]) > MARCH_ROWS:
            return 0
        self._march(batch, index, end)
        if known is not None or self._reported(batch, index) <= MARCH_ROWS:
            return end
        batch.march_declined = index     # launched ahead: not again when the loop gets there
        return 0

    def _reported(self, batch: Batch, index: int) -> int:
        """Return the row count that reaches layer `index`, as a kernel reports it in
        host memory (layer `index`'s as it starts, or a list launched ahead), waiting for it
        there rather than for the stream to drain."""
        count = self._written(batch.seen, index, -1)
        return count if count is not None else int(self._read(batch)[index, 0])

    def _written(self, cells: np.ndarray, at: int, unset: int) -> int | None:
        """Wait until a kernel writes cells[at] (mapped host memory holding `unset` until
        then) and return it; None if the stream drains without it."""
        stream = self.cp.cuda.get_current_stream()
        polls = 0
        while cells[at] == unset:
            polls += 1      # the stream now and then: done raises a failed kernel's error
            if polls % POLLS_PER_QUERY == 0 and stream.done:
                break
        value = int(cells[at])
        return None if value == unset else value

    def _march(self, batch: Batch, first: int, end: int) -> None:
        """Launch the march kernel over layers [first, end) for the active rows that reach
        layer `first` (launched ahead, behind the layers before it, or when it is next)."""
        cp = self.cp
        function, grid, shared, widest = self._march_plan()
        assert end - first <= MERGE_INTERVAL, "a march ends at the next merge (its MAX_LAYERS)"
        state = batch.state
        slots = state["staged"]
        values, spare, active, spare_active = self._buffers_at(batch, first)
        cp.cuda.runtime.memcpyAsync(slots.data.ptr, active.data.ptr, slots.nbytes,
                                    cp.cuda.runtime.memcpyDeviceToDevice,
                                    cp.cuda.get_current_stream().ptr)
        odd = (end - first) % 2 == 1          # where layer end - 1's output lies
        function((grid,), (MARCH_THREADS,),
                 (self._march_table, np.int32(first), np.int32(end), values,
                  spare if odd else values, slots, spare_active if odd else active, batch.history,
                  np.uint64(batch.report), state["multiplicity"], state["retired"],
                  batch.place.retire, state["march_done"], np.int32(widest),
                  np.int32(MARCH_ROWS), self.bias,
                  np.float32(YMAX)), shared_mem=shared)

    def _launch_from(self, batch: Batch, index: int, limit: int, values, spare, active,
                     spare_active) -> int:
        """Launch layer `index` alone or, where the run kernel takes it, its layers from
        there up to `limit` at most; return the layer after those launched."""
        end = self.launch_end(index, limit)
        if end == index + 1:
            self._launch_layer(batch, index, values, spare, active, spare_active)
        else:
            self._run(batch, index, end, values, spare, active, spare_active)
        return end

    def _launch_layer(self, batch: Batch, index: int, values, spare, active, spare_active):
        self._launch(index, None if index == 0 else values,
                     batch.features if index == 0 else None, spare, active, spare_active,
                     batch.history, index, batch.state, retire=batch.place.retire,
                     report=batch.report)

    def _graph(self, batch: Batch, first: int, end: int):
        """Return the CUDA graph of layers [first, end) of the batch's place, capturing it
        the first time; None where a layer's weights stream from host memory or this CuPy
        cannot capture (then the layers are launched one by one)."""
        key = (first, end)
        graph = batch.place.graphs.get(key)
        if graph is not None or not self._resident(first, end):
            return graph
        cp = self.cp
        if self._capture_stream is None:
            self._capture_stream = cp.cuda.Stream(non_blocking=True)
        stream = self._capture_stream
        values, spare, active, spare_active = self._buffers_at(batch, first)
        try:
            with stream:
                stream.begin_capture()
                try:
                    if first == 0:      # the batch's start, once captured here (batches)
                        self._start(batch)
                    index = first
                    while index < end:       # each launch runs an odd number of layers
                        index = self._launch_from(batch, index, end, values, spare, active,
                                                  spare_active)
                        values, spare = spare, values
                        active, spare_active = spare_active, active
                finally:
                    graph = stream.end_capture()
        except (AttributeError, cp.cuda.runtime.CUDARuntimeError,
                cp.cuda.driver.CUDADriverError):
            self.graphs = False
            return None
        batch.place.graphs[key] = graph
        return graph

    @staticmethod
    def _buffers_at(batch: Batch, index: int) -> tuple:
        """Return (values, spare, active, spare_active) as layer `index` will find them:
        they swap after every layer, so a graph captured ahead of the layer loop (while
        the features load) starts from the pair its first layer will really read."""
        buffers = (batch.values, batch.spare, batch.active, batch.spare_active)
        if (index - batch.done) % 2:
            buffers = (batch.spare, batch.values, batch.spare_active, batch.active)
        return buffers

    def prune(self, batch: Batch) -> Batch:
        return batch    # the layer kernel already dropped the rows that died

    def merge_duplicates(self, batch: Batch) -> Batch:
        """Merge identical active rows: hash on the GPU, sort, confirm entry by entry."""
        cp = self.cp
        import cupyx

        count = int(self._read(batch)[batch.done, 0])
        if count < 2 or batch.done == 0:
            return batch
        width = self.layers[batch.done - 1].outputs
        slots = batch.active[:count]
        hashes = cp.empty(count, cp.uint64)
        blocks = min(-(-count // (ROW_THREADS // 32)), 32 * self.multiprocessors)
        kernel("rows.cu", "row_hashes")((blocks,), (ROW_THREADS,),
                                        (batch.values, np.int32(width), slots, np.int32(count),
                                         hashes))
        order = cp.argsort(hashes)
        slots, hashes = slots[order], hashes[order]
        head = cp.ones(count, bool)
        head[1:] = hashes[1:] != hashes[:-1]
        if bool(head.all()):
            return batch
        first = cp.flatnonzero(head)[cp.cumsum(head) - 1]
        others = slots[first].astype(cp.int32)
        equal = cp.zeros(count, cp.uint8)
        kernel("rows.cu", "rows_equal")((blocks,), (ROW_THREADS,),
                                        (batch.values, np.int32(width), slots, others,
                                         np.int32(count), equal))
        merged = ~head & (equal == 1)
        into, gone = others[merged], slots[merged]
        target = cp.arange(batch.multiplicity.size, dtype=cp.int32)
        target[gone] = into
        cupyx.scatter_add(batch.multiplicity, into, batch.multiplicity[gone])
        batch.which = target[batch.which]
        kept = slots[~merged]
        batch.active[:kept.size] = kept
        batch.history[batch.done * 4] = kept.size
        batch.seen[batch.done] = kept.size     # a list launched ahead reported the count before
        batch.read = None
        return batch

    def _history(self, batch: Batch) -> np.ndarray:
        return batch.history.get().reshape(-1, 4)

    def _read(self, batch: Batch) -> np.ndarray:
        """Return the history, read once per number of layers done: the read waits for
        those layers, and no later kernel writes their rows (a merge clears the read)."""
        history = self._read_already(batch)
        if history is None:
            history = self._history(batch)
            batch.read = (batch.done, history)
        batch.empty = batch.empty or history[batch.done, 0] == 0
        return history

    @staticmethod
    def _read_already(batch: Batch) -> np.ndarray | None:
        """Return the history read since the last layer was done, or None if none was."""
        return batch.read[1] if batch.read is not None and batch.read[0] == batch.done else None

    def counts(self, batch: Batch) -> tuple[int, int]:
        return self._counts_from(self._read(batch), batch.done)

    @staticmethod
    def _counts_from(history: np.ndarray, done: int) -> tuple[int, int]:
        """Return (active images, distinct rows) after layer `done` from the history."""
        retired = history[1:done + 1, 2:].sum(axis=0)
        active, images = history[done, :2]
        return int(images + retired[1]), int(active + (retired[0] > 0))

    def counts_later(self, batch: Batch, done: int | None = None):
        """Return a function giving counts() after `done` layers (default: those done now),
        read from the device once at the end."""
        done = batch.done if done is None else done

        def resolve():
            if batch.final_history is None:
                batch.final_history = self._history(batch)
            return self._counts_from(batch.final_history, done)

        return resolve

    def merge_due(self, batch: Batch, index: int) -> bool:
        """Return whether the layer loop should look for identical rows after layer `index`."""
        return (index + 1) % MERGE_INTERVAL == 0

    def settled(self, batch: Batch, index: int) -> bool:
        """Return True once the GPU has reported no row left to compute.

        Each layer's kernel writes its input count to seen[layer] in host memory as it
        starts, so the answer comes a layer or two late; counts only fall. Where a merge
        is due and a list was launched ahead after this layer, the count after it is
        waited for: the merge would wait for those layers anyway (and when it is 0, the
        answer is known without looking further).
        """
        if batch.listed_ahead == index + 1 and self.merge_due(batch, index) and \
                self._reported(batch, index + 1) == 0:
            batch.empty = True
            return True
        seen = batch.seen
        if batch.landed < batch.done:   # the layers that have started since the last look
            pending = np.flatnonzero(seen[batch.landed + 1:batch.done + 1] < 0)
            batch.landed = batch.done if pending.size == 0 else batch.landed + int(pending[0])
        return batch.empty or seen[batch.landed] == 0

    def categories(self, batch: Batch) -> np.ndarray:
        """Return the batch's categories: its images whose rows are active or retired.

        A list launched ahead serves when it found no row left; else one is made now."""
        cp = self.cp
        listed = batch.place.listed
        if batch.listed_ahead and self._written(listed, 0, LIST_PENDING) not in (None, -1):
            return batch.place.numbers.take(listed[1:1 + listed[0]])
        alive = batch.state["alive"]
        slots = batch.retired.size
        if batch.empty:             # no active row left: the retired ones are all there is
            alive = batch.retired
        else:
            cp.cuda.runtime.memcpyAsync(alive.data.ptr, batch.retired.data.ptr, slots,
                                        cp.cuda.runtime.memcpyDeviceToDevice,
                                        cp.cuda.get_current_stream().ptr)
            kernel("batch.cu", "mark_active")((self._small_grid(slots),), (SMALL_THREADS,),
                                              (batch.history[batch.done * 4:], batch.active,
                                               alive))
        self._list(batch, alive)
        self.synchronize()                      # the list is in host memory now
        return batch.place.numbers.take(listed[1:1 + listed[0]])    # ascending, as the images

    def _list_ahead(self, batch: Batch, done: int) -> None:
        """List the categories right after the launch that runs the batch to layer `done`,
        in case no row is left then (the kernel checks, and reports the count to seen[])."""
        batch.place.listed[0] = LIST_PENDING
        batch.listed_ahead = done
        self._list(batch, batch.retired, batch.history[done * 4:],
                   batch.seen.ctypes.data + 4 * done)

    def _list(self, batch: Batch, alive, rows_left=None, report_left: int = 0) -> None:
        """Launch the listing of the images whose slots are marked in `alive` (batch.cu)."""
        images = batch.images.size
        warps = -(-images // 32)                # a warp takes 32 images at a time
        blocks = max(1, min(-(-warps // (LIST_THREADS // 32)), 2 * self.multiprocessors))
        kernel("batch.cu", "category_list", LIST_THREADS=LIST_THREADS)(
            (blocks,), (LIST_THREADS,),
            (batch.which, np.int32(images), alive, np.uint64(batch.place.listed.ctypes.data),
             rows_left if rows_left is not None else np.uint64(0), np.uint64(report_left),
             batch.state["list_words"], batch.state["list_done"]))

    def _small_grid(self, items: int) -> int:
        return max(1, min(-(-items // SMALL_THREADS), 4 * self.multiprocessors))

    @property
    def multiply_adds(self) -> int:
        total = 0
        for batch in self._batches:
            history = self._history(batch)
            for index in range(batch.done):
                total += int(history[index, 0]) * self.layers[index].layout.entries
        return total

    def synchronize(self) -> None:
        self.cp.cuda.get_current_stream().synchronize()
