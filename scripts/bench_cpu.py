#!/usr/bin/env python3
"""spdnn's CPU backend against SuiteSparse:GraphBLAS, same machine, same run.

    python3 scripts/bench_cpu.py [--data-dir ../shared/data/graphchallenge-1024] [--repeat 3]

Needs python-graphblas (`pip install -e .[bench]`). Uses the official N = 1024 weights and
60000 realistic feature rows: the 600 official images, each shifted by (dx, dy) in a
10 x 10 window with zero fill, so that the rows are distinct images. Both codes are timed
on the inference only (inputs in memory), median of --repeat runs; the categories of both
must agree. Writes bench/results/cpu-vs-graphblas-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from spdnn import challenge
from spdnn.backends.cpu import CpuEngine
from spdnn.dataset import read_network
from spdnn.infer import infer
from spdnn.io.tsv import read_features

ROOT = Path(__file__).resolve().parents[1]
SHIFTS = range(-4, 6)


def shifted_images(features: sp.csr_matrix, rows: int) -> sp.csr_matrix:
    """Return `rows` images: every official image under every shift of SHIFTS x SHIFTS."""
    side = round(features.shape[1] ** 0.5)
    # pixel p sits at (row = p mod side, col = p div side): reshape gives [image, col, row]
    images = features.toarray().reshape(-1, side, side)
    out = []
    for dx in SHIFTS:
        for dy in SHIFTS:
            moved = np.zeros_like(images)
            src_c, dst_c = slice(max(0, -dx), side - max(0, dx)), slice(max(0, dx), side - max(0, -dx))
            src_r, dst_r = slice(max(0, -dy), side - max(0, dy)), slice(max(0, dy), side - max(0, -dy))
            moved[:, dst_c, dst_r] = images[:, src_c, src_r]
            out.append(moved.reshape(len(images), -1))
    return sp.csr_matrix(np.concatenate(out)[:rows])


def graphblas_inference(layers, features, bias, threads):
    """Return categories (1-based) by the LAGraph dnn recipe: mxm, bias, select > 0, min 32."""
    import graphblas as gb

    gb.ss.config["nthreads"] = threads
    weights = [gb.io.from_scipy_sparse(w) for w in layers]
    y = gb.io.from_scipy_sparse(features)
    start = time.perf_counter()
    for w in weights:
        y = y.mxm(w, gb.semiring.plus_times).new()
        y << y.apply(gb.binary.plus, right=bias)
        y = y.select(">", 0).new()
        y << y.apply(gb.binary.min, right=challenge.YMAX)
    alive = y.reduce_rowwise(gb.monoid.lor).new()
    seconds = time.perf_counter() - start
    return np.sort(alive.to_coo()[0]) + 1, seconds


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path,
                        default=ROOT.parent / "shared" / "data" / "graphchallenge-1024")
    parser.add_argument("--layers", type=int, default=120)
    parser.add_argument("--rows", type=int, default=challenge.FEATURE_ROWS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    network = read_network(args.data_dir / "neuron1024", 1024, args.layers, None)
    official = read_features(args.data_dir / "sparse-images-1024-first600.tsv.gz", 1024)
    features = shifted_images(official, args.rows)
    rows = features.shape[0]
    distinct = np.unique(features.toarray(), axis=0).shape[0]
    engine = CpuEngine()
    threads = engine.threads
    edges = challenge.edges(rows, network.nonzeros)

    spdnn_times, graphblas_times = [], []
    for _ in range(args.repeat):
        result = infer(network, features, engine)
        spdnn_times.append(result.seconds)
        reference, seconds = graphblas_inference(network.layers, features, network.bias, threads)
        graphblas_times.append(seconds)
        if not np.array_equal(result.categories, reference):
            raise SystemExit("spdnn and GraphBLAS disagree on the categories")
    spdnn_s, graphblas_s = statistics.median(spdnn_times), statistics.median(graphblas_times)

    import graphblas as gb

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip() or None
    entry = {
        "benchmark": "cpu-vs-graphblas",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "command": "python3 scripts/bench_cpu.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "device": f"{cpu_model()}, {threads} threads",
        "graphblas_version": f"python-graphblas {gb.__version__}, SuiteSparse:GraphBLAS "
                     f"{gb.ss.about['library_version']}",
        "configuration": {"neurons": 1024, "layers": args.layers, "features": rows,
                          "distinct_feature_rows": int(distinct),
                          "features_from": "600 official images x 100 shifts, zero fill"},
        "categories": int(result.categories.size),
        "edges": edges,
        "spdnn_cpu": {"median_seconds": spdnn_s, "seconds": spdnn_times,
                      "teraedges_per_second": edges / spdnn_s / 1e12,
                      "edges_computed": result.multiply_adds},
        "graphblas": {"median_seconds": graphblas_s, "seconds": graphblas_times,
                      "teraedges_per_second": edges / graphblas_s / 1e12},
        "speedup": graphblas_s / spdnn_s,
    }
    out = args.out or ROOT / "bench" / "results" / f"cpu-vs-graphblas-{entry['date'][:10]}.json"
    out.write_text(json.dumps(entry, indent=2) + "\n")
    print(f"{'code':<12} {'median s':>10} {'TE/s':>10}\n"
          f"{'spdnn cpu':<12} {spdnn_s:>10.3f} {edges / spdnn_s / 1e12:>10.4f}\n"
          f"{'GraphBLAS':<12} {graphblas_s:>10.3f} {edges / graphblas_s / 1e12:>10.4f}\n"
          f"speed-up {graphblas_s / spdnn_s:.1f}x, {result.categories.size} categories agree; "
          f"{distinct} distinct feature rows; wrote {out}")


if __name__ == "__main__":
    main()
