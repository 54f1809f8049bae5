#!/usr/bin/env python3
"""Run one launch of a generated configuration inside a profiler's window.

On a GPU machine, from the repository root:
    ncu --profile-from-start off --section SpeedOfLight --section WarpStateStats \\
        python3 scripts/profile_layer.py --neurons 16384 --layer 2

The launch is the chosen layer's kernel, or the run kernel's launch of the layers from
it (kernels/run.cu) where the network is deep enough (--depth 12 takes RadiX-Net's whole
first block at N = 65536; --no-runs profiles the layer alone). Everything before it
(layout, upload, compilation, earlier layers) runs outside the window opened by
cudaProfilerStart, so the report holds that launch alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spdnn import challenge, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=16384)
    parser.add_argument("--layer", type=int, default=2, help="1-based layer to profile")
    parser.add_argument("--depth", type=int, default=None,
                        help="layers of the network (default: up to --layer)")
    parser.add_argument("--no-runs", action="store_true",
                        help="launch rotation pattern layers one by one")
    parser.add_argument("--rows", type=int, default=challenge.FEATURE_ROWS)
    args = parser.parse_args()
    depth = max(args.layer, args.depth or args.layer)

    import cupy as cp

    from spdnn.backends.cuda import CudaEngine

    network = generate.radixnet(args.neurons, depth)
    features = generate.features(args.neurons, args.rows)
    engine = CudaEngine(graphs=False, march=False, runs=not args.no_runs)   # no graphs
    engine.load_network(network)
    loaded = engine.load_features(features)
    batch = next(iter(engine.batches(loaded, depth)))
    for index in range(args.layer - 1):
        batch = engine.layer(batch, index)
    engine.synchronize()
    if batch.launched >= args.layer:
        sys.exit(f"layer {args.layer} is computed by the run launched from an earlier layer: "
                 "profile the run's first layer, or pass --no-runs")
    rows = int(batch.history[(args.layer - 1) * 4].get())
    start = time.perf_counter()
    cp.cuda.profiler.start()
    engine.layer(batch, args.layer - 1)
    engine.synchronize()
    cp.cuda.profiler.stop()
    layer = engine.layers[args.layer - 1]
    print(f"N={args.neurons} layers {args.layer}-{batch.launched}: {rows} rows, "
          f"{engine.kernel_kind(args.layer - 1)} kernel, tile rows {layer.rows}, "
          f"{layer.threads} threads, {layer.shared} B shared, "
          f"{(time.perf_counter() - start) * 1e3:.3f} ms (wall, under the profiler)")


if __name__ == "__main__":
    main()
