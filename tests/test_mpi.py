"""`spdnn run` under mpiexec: the same categories, one report, and failures that stop every rank.

The partition and launch-detection tests run everywhere; the rest start `mpiexec -n 2`
(CPU backend) and are skipped with a reason when mpiexec or mpi4py is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import random_features, random_network, reference_categories
from test_cli import write_layout

from spdnn import distributed
from spdnn.cli import main

RANKS = 2
TIMEOUT = 300
"""Seconds before a run counts as hung; a healthy 2-rank run takes well under a minute."""

LAUNCHER_VARIABLES = distributed.LAUNCHER_SIZE_VARIABLES + distributed.LAUNCHER_MARK_VARIABLES


def find_mpiexec() -> str | None:
    """Return the mpiexec beside this Python (pip's mpich wheel puts it there), or on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.is_file() else shutil.which("mpiexec")


MPIEXEC = find_mpiexec()
needs_mpi = [
    pytest.mark.mpi,
    pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)"),
    pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None,
                       reason="no mpi4py (pip install mpi4py)"),
]


def plain_environment() -> dict:
    """Return this environment without any launcher's variables (the test's own launch)."""
    return {key: value for key, value in os.environ.items()
            if key not in LAUNCHER_VARIABLES + (distributed.SPDNN_MPI,)
            and not key.startswith("SLURM_")}


def mpiexec(*args, ranks=RANKS) -> subprocess.CompletedProcess:
    """Run `mpiexec -n ranks` on `args` (strings), failing the test on a hang."""
    environment = plain_environment()
    # harmless for MPICH; lets Open MPI run as root and with more ranks than cores
    environment.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                       OMPI_MCA_rmaps_base_oversubscribe="1")
    command = [MPIEXEC, "-n", str(ranks), *map(str, args)]
    try:
        return subprocess.run(command, check=False, capture_output=True, text=True,
                              timeout=TIMEOUT, env=environment)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for {TIMEOUT} s: {' '.join(command)}")


def spdnn_run(*args, ranks=RANKS):
    return mpiexec(sys.executable, "-m", "spdnn", "run", *args, ranks=ranks)


# --- the partition ----------------------------------------------------------------------

def test_partition_cuts_at_equal_cumulative_nonzeros(rng):
    # dense rows first, sparse rows after: a split by row count would be badly unbalanced
    row_nonzeros = np.concatenate([rng.integers(50, 100, 300), rng.integers(0, 5, 700)])
    total, heaviest = row_nonzeros.sum(), row_nonzeros.max()
    for parts in range(1, 10):
        bounds = distributed.balanced_bounds(row_nonzeros, parts)
        assert bounds[0] == 0 and bounds[-1] == row_nonzeros.size
        assert np.all(np.diff(bounds) >= 0)
        shares = np.add.reduceat(np.append(row_nonzeros, 0), bounds[:-1])
        shares[np.diff(bounds) == 0] = 0
        assert shares.sum() == total
        # each cut lies within half a row of its target, so a share is off by at most a row
        assert np.all(np.abs(shares - total / parts) <= heaviest), (parts, shares)
    by_count = np.add.reduceat(row_nonzeros, [0, 500])
    assert by_count.max() > 1.5 * total / 2     # the split that this one avoids


def test_partition_for_k_ranks_is_contained_in_the_one_for_2k(rng):
    row_nonzeros = rng.integers(0, 40, size=rng.integers(10, 5000))
    for parts in (1, 2, 3, 4):
        coarse = distributed.balanced_bounds(row_nonzeros, parts)
        fine = distributed.balanced_bounds(row_nonzeros, 2 * parts)
        np.testing.assert_array_equal(coarse, fine[::2])


def test_partition_without_nonzeros_or_with_more_ranks_than_rows():
    np.testing.assert_array_equal(distributed.balanced_bounds(np.zeros(6, int), 3), [0, 2, 4, 6])
    bounds = distributed.balanced_bounds(np.array([5, 1, 7]), 8)
    assert bounds[0] == 0 and bounds[-1] == 3 and np.all(np.diff(bounds) >= 0)


