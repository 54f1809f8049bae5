#!/usr/bin/env python3
"""Predict how `spdnn run` scales with MPI ranks: per-rank balance and speed-up for K ranks.

    python3 scripts/scaling_model.py TRACE.json [TRACE.json ...] [--record RUN.json]
    python3 scripts/scaling_model.py --simulate 1 2 4 8 [--record RUN.json] -- --data-dir DIR ...

A TRACE is written by `spdnn run --trace`; an MPI run's trace holds every rank's work
(multiply-adds and rows per layer). `--simulate K ...` makes them: one CPU run per K, under
mpiexec, one thread a rank (any K runs on any number of cores; the oversubscribed run's
seconds mean nothing, its work is exact), of the `spdnn run` options given after `--`.

The busiest rank's work for K ranks, as a fraction of one process's work, comes from:
  1. a K-rank trace: measured, exact;
  2. an M-rank trace, K dividing M: the K-rank partition is the M-rank one with neighbours
     merged, and a merged rank's work is at most its neighbours' sum (an upper bound: a
     row that several neighbours hold copies of is computed once by the merged rank);
  3. an M-rank trace, M dividing K: every measured rank split further at random;
  4. a one-process trace: its totals split at random (optimistic: keeps duplicates merged).
One process's work is a one-rank record's or trace's multiply-adds, else the sum of the
measured ranks' (an upper bound).

RUN.json (`spdnn run --json`, best a 1-rank run on the target machine) turns work into
seconds: inference(K) = (T - L x layer_seconds) x busiest(K) / busiest(K_record)
+ L x layer_seconds, then the gather of the categories and the start-up (launch, reading
once per node, the weights' broadcast inside a node). See docs/mpi.md, "Model".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RANKS = (1, 2, 4, 8)
LATENCY_SECONDS = 10e-6
"""One step of a tree collective between nodes (an InfiniBand round trip and software)."""
BANDWIDTH = 10e9
"""Bytes per second of a broadcast or gather step, inside a node or between nodes."""
LAUNCH_SECONDS = 1.0
"""Starting the ranks, importing spdnn and initialising MPI (about 0.5 s measured on 2 cores)."""
BYTES_PER_WEIGHT = 8
"""A weight travels as a 4-byte column index and a 4-byte value."""


def rank_work(entry: dict) -> float:
    """Return a rank's work: its multiply-adds, or else its distinct rows over all layers."""
    return float(entry.get("multiply_adds") or sum(entry["distinct_rows"]))


def random_split(curve: dict, parts: int) -> float:
    """Return the busiest part's share of a curve's work when its rows fall at random.

    A layer's D distinct rows fall binomially on K parts: the busiest holds about
    D/K + sqrt(2 ln K x D/K x (1 - 1/K)). Optimistic: it keeps duplicates merged, where a
    real split computes a row once on every rank that holds a copy of it.
    """
    distinct = np.asarray(curve["distinct_rows"], dtype=float)
    if parts == 1 or distinct.sum() == 0:
        return 1.0 / parts
    mean = distinct / parts
    busiest = np.minimum(distinct, mean + np.sqrt(2 * math.log(parts) * mean * (1 - 1 / parts)))
    return float(busiest.sum() / distinct.sum())


def measured_ranks(trace: dict) -> np.ndarray | None:
    per_rank = trace.get("per_rank") or []
    return np.array([rank_work(entry) for entry in per_rank]) if per_rank else None


def one_process_work(traces: dict[int, dict], record: dict | None) -> float | None:
    """Return one process's multiply-adds from a one-rank record or trace, if any."""
    if record and record["ranks"] == 1 and record.get("edges_computed"):
        return float(record["edges_computed"])
    single = traces.get(1)
    works = measured_ranks(single) if single else None
    return float(works.sum()) if works is not None else None


