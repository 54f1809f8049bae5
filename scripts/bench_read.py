#!/usr/bin/env python3
"""Weight-file parsing speed: MB of TSV text per second into CSR layers.

    python3 scripts/bench_read.py WEIGHTS_DIR [--neurons 1024] [--repeat 3]

Reads every n{N}-l{k}.tsv[.gz] in WEIGHTS_DIR the way `spdnn run` does and prints
the median MB/s over the uncompressed text size.
"""

import argparse
import gzip
import statistics
import time
from pathlib import Path

from spdnn.dataset import layer_files, read_network

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("weights", type=Path)
parser.add_argument("--neurons", type=int, default=1024)
parser.add_argument("--repeat", type=int, default=3)
args = parser.parse_args()

files = layer_files(args.weights, args.neurons)
text_bytes = sum(len(gzip.decompress(f.read_bytes())) if f.suffix == ".gz" else f.stat().st_size
                 for f in files)
times = []
for _ in range(args.repeat):
    start = time.perf_counter()
    read_network(args.weights, args.neurons, None, None)
    times.append(time.perf_counter() - start)
seconds = statistics.median(times)
print(f"{len(files)} files, {text_bytes / 1e6:.1f} MB of text: median {seconds:.3f} s, "
      f"{text_bytes / 1e6 / seconds:.0f} MB/s")
