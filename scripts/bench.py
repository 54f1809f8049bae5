#!/usr/bin/env python3
"""Time spdnn's CUDA backend on the challenge configurations, against a cupyx baseline.

Run on a GPU machine, from the repository root:
    python3 scripts/bench.py                                  # all 12 configurations
    python3 scripts/bench.py --neurons 1024 4096 --layers 120 --repeat 3

Each N is generated on the spot (spdnn.generate: RadiX-Net weights, digit images); its
deepest network is laid out on the GPU once and serves every layer count (the 120- and
480-layer networks are its first layers). Categories are checked against the exact CPU
backend (on the first --check-rows rows where the full CPU run would be slow). Printed:
one table; written: bench/results/gpu-<date>.json with every figure and the trace.

The baseline is the pipeline a user would write first: Y dense on the GPU, Z = Y W through
cupyx.scipy.sparse SpMM, then bias where Z != 0, ReLU, clamp, and dropping all-zero rows,
every layer. It runs until --baseline-seconds; the rest is extrapolated from its last
layer's time per active row and the exact active-row counts (the table says so).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spdnn import challenge, generate, report
from spdnn.backends.cpu import CpuEngine
from spdnn.infer import infer

SNICIT = next((entry for entry in report.published() if entry["name"].startswith("SNICIT")),
              None)

CPU_CHECK_BUDGET = 4096 * 60000
"""Rows x N the CPU check may take: all 60000 rows up to N = 4096, fewer above."""
BASELINE_BATCH_BYTES = 1 << 30
"""The baseline's dense activations are cut into row batches of this size."""
PROFILE_LAYERS = 48
"""Layers timed one by one (against their bandwidth floor) for each N, at most."""
BUSY_SHARE = 0.1
"""A layer counts as one 'where many rows are active' with at least this share of the rows."""


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def commit() -> str:
    if os.environ.get("SPDNN_COMMIT"):
        return os.environ["SPDNN_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def copy_bandwidth(cp) -> float:
    """Return device memory bandwidth in bytes/s: a 2 GiB copy, bytes read plus written."""
    size = 1 << 31
    source, target = cp.ones(size // 4, cp.float32), cp.empty(size // 4, cp.float32)
    times = []
    for _ in range(6):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        target[...] = source
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) / 1e3)
    del source, target
    return 2 * size / statistics.median(times[1:])


def cpu_categories(network, features, depths: list[int]) -> dict[int, np.ndarray]:
    """Return the CPU backend's categories after each of `depths` layers."""
    return {depth: infer(network.first(depth), features, CpuEngine()).categories
            for depth in depths}


def layer_bytes(engine, index: int, rows: int, features_nnz: int) -> int:
    """Return the bytes layer `index` must move for `rows` active rows: each row read once
    and written once (the first layer reads the sparse features), its stored weights once."""
    layout = engine.layers[index].layout
    weights = layout.index.nbytes + (layout.values.nbytes if layout.values is not None else 0)
    reads = rows * layout.inputs * 4
    if index == 0:   # (engines before the folded bits, in A/Bs, give the bytes per non-zero)
        reads = engine.feature_bytes(rows, features_nnz) if hasattr(engine, "feature_bytes") \
            else features_nnz * engine.feature_bytes_per_entry
    return reads + rows * layout.outputs * 4 + weights


def layer_floor_bytes(engine, history_rows: list[int], features_nnz: int, depth: int) -> float:
    """Return the bytes the work done must move: layer_bytes over the layers computed."""
    total = 0
    for index in range(depth):
        if history_rows[index] == 0:
            break
        total += layer_bytes(engine, index, history_rows[index], features_nnz)
    return total