def work(traces: dict[int, dict], ranks: int, whole: float | None) -> dict:
    """Return the busiest and the mean rank's work for `ranks` ranks, as fractions of one
    process's work (`whole`), and which of the module's four ways found them."""
    if ranks == 1 and whole:
        return {"busiest": 1.0, "mean": 1.0, "from": "one process"}
    exact = traces.get(ranks)
    if exact is not None and measured_ranks(exact) is not None:
        works = measured_ranks(exact)
        total = whole or works.sum()
        return {"busiest": works.max() / total, "mean": works.mean() / total,
                "from": f"measured ({ranks} ranks)"}
    for measured, trace in sorted(traces.items(), reverse=True):
        works = measured_ranks(trace)
        if works is None:
            continue
        total = whole or works.sum()
        if measured % ranks == 0:
            groups = works.reshape(ranks, -1).sum(axis=1)
            return {"busiest": groups.max() / total, "mean": groups.mean() / total,
                    "from": f"{measured} ranks merged (upper bound)"}
        if ranks % measured == 0:
            parts = ranks // measured
            busiest = max(w * random_split(entry, parts)
                          for w, entry in zip(works, trace["per_rank"]))
            return {"busiest": busiest / total, "mean": works.sum() / ranks / total,
                    "from": f"{measured} ranks split at random"}
    totals = traces[min(traces)]
    return {"busiest": random_split(totals, ranks), "mean": 1 / ranks,
            "from": "totals split at random (optimistic)"}


def tree_steps(ranks: int) -> int:
    return math.ceil(math.log2(ranks)) if ranks > 1 else 0


def predict(traces: dict[int, dict], record: dict | None, ranks_list, layer_seconds: float,
            ranks_per_node: int, latency: float, bandwidth: float, launch: float) -> list[dict]:
    """Return one prediction per rank count: balance and work, and seconds with `record`."""
    whole = one_process_work(traces, record)

    def seconds(ranks: int) -> dict:
        fixed = record["layers"] * layer_seconds
        compute = max(record["inference_seconds"] - fixed, 0.0)
        scale = (work(traces, ranks, whole)["busiest"]
                 / work(traces, record["ranks"], whole)["busiest"])
        gather = tree_steps(ranks) * latency + (8 * record["categories"] / bandwidth
                                                if ranks > 1 else 0.0)
        weights = record["edges"] / record["features"] * BYTES_PER_WEIGHT
        broadcast = tree_steps(min(ranks, ranks_per_node)) * weights / bandwidth
        return {"inference_seconds": compute * scale + fixed, "gather_seconds": gather,
                "startup_seconds": launch + record["read_seconds"] + broadcast}

    one = seconds(1) if record else None
    rows = []
    for ranks in ranks_list:
        share = work(traces, ranks, whole)
        row = {"ranks": ranks, "busiest_work": share["busiest"],
               "balance": share["busiest"] / share["mean"], "work_speedup": 1 / share["busiest"],
               "work_from": share["from"]}
        if record:
            row.update(seconds(ranks))
            job = row["inference_seconds"] + row["gather_seconds"]
            row.update(speedup=one["inference_seconds"] / job,
                       end_to_end_speedup=(one["startup_seconds"] + one["inference_seconds"])
                       / (row["startup_seconds"] + job),
                       teraedges_per_second=record["edges"] / job / 1e12)
        rows.append(row)
    return rows


