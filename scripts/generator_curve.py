#!/usr/bin/env python3
"""Print how generated images survive the official weights, beside the real images.

    python3 scripts/generator_curve.py --data-dir ../shared/data/graphchallenge-1024 [--rows 60000]

The data folder needs neuron1024/n1024-l{1..120}.tsv[.gz] and, for the real curve, a
sparse-images-1024*.tsv[.gz] file (all or the first rows of the official images). Prints a
Markdown table of the active rows (in %) after landmark layers: the source of
docs/generator.md's table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from spdnn import challenge, dataset, generate
from spdnn.backends.cpu import CpuEngine
from spdnn.infer import infer

LANDMARKS = (1, 2, 3, 4, 5, 10, 14, 20, 120)


def active_percent(network, features) -> np.ndarray:
    result = infer(network, features, CpuEngine())
    return 100 * np.array(result.active_rows) / features.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=challenge.FEATURE_ROWS)
    parser.add_argument("--seed", type=int, default=challenge.DEFAULT_SEED)
    args = parser.parse_args()

    network = dataset.read_network(args.data_dir / "neuron1024", 1024, 120, None)
    start = time.perf_counter()
    images = generate.features(1024, args.rows, args.seed)
    seconds = time.perf_counter() - start
    curves = {f"generated, {args.rows} rows, seed {args.seed}": active_percent(network, images)}
    for path in sorted(args.data_dir.glob("sparse-images-1024*.tsv*")):
        real = dataset.read_features(path, 1024)
        curves[f"real, {path.name} ({real.shape[0]} rows)"] = active_percent(network, real)

    print("| images | " + " | ".join(f"L{k}" for k in LANDMARKS) + " |")
    print("| --- " * (len(LANDMARKS) + 1) + "|")
    for name, curve in curves.items():
        print(f"| {name} | " + " | ".join(f"{curve[k - 1]:.1f}" for k in LANDMARKS) + " |")
    print(f"\ndensity {images.nnz / images.shape[0] / 1024:.3f}, drawn in {seconds:.2f} s")


if __name__ == "__main__":
    main()