def profile_layers(engine, loaded, depth: int, bandwidth: float, features_nnz: int) -> list[dict]:
    """Time the launches one by one (no merging, no graphs, no march) until none is left
    to compute: a layer, or the layers one launch of the run kernel takes (`layers` of
    them from `layer`). For each: ms, rows, the kernel that ran, the fraction of the
    bandwidth floor reached (the bytes its layers would move one by one) and the fraction
    of a copy moving the same bytes (copy_seconds). A copy queued before each launch keeps
    the GPU busy while the host launches it, so that the events time the kernel, not the
    host."""
    cp = engine.cp
    head_start = cp.empty(1 << 26, cp.float32)       # 256 MB: ~0.2 ms of copying
    out = []
    graphs, march = engine.graphs, engine.march
    engine.graphs = engine.march = False            # every layer its own launch
    try:
        for batch in engine.batches(loaded, depth):
            for index in range(min(depth, PROFILE_LAYERS)):
                if index < batch.launched:          # taken by the launch before
                    engine.layer(batch, index)
                    continue
                rows = int(batch.history[index * 4].get())
                if rows == 0:
                    break
                start, end = cp.cuda.Event(), cp.cuda.Event()
                head_start.fill(0)
                start.record()
                engine.layer(batch, index)
                end.record()
                end.synchronize()
                seconds = cp.cuda.get_elapsed_time(start, end) / 1e3
                counts = batch.history.get()[0::4]
                moved = sum(layer_bytes(engine, layer, int(counts[layer]), features_nnz)
                            for layer in range(index, batch.launched))
                floor = moved / bandwidth
                copy = copy_seconds(cp, moved, head_start)
                out.append({"layer": index + 1, "layers": batch.launched - index, "rows": rows,
                            "kernel": engine.kernel_kind(index),
                            "ms": seconds * 1e3, "floor_ms": floor * 1e3,
                            "floor_fraction": floor / seconds, "copy_ms": copy * 1e3,
                            "copy_fraction": copy / seconds})
            break
    finally:
        engine.graphs, engine.march = graphs, march
    return out


