"""`spdnn run` under MPI: one rank per GPU, feature rows split by non-zeros, one report.

Launch with `mpiexec -n K spdnn run ...` or `srun spdnn run ...`; no flag is needed: an
MPI launch is recognised from the environment before mpi4py is imported, so a plain run
never imports it. `SPDNN_MPI=0` or `=1` overrides the guess.

Every rank runs the same phases: start, read (node leaders), share (collectives), infer,
gather. A phase whose local work can fail on some ranks only (making the engine, reading,
inferring) ends with an agreement: every rank learns the first failure and all leave
together, with exit code 2 for bad input. Anything that escapes outside such a phase
aborts the whole job, so that no rank is ever left waiting in a collective.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from . import dataset, runner
from .errors import SpdnnError
from .infer import Inference, infer
from .network import Network

SPDNN_MPI = "SPDNN_MPI"
"""Set to 0 to run one plain process even under a launcher, to 1 to force MPI."""

LAUNCHER_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
"""World size as Open MPI, MPICH/Intel MPI (Hydra, srun --mpi=pmi2) and MVAPICH export it."""

LAUNCHER_MARK_VARIABLES = ("PMIX_RANK", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
"""Set by PMIx launchers (srun --mpi=pmix, Open MPI 5) and Hydra even where no size is."""

CHUNK_BYTES = 1 << 30
"""Big arrays travel in pieces of at most this many bytes, under MPI's 2 GiB count limit."""

INPUT_ERROR, INTERNAL_ERROR = 2, 1
"""Exit codes of a failed job: bad input, or anything else."""
ABORT_GRACE_SECONDS = 0.5
"""Pause between a rank's last message and MPI_Abort: the launcher forwards a rank's
stderr asynchronously, and an abort right after the write can lose the message (seen
once in CI with MPICH's mpiexec)."""