def simulate(ranks: int, run_args: list[str]) -> dict:
    """Return the trace of a `ranks`-rank CPU run, one thread a rank, on this machine."""
    mpiexec = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(mpiexec) if mpiexec.is_file() else shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit("no mpiexec: pip install mpich mpi4py")
    version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True,
                             check=False).stdout
    # Open MPI refuses more ranks than cores unless told; MPICH's Hydra just runs them
    extra = ["--oversubscribe"] if "Open MPI" in version or "OpenRTE" in version else []
    with tempfile.TemporaryDirectory() as folder:
        trace_path = Path(folder) / "trace.json"
        command = [mpiexec, "-n", str(ranks), *extra, sys.executable, "-m", "spdnn", "run",
                   *run_args, "--backend", "cpu", "--threads", "1", "--trace", str(trace_path)]
        print("simulating:", " ".join(command), file=sys.stderr)
        done = subprocess.run(command, check=False, stdout=sys.stderr,
                              env={**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1",
                                   "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})
        if done.returncode not in (0, 1) or not trace_path.is_file():
            sys.exit(f"the simulated run failed (exit code {done.returncode})")
        return json.loads(trace_path.read_text())


def table(rows: list[dict]) -> str:
    timed = "inference_seconds" in rows[0]
    head = f"{'ranks':>5} {'balance':>8} {'work x':>7}"
    if timed:
        head += (f" {'infer s':>10} {'gather s':>9} {'start s':>8} {'speedup':>8} "
                 f"{'end2end':>8} {'TE/s':>8}")
    lines = [head + "  work from"]
    for row in rows:
        line = f"{row['ranks']:>5} {row['balance']:>8.3f} {row['work_speedup']:>7.2f}"
        if timed:
            line += (f" {row['inference_seconds']:>10.4f} {row['gather_seconds']:>9.5f} "
                     f"{row['startup_seconds']:>8.2f} {row['speedup']:>8.2f} "
                     f"{row['end_to_end_speedup']:>8.2f} {row['teraedges_per_second']:>8.4g}")
        lines.append(line + "  " + row["work_from"])
    return "\n".join(lines)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    run_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("traces", nargs="*", type=Path, help="`spdnn run --trace` JSON files")
    parser.add_argument("--simulate", type=int, nargs="+", metavar="K",
                        help="make a trace for each K with a K-rank CPU run of the spdnn run "
                             "options after --")
    parser.add_argument("--save-traces", type=Path, metavar="FOLDER",
                        help="keep the simulated traces here as trace-K.json")
    parser.add_argument("--record", type=Path, help="`spdnn run --json` of a reference run")
    parser.add_argument("--ranks", type=int, nargs="+", default=list(RANKS))
    parser.add_argument("--layer-seconds", type=float, default=0.0,
                        help="fixed cost a layer that more ranks do not cut (GPU launches)")
    parser.add_argument("--ranks-per-node", type=int, default=4)
    parser.add_argument("--latency", type=float, default=LATENCY_SECONDS)
    parser.add_argument("--bandwidth", type=float, default=BANDWIDTH)
    parser.add_argument("--launch-seconds", type=float, default=LAUNCH_SECONDS)
    parser.add_argument("--json", type=Path, help="also write the predictions here")
    args = parser.parse_args(argv)
    if not args.traces and not args.simulate:
        parser.error("give TRACE files or --simulate K ... (with spdnn run options after --)")

    traces = {}
    for path in args.traces:
        trace = json.loads(path.read_text())
        traces[trace.get("ranks", 1)] = trace
    for ranks in args.simulate or []:
        traces[ranks] = simulate(ranks, run_args)
        if args.save_traces:
            args.save_traces.mkdir(parents=True, exist_ok=True)
            (args.save_traces / f"trace-{ranks}.json").write_text(
                json.dumps(traces[ranks], indent=2) + "\n")
    record = json.loads(args.record.read_text()) if args.record else None
    first = traces[min(traces)]
    if record and any(record[key] != first[key] for key in ("neurons", "layers", "features")):
        print("warning: the record and the traces are of different problems", file=sys.stderr)
    rows = predict(traces, record, sorted(args.ranks), args.layer_seconds, args.ranks_per_node,
                   args.latency, args.bandwidth, args.launch_seconds)
    print(f"N={first['neurons']} layers={first['layers']} features={first['features']}, "
          f"traces of {sorted(traces)} rank(s)")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"traces": sorted(traces), "record": str(args.record),
                                         "predictions": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