# --- recognising a launch -----------------------------------------------------------------

@pytest.mark.parametrize("environment, expected", [
    ({}, False),
    ({"PMI_SIZE": "2", "PMI_RANK": "0"}, True),               # MPICH / Intel MPI Hydra
    ({"OMPI_COMM_WORLD_SIZE": "4"}, True),                    # Open MPI
    ({"PMIX_RANK": "0"}, True),                               # srun --mpi=pmix
    ({"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "1"}, True),
    ({"SLURM_STEP_NUM_TASKS": "1", "SLURM_JOB_ID": "7"}, False),  # one task, or the batch shell
    ({"PMI_SIZE": "2", "SPDNN_MPI": "0"}, False),
    ({"SPDNN_MPI": "1"}, True),
])
def test_an_mpi_launch_is_recognised_from_the_environment(environment, expected):
    assert distributed.launched(environment) is expected




# --- under mpiexec ------------------------------------------------------------------------

@pytest.fixture
def problem(rng, tmp_path):
    network = random_network(rng, 40, 6, 0.5)
    features = random_features(rng, 150, 40)
    truth = reference_categories(network, features)
    data = write_layout(tmp_path / "data", network, features, truth=truth)
    return data, network, features, truth


def with_mpi(test):
    for mark in needs_mpi:
        test = mark(test)
    return test


def test_a_plain_run_never_imports_mpi4py(problem):
    data, network, *_ = problem
    probe = textwrap.dedent(f"""
        import sys
        from spdnn.cli import main
        try:
            main(["run", "--data-dir", {str(data)!r}, "--layers", "{network.depth}",
                  "--bias", "{network.bias}", "--backend", "cpu"])
        except SystemExit as done:
            assert done.code in (0, None), done.code
        assert "mpi4py" not in sys.modules, "mpi4py was imported"
    """)
    result = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True,
                            text=True, env=plain_environment(), timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert "1 rank(s)" in result.stdout


@with_mpi
def test_two_ranks_give_the_single_process_categories_and_one_report(problem, tmp_path):
    data, network, features, truth = problem
    common = ["--data-dir", data, "--layers", network.depth, "--bias", network.bias,
              "--backend", "cpu"]
    single = tmp_path / "single.tsv"
    alone = CliRunner().invoke(main, ["run", *map(str, common), "--out", str(single)])
    assert alone.exit_code == 0, alone.output

    out, record, trace = tmp_path / "mpi.tsv", tmp_path / "mpi.json", tmp_path / "trace.json"
    result = spdnn_run(*common, "--out", out, "--json", record, "--trace", trace)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("spdnn: N=") == 1, result.stdout
    assert "2 rank(s)" in result.stdout and "match the truth" in result.stdout

    categories = np.loadtxt(out, dtype=int, ndmin=1)
    np.testing.assert_array_equal(categories, np.loadtxt(single, dtype=int, ndmin=1))
    np.testing.assert_array_equal(categories, truth)

    entry = json.loads(record.read_text())
    assert entry["ranks"] == RANKS and entry["verified"] is True
    assert [r["rank"] for r in entry["per_rank"]] == list(range(RANKS))
    assert sum(r["rows"] for r in entry["per_rank"]) == features.shape[0]
    assert sum(r["nonzeros"] for r in entry["per_rank"]) == features.nnz
    assert sum(r["categories"] for r in entry["per_rank"]) == truth.size
    assert entry["inference_seconds"] == max(r["inference_seconds"] for r in entry["per_rank"])
    for key in ("host", "device", "first_row", "read_seconds", "upload_seconds"):
        assert all(key in r for r in entry["per_rank"])

    traced = json.loads(trace.read_text())
    per_rank_active = np.sum([r["active_rows"] for r in traced["per_rank"]], axis=0)
    np.testing.assert_array_equal(per_rank_active, traced["active_rows"])
    assert traced["active_rows"][-1] == truth.size


@with_mpi
def test_a_malformed_layer_file_stops_every_rank_with_exit_2(problem, tmp_path):
    data, network, *_ = problem
    (data / "neuron40" / "n40-l3.tsv").write_text("1\t2\t0.5\n3\tx\t1\n")
    out, record = tmp_path / "c.tsv", tmp_path / "r.json"
    result = spdnn_run("--data-dir", data, "--layers", network.depth, "--bias", network.bias,
                       "--backend", "cpu", "--out", out, "--json", record)
    assert result.returncode == 2, result.stderr
    message = "n40-l3.tsv:2: column 2: 'x' is not an integer"
    assert result.stderr.count(message) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not record.exists()


def run_script(tmp_path, body: str):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(body))
    return mpiexec(sys.executable, script)


@with_mpi
def test_bad_input_on_one_rank_only_stops_the_job_with_its_message(tmp_path):
    result = run_script(tmp_path, """
        from spdnn import distributed
        from spdnn.errors import SpdnnError

        job = distributed.start()
        try:
            with job.phase():
                if job.rank == 1:
                    raise SpdnnError("layer.tsv:3: broken")
            job.world.Barrier()
        except distributed.RankFailure as failure:
            raise SystemExit(f"rank {job.rank} reports: {failure}") from None
        print("unreachable: the job went on", flush=True)
    """)
    # rank 0 reports rank 1's message; rank 1 leaves quietly with the same code
    assert "rank 0 reports: rank 1 on" in result.stderr and "layer.tsv:3: broken" in result.stderr
    assert result.stderr.count("broken") == 1, result.stderr
    assert "unreachable" not in result.stdout
    assert result.returncode != 0


@with_mpi
def test_an_error_outside_a_phase_aborts_instead_of_hanging(tmp_path):
    result = run_script(tmp_path, """
        from spdnn import distributed

        job = distributed.start()
        with job.abort_on_escape():
            if job.rank == 1:
                raise ValueError("bug between collectives")
            job.world.Barrier()       # rank 0 would wait here forever without the abort
    """)
    assert result.returncode != 0
    assert "bug between collectives" in result.stderr


@with_mpi
def test_weights_and_rows_arrive_intact_when_sent_in_small_pieces(tmp_path):
    result = run_script(tmp_path, """
        import numpy as np
        import scipy.sparse as sp
        from spdnn import distributed
        from spdnn.network import Network

        distributed.CHUNK_BYTES = 24          # many pieces, and pieces that split a value
        job = distributed.start()
        layers = [sp.random(50, 50, density=0.1, format="csr", dtype=np.float32,
                            random_state=k) for k in range(3)]
        features = sp.random(31, 50, density=0.2, format="csr", dtype=np.float32,
                             random_state=9)
        mine = job.share_network(Network(50, layers, -0.25) if job.leader else None)
        rows, first = job.share_features(features if job.leader else None)
        assert mine.bias == -0.25 and mine.depth == 3
        for got, sent in zip(mine.layers, layers):
            assert (got != sent).nnz == 0 and got.dtype == sent.dtype
        bounds = distributed.balanced_bounds(np.diff(features.indptr), job.size)
        assert first == bounds[job.rank]
        assert (rows != features[bounds[job.rank]:bounds[job.rank + 1]]).nnz == 0
        if job.world.gather(True, root=0):
            print("intact on", job.size, "ranks", flush=True)
    """)
    assert result.returncode == 0, result.stderr
    assert f"intact on {RANKS} ranks" in result.stdout


@pytest.mark.mpi
@pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None, reason="no mpi4py")
def test_tasks_that_mpi_does_not_join_stop_instead_of_each_running_everything(problem):
    # what `srun` without the matching --mpi plugin does: 4 tasks, each a 1-rank MPI world
    data, network, *_ = problem
    result = subprocess.run(
        [sys.executable, "-m", "spdnn", "run", "--data-dir", str(data), "--layers",
         str(network.depth), "--bias", str(network.bias), "--backend", "cpu"],
        check=False, capture_output=True, text=True, timeout=TIMEOUT,
        env={**plain_environment(), "SLURM_STEP_NUM_TASKS": "4"})
    assert result.returncode == 2, result.stderr
    assert "started 4 tasks but MPI sees 1 rank" in result.stderr
    assert "spdnn: N=" not in result.stdout