def _integer(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def launched(environ=os.environ) -> bool:
    """Return whether an MPI launcher (mpiexec, mpirun, srun) started this process."""
    setting = environ.get(SPDNN_MPI, "").strip().lower()
    if setting in ("0", "1"):
        return setting == "1"
    if any(name in environ for name in LAUNCHER_SIZE_VARIABLES + LAUNCHER_MARK_VARIABLES):
        return True
    # a batch script's own shell has SLURM variables too: only a multi-task step counts
    return _integer(environ.get("SLURM_STEP_NUM_TASKS")) > 1


def expected_size(environ=os.environ) -> int | None:
    """Return the world size the launcher announced, or None when it announced none."""
    for name in LAUNCHER_SIZE_VARIABLES + ("SLURM_STEP_NUM_TASKS",):
        if _integer(environ.get(name)) > 0:
            return _integer(environ.get(name))
    return None


def balanced_bounds(row_nonzeros: np.ndarray, parts: int) -> np.ndarray:
    """Return parts + 1 row boundaries: contiguous ranges of about equal non-zeros.

    Cuts fall where the cumulative non-zeros are nearest to k / parts of the total, so
    the bounds for K ranks are a subset of those for 2K (a K-rank balance can be read
    off a 2K-rank run). Without non-zeros the rows are split by count.
    """
    row_nonzeros = np.asarray(row_nonzeros, dtype=np.int64)
    rows = row_nonzeros.size
    prefix = np.concatenate(([0], np.cumsum(row_nonzeros)))
    if prefix[-1] == 0:
        return np.round(np.linspace(0, rows, parts + 1)).astype(np.int64)
    targets = prefix[-1] * np.arange(parts + 1) / parts
    upper = np.searchsorted(prefix, targets, side="left")   # first prefix >= target
    lower = np.maximum(upper - 1, 0)
    upper = np.minimum(upper, rows)
    nearest = np.where(targets - prefix[lower] < prefix[upper] - targets, lower, upper)
    nearest[0], nearest[-1] = 0, rows
    return np.maximum.accumulate(nearest).astype(np.int64)


class RankFailure(SpdnnError):
    """Bad input on some rank, raised on rank 0 after every rank has agreed to stop."""


@dataclass
class Gathered(Inference):
    """The whole job's inference: categories of all ranks, the slowest rank's times."""

    per_rank: list[dict] = field(default_factory=list)


@dataclass
class Job:
    """This process's place in the MPI job: the world, its node, and its share of cores."""

    world: Any
    node: Any
    host: str
    node_world_ranks: list[int]
    threads: int

    @property
    def rank(self) -> int:
        return self.world.rank

    @property
    def size(self) -> int:
        return self.world.size

    @property
    def root(self) -> bool:
        return self.world.rank == 0

    @property
    def leader(self) -> bool:
        """Whether this rank reads the files for its node (world rank 0 always does)."""
        return self.node.rank == 0

    @contextlib.contextmanager
    def phase(self):
        """Run the block on every rank, then stop every rank if it failed on any."""
        error = None
        try:
            yield
        except Exception as caught:  # noqa: BLE001 - every failure must reach the agreement
            error = caught
        self._agree(error)

    def _agree(self, error: Exception | None) -> None:
        report = None if error is None else self._describe(error)
        failures = [r for r in self.world.allgather(report) if r is not None]
        if not failures:
            return
        first = failures[0]
        where = "" if first["rank"] == 0 else f"rank {first['rank']} on {first['host']}: "
        if not self.root:
            raise SystemExit(first["code"])
        if first["code"] == INPUT_ERROR:
            raise RankFailure(where + first["message"])
        print(f"spdnn: {where}{first['message']} (the job stopped; traceback above)",
              file=sys.stderr, flush=True)
        raise SystemExit(first["code"])

    def _describe(self, error: Exception) -> dict:
        if isinstance(error, SpdnnError):
            code, message = INPUT_ERROR, str(error)
        elif isinstance(error, OSError):
            code, message = INPUT_ERROR, f"{error.filename or ''}: {error.strerror or error}"
        else:
            code, message = INTERNAL_ERROR, f"{type(error).__name__}: {error}"
            print(f"spdnn: rank {self.rank} on {self.host} failed:", file=sys.stderr)
            traceback.print_exception(type(error), error, error.__traceback__)
            sys.stderr.flush()
        return {"rank": self.rank, "host": self.host, "code": code, "message": message}

    @contextlib.contextmanager
    def abort_on_escape(self):
        """Abort the whole job when an exception escapes outside an agreed phase."""
        try:
            yield
        except (RankFailure, SystemExit):
            raise
        except BaseException:  # noqa: BLE001 - any escape must abort, or peers hang
            print(f"spdnn: rank {self.rank} on {self.host}: unexpected failure, aborting the "
                  "job", file=sys.stderr)
            traceback.print_exc()
            sys.stderr.flush()
            time.sleep(ABORT_GRACE_SECONDS)    # let the launcher forward the message
            self.world.Abort(INTERNAL_ERROR)

    def make_engine(self, backend: str, threads: int | None):
        """Return (engine, GPU index or None): GPU node-local rank % visible GPUs, or cores."""
        from .backends import make_engine, resolve

        backend = resolve(backend)
        if backend == "cuda":
            import cupy

            # works whether the scheduler shows each rank one GPU or all of the node's
            gpu = self.node.rank % cupy.cuda.runtime.getDeviceCount()
            cupy.cuda.Device(gpu).use()
            return make_engine(backend, threads), gpu
        threads = threads or self.threads
        if "numba" not in sys.modules:   # keep numba's pool to this rank's share of cores
            os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))
        return make_engine(backend, threads), None

    def share_network(self, network: Network | None) -> Network:
        """Return the network on every rank of the node, sent from the node's leader."""
        if self.node.size == 1:
            return network
        head = (network.neurons, float(network.bias), network.layer_nonzeros.tolist(),
                network.depth) if self.leader else None
        neurons, bias, layer_nonzeros, depth = self.node.bcast(head, root=0)
        layers = [_bcast_csr(self.node, network.layers[k] if self.leader else None,
                             (neurons, neurons)) for k in range(depth)]
        return network if self.leader else Network(neurons, layers, bias, layer_nonzeros)

    def share_features(self, features: sp.csr_matrix | None) -> tuple[sp.csr_matrix, int]:
        """Return this rank's contiguous rows of the features and the first row's index."""
        bounds = self.node.bcast(balanced_bounds(np.diff(features.indptr), self.size)
                                 if self.leader else None, root=0)
        first, last = int(bounds[self.rank]), int(bounds[self.rank + 1])
        if not self.leader:
            return _recv_csr(self.node, source=0), first
        for local, world in enumerate(self.node_world_ranks[1:], start=1):
            _send_csr(self.node, features[bounds[world]:bounds[world + 1]], local)
        return features[first:last], first

    def gather_categories(self, categories: np.ndarray) -> np.ndarray | None:
        """Return every rank's categories (global ids) on rank 0, in rank order."""
        categories = np.ascontiguousarray(categories, dtype=np.int64)
        counts = self.world.gather(categories.size, root=0)
        if not self.root:
            self.world.Gatherv(categories, None, root=0)
            return None
        everything = np.empty(sum(counts), np.int64)
        self.world.Gatherv(categories, [everything, counts], root=0)
        return everything