def copy_seconds(cp, moved: int, head_start) -> float:
    """Return the time of the copy that copy_bandwidth times, moving `moved` bytes (half
    read, half written): what one kernel moving a layer's bytes costs at least, fixed costs
    of a small kernel included."""
    count = max(1, moved // 8)
    source, target = cp.ones(count, cp.float32), cp.empty(count, cp.float32)
    start, end = cp.cuda.Event(), cp.cuda.Event()
    head_start.fill(0)
    start.record()
    target[...] = source
    end.record()
    end.synchronize()
    return cp.cuda.get_elapsed_time(start, end) / 1e3


def busy_floor_fraction(profile: list[dict], rows: int, key: str = "floor_fraction") -> float | None:
    """Return the lowest floor fraction (or `key`) over the layers with many active rows."""
    busy = [p[key] for p in profile if p["rows"] >= BUSY_SHARE * rows]
    return min(busy) if busy else None


def launch_overhead(engine, loaded, depth: int) -> dict:
    """Return the host's seconds per layer of the layer loop on a batch with no rows: the
    first pass (graphs captured as they are met) and the second (graphs replayed)."""
    from spdnn.backends.cuda import Features

    empty = Features(loaded.images[:0], loaded.indptr[:1], loaded.indices, loaded.values, 1,
                     loaded.buffers)
    layers = min(depth, 201)
    passes = []
    for _ in range(2):
        batch = next(iter(engine.batches(empty, layers)))
        engine.synchronize()
        start = time.perf_counter()
        for index in range(1, layers):
            engine.layer(batch, index)
            engine.settled(batch, index)
        engine.synchronize()
        passes.append((time.perf_counter() - start) / max(1, layers - 1))
    return {"first_pass": passes[0], "replayed": passes[1]}


def baseline_layer(cp, weights_t, pieces: list, bias) -> list:
    """Return the pieces after one layer of the cupyx pipeline (all-zero rows dropped)."""
    kept = []
    for y in pieces:
        z = (weights_t @ y.T).T                                      # SpMM: Z = Y W
        z = cp.where(z != 0, cp.minimum(cp.maximum(z + bias, 0), challenge.YMAX), 0)
        alive = cp.flatnonzero(z.any(axis=1))
        if alive.size:
            kept.append(cp.ascontiguousarray(z[alive], dtype=cp.float32))
    return kept


def baseline(cp, network, features, depth: int, budget: float, active_rows: list[int]) -> dict:
    """Time the cupyx pipeline for up to `budget` seconds; extrapolate the rest."""
    import cupyx.scipy.sparse as cps

    neurons = network.neurons
    bias = np.float32(network.bias)
    batch = max(1, BASELINE_BATCH_BYTES // (neurons * 4))
    live = features[np.flatnonzero(np.diff(features.indptr))]
    first = cps.csr_matrix(network.layers[0].T.tocsr())
    baseline_layer(cp, first, [cp.asarray(live[:64].toarray())], bias)   # compile first
    pieces = [cp.asarray(live[start:start + batch].toarray()) for start in range(0, live.shape[0], batch)]
    spent, layer_seconds, rows_in = 0.0, [], []
    index = 0
    while index < depth and spent < budget and pieces:
        weights_t = first if index == 0 else cps.csr_matrix(network.layers[index].T.tocsr())
        cp.cuda.get_current_stream().synchronize()                  # the upload is not timed
        rows_in.append(sum(piece.shape[0] for piece in pieces))
        start = time.perf_counter()
        pieces = baseline_layer(cp, weights_t, pieces, bias)
        cp.cuda.get_current_stream().synchronize()
        layer_seconds.append(time.perf_counter() - start)
        spent += layer_seconds[-1]
        index += 1
    measured = index
    seconds = sum(layer_seconds)
    survivors = sum(piece.shape[0] for piece in pieces)
    if measured < depth and survivors:
        # the rest: the last layer's seconds per active row times the exact active rows
        per_row = layer_seconds[-1] / max(rows_in[-1], 1)
        seconds += per_row * sum(active_rows[measured:depth])
    del pieces
    cp.get_default_memory_pool().free_all_blocks()
    return {"seconds": seconds, "layers_measured": measured,
            "extrapolated": measured < depth and survivors > 0,
            "survivors_at_stop": survivors, "layer_ms": [round(t * 1e3, 3) for t in layer_seconds[:8]],
            "rows_in": rows_in[:8]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, nargs="*", default=list(challenge.NEURONS))
    parser.add_argument("--layers", type=int, nargs="*", default=list(challenge.LAYERS))
    parser.add_argument("--rows", type=int, default=challenge.FEATURE_ROWS)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warm-up", type=int, default=1,
                        help="untimed inferences per configuration before the timed ones")
    parser.add_argument("--baseline-seconds", type=float, default=2.0)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-march", action="store_true",
                        help="launch the late layers as graphs of single-layer kernels only")
    parser.add_argument("--no-runs", action="store_true",
                        help="launch the rotation pattern layers one by one, not as runs")
    parser.add_argument("--check-rows", type=int, default=None,
                        help="rows checked against the CPU (default: all up to N=4096, fewer above)")
    parser.add_argument("--seed", type=int, default=challenge.DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    import cupy as cp

    from spdnn.backends.cuda import CudaEngine

    bandwidth = copy_bandwidth(cp)
    log(f"device memory bandwidth (copy, read + write): {bandwidth / 1e12:.2f} TB/s")
    records = []
    for neurons in args.neurons:
        depths = sorted(args.layers)
        started = time.perf_counter()
        network = generate.radixnet(neurons, max(depths), args.seed)
        features = generate.features(neurons, args.rows, args.seed)
        generate_seconds = time.perf_counter() - started
        log(f"N={neurons}: features generated in {generate_seconds:.1f} s "
            f"({features.nnz / features.shape[0]:.0f} non-zeros per row)")

        check_rows = args.check_rows or min(args.rows, max(1000, CPU_CHECK_BUDGET // neurons))
        started = time.perf_counter()
        truth = cpu_categories(network, features[:check_rows], depths)
        log(f"N={neurons}: CPU truth on {check_rows} rows in {time.perf_counter() - started:.1f} s")

        options = {"runs": False} if args.no_runs else {}     # older engines have no runs
        engine = CudaEngine(march=not args.no_march, **options)
        started = time.perf_counter()
        engine.load_network(network)
        engine.synchronize()
        prepare_seconds = time.perf_counter() - started
        log(f"N={neurons}: network laid out and uploaded in {prepare_seconds:.1f} s "
            f"({engine.layers[1].outputs if len(engine.layers) > 1 else '-'} distinct columns)")
        started = time.perf_counter()
        loaded = engine.load_features(features)
        engine.synchronize()
        features_upload_seconds = time.perf_counter() - started
        live_nnz = int(loaded.indptr[-1].get())
        profile = profile_layers(engine, loaded, max(depths), bandwidth, live_nnz)
        launch_seconds = launch_overhead(engine, loaded, max(depths))
        log(f"N={neurons}: layers (ms, floor fraction, copy fraction, kernel): "
            + ", ".join(f"{p['ms']:.3f} ({p['floor_fraction']:.2f} {p['copy_fraction']:.2f} "
                        f"{p['kernel']}{' x' + str(p['layers']) if p['layers'] > 1 else ''})"
                        for p in profile)
            + f"; host per layer {launch_seconds['first_pass'] * 1e6:.1f} us first pass, "
            f"{launch_seconds['replayed'] * 1e6:.1f} us replayed")

        for depth in depths:
            for _ in range(args.warm_up):
                infer(network, features, engine, depth)
            runs = [infer(network, features, engine, depth) for _ in range(args.repeat)]
            result = runs[0]
            seconds = statistics.median(run.seconds for run in runs)
            ok = all(np.array_equal(run.categories, runs[0].categories) for run in runs)
            checked = result.categories[result.categories <= check_rows]
            verified = ok and np.array_equal(checked, truth[depth])
            edges = challenge.edges(args.rows, network.first(depth).nonzeros)
            floor = layer_floor_bytes(engine, engine_rows_per_layer(engine, depth), live_nnz, depth)
            record = {
                "neurons": neurons, "layers": depth, "features": args.rows,
                "backend": "cuda", "ranks": 1,
                "teraedges_per_second": edges / seconds / 1e12,
                "inference_seconds": seconds, "seconds_all": [run.seconds for run in runs],
                "warm_up_runs": args.warm_up,
                "edges": edges, "edges_computed": result.multiply_adds,
                "categories": int(result.categories.size), "verified": bool(verified),
                "rows_checked": check_rows, "features_upload_seconds": features_upload_seconds,
                "prepare_seconds": prepare_seconds, "generate_seconds": generate_seconds,
                "floor_seconds": floor / bandwidth, "floor_fraction": floor / bandwidth / seconds,
                "active_rows": result.active_rows[:64], "distinct_rows": result.distinct_rows[:64],
                "layers_launched": max(batch.done for batch in engine._batches),
                "profile": profile, "launch_seconds_per_layer": launch_seconds["replayed"],
                "launch_seconds_per_layer_first_pass": launch_seconds["first_pass"],
                "busy_floor_fraction": busy_floor_fraction(profile, args.rows),
                "busy_copy_fraction": busy_floor_fraction(profile, args.rows, "copy_fraction"),
            }
            if not args.no_baseline:
                base = baseline(cp, network, features, depth, args.baseline_seconds,
                                [len(np.flatnonzero(np.diff(features.indptr)))] + result.active_rows)
                record["baseline"] = base
                record["baseline_teraedges_per_second"] = edges / base["seconds"] / 1e12
                record["speedup_over_baseline"] = base["seconds"] / seconds
            if SNICIT:
                snicit = SNICIT["teps"].get(f"{neurons}-{depth}")
                record["snicit_teraedges_per_second"] = snicit
                record["speedup_over_snicit"] = record["teraedges_per_second"] / snicit if snicit else None
            records.append(record)
            log(f"N={neurons} L={depth}: {record['teraedges_per_second']:.1f} TE/s, "
                f"{seconds * 1e3:.2f} ms, verified={verified}")
        del engine, loaded
        cp.get_default_memory_pool().free_all_blocks()

    print(table(records))
    now = datetime.datetime.now(datetime.timezone.utc)
    output = {
        "device": CudaEngine().device, "date": now.isoformat(timespec="seconds"),
        "commit": commit(), "command": " ".join(sys.argv),
        "bandwidth_bytes_per_second": bandwidth, "records": records,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu-{now:%Y-%m-%d-%H%M%S}.json"
    path.write_text(json.dumps(output, indent=1) + "\n")
    log(f"wrote {path}")
    return 0 if all(r["verified"] for r in records) else 1


def engine_rows_per_layer(engine, depth: int) -> list[int]:
    """Return the distinct rows each layer computed in the engine's last inference."""
    rows = []
    for batch in engine._batches:
        history = engine._history(batch)
        counts = [int(history[index, 0]) for index in range(depth)]
        rows = counts if not rows else [a + b for a, b in zip(rows, counts)]
    return rows + [0] * (depth - len(rows))


def ratio(value: float | None) -> str:
    """A speed-up for the table: '-' where there is nothing to compare with."""
    return f"{value:.1f}" if value else "-"


def table(records: list[dict]) -> str:
    head = (f"{'config':>11} {'TE/s':>9} {'ms':>8} {'edges computed':>15} {'baseline TE/s':>13} "
            f"{'x base':>7} {'x SNICIT':>8} {'floor':>6} {'ok':>3}")
    lines = [head, "-" * len(head)]
    for r in records:
        base = r.get("baseline_teraedges_per_second")
        mark = "*" if r.get("baseline", {}).get("extrapolated") else " "
        lines.append(
            f"{r['neurons']:>6}-{r['layers']:<4} {r['teraedges_per_second']:>9.1f} "
            f"{r['inference_seconds'] * 1e3:>8.2f} {r['edges_computed']:>15.3e} "
            f"{(f'{base:.2f}' + mark) if base else '-':>13} "
            f"{ratio(r.get('speedup_over_baseline')):>7} {ratio(r.get('speedup_over_snicit')):>8} "
            f"{r['floor_fraction']:>6.2f} {'yes' if r['verified'] else 'NO':>3}")
    lines.append("TE/s = 60000 x 32 x N x L / inference seconds (official edges); edges computed = "
                 "multiply-adds done; floor = bandwidth floor of the work done / time; "
                 "* = baseline extrapolated past its time budget")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