def start() -> Job:
    """Return this process's Job, initialising MPI (mpi4py is imported here, not before)."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise SpdnnError("started by an MPI launcher, but mpi4py is missing: "
                         "pip install 'spdnn[mpi]' (or set SPDNN_MPI=0)") from None
    world = MPI.COMM_WORLD
    announced = expected_size()
    if announced and announced > 1 and world.size == 1:
        # each task would run the whole problem alone: the launcher and MPI do not match
        raise SpdnnError(f"the launcher started {announced} tasks but MPI sees 1 rank: give srun "
                         "--mpi=pmix or --mpi=pmi2 to match the MPI that mpi4py uses")
    node = world.Split_type(MPI.COMM_TYPE_SHARED, key=world.rank)
    cores = sorted(os.sched_getaffinity(0))
    node_cores = node.allgather(cores)
    # ranks pinned to disjoint cores by the launcher keep theirs; unpinned ranks share
    sharing = sum(1 for other in node_cores if other == cores)
    return Job(world, node, MPI.Get_processor_name(), node.allgather(world.rank),
               max(1, len(cores) // sharing))


def run(find_sources: Callable[[], dataset.Sources], bias: float | None, backend: str,
        threads: int | None, progress: dataset.Progress = dataset.no_progress
        ) -> tuple[Gathered | None, dict | None]:
    """Run the problem on every rank; return (inference, record) on rank 0, (None, None) elsewhere.

    `find_sources` locates the files; the node leaders call it inside the job, so that a
    rank that cannot see them stops the whole job instead of leaving the others waiting.

    Raises RankFailure on rank 0 and SystemExit elsewhere when any rank failed.
    """
    job = start()
    with job.abort_on_escape():
        return _run(job, find_sources, bias, backend, threads, progress)


def _run(job: Job, find_sources, bias, backend, threads, progress):
    engine = gpu = None
    with job.phase():
        engine, gpu = job.make_engine(backend, threads)

    began = time.perf_counter()
    problem = None
    with job.phase():
        if job.leader:     # once per node; only rank 0 needs the truth
            sources = find_sources()
            mine = sources if job.root else dataclasses.replace(sources, categories=None)
            problem = dataset.load(mine, bias, progress if job.root else dataset.no_progress)
    network = job.share_network(problem.network if job.leader else None)
    features, first = job.share_features(problem.features if job.leader else None)
    read_seconds = time.perf_counter() - began

    result = None
    job.world.Barrier()       # every rank starts the timed region together
    with job.phase():
        result = infer(network, features, engine)

    began = time.perf_counter()
    categories = job.gather_categories(result.categories + first)
    gather_seconds = time.perf_counter() - began
    mine = {"rank": job.rank, "host": job.host, "device": engine.device, "gpu": gpu,
            "first_row": first, "rows": features.shape[0], "nonzeros": int(features.nnz),
            "read_seconds": read_seconds, "upload_seconds": result.upload_seconds,
            "inference_seconds": result.seconds, "multiply_adds": result.multiply_adds,
            "categories": int(result.categories.size), "active_rows": result.active_rows,
            "distinct_rows": result.distinct_rows}
    ranks = job.world.gather(mine, root=0)
    if not job.root:
        return None, None
    gathered = merge(ranks, categories)
    problem = dataclasses.replace(problem, read_seconds=max(r["read_seconds"] for r in ranks))
    entry = runner.record(problem, gathered, engine, ranks=job.size)
    entry["gather_seconds"] = gather_seconds
    entry["per_rank"] = [{key: value for key, value in r.items()
                          if key not in ("active_rows", "distinct_rows")} for r in ranks]
    return gathered, entry


def merge(ranks: list[dict], categories: np.ndarray) -> Gathered:
    """Return the job's inference from the per-rank entries: sums, and the slowest times.

    Active rows add up exactly; distinct rows are per rank, so their sum counts a row
    that two ranks both hold twice.
    """
    def total(key):
        return [int(x) for x in np.sum([r[key] for r in ranks], axis=0)]

    return Gathered(categories=np.sort(categories),
                    seconds=max(r["inference_seconds"] for r in ranks),
                    upload_seconds=max(r["upload_seconds"] for r in ranks),
                    active_rows=total("active_rows"), distinct_rows=total("distinct_rows"),
                    multiply_adds=sum(r["multiply_adds"] for r in ranks),
                    per_rank=[{key: r[key] for key in ("rank", "rows", "nonzeros",
                                                       "inference_seconds", "multiply_adds",
                                                       "active_rows", "distinct_rows")}
                              for r in ranks])


def _chunks(array: np.ndarray):
    """Yield byte views of `array` (contiguous) of at most CHUNK_BYTES each."""
    flat = array.reshape(-1).view(np.uint8)
    for start in range(0, flat.size, CHUNK_BYTES):
        yield flat[start:start + CHUNK_BYTES]


def _csr_arrays(matrix: sp.csr_matrix) -> list[np.ndarray]:
    return [np.ascontiguousarray(a) for a in (matrix.indptr, matrix.indices, matrix.data)]


def _from_arrays(arrays: list[np.ndarray], shape: tuple[int, int]) -> sp.csr_matrix:
    indptr, indices, data = arrays
    return sp.csr_matrix((data, indices, indptr), shape=shape)


def _empty(spec) -> list[np.ndarray]:
    return [np.empty(size, np.dtype(dtype)) for dtype, size in spec]


def _bcast_csr(comm, matrix: sp.csr_matrix | None, shape) -> sp.csr_matrix:
    """Return `matrix` from the root of `comm` on every rank, sent as raw buffers."""
    arrays = _csr_arrays(matrix) if comm.rank == 0 else None
    spec = comm.bcast([(a.dtype.str, a.size) for a in arrays] if arrays else None, root=0)
    if comm.rank != 0:
        arrays = _empty(spec)
    for array in arrays:
        for piece in _chunks(array):
            comm.Bcast(piece, root=0)
    return matrix if comm.rank == 0 else _from_arrays(arrays, shape)


def _send_csr(comm, matrix: sp.csr_matrix, dest: int) -> None:
    arrays = _csr_arrays(matrix)
    comm.send((matrix.shape, [(a.dtype.str, a.size) for a in arrays]), dest=dest)
    for array in arrays:
        for piece in _chunks(array):
            comm.Send(piece, dest=dest)


def _recv_csr(comm, source: int) -> sp.csr_matrix:
    shape, spec = comm.recv(source=source)
    arrays = _empty(spec)
    for array in arrays:
        for piece in _chunks(array):
            comm.Recv(piece, source=source)
    return _from_arrays(arrays, shape)
