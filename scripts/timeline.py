#!/usr/bin/env python3
"""Show where one inference's time goes: host steps and GPU progress, side by side.

On a GPU machine, from the repository root:
    python3 scripts/timeline.py --neurons 4096 --layers 120

Runs a generated configuration twice (the second is shown) with the engine's steps
wrapped: each step's host start and end (ms since the clock started) and, through a CUDA
event recorded after it, when the GPU got past it. Gaps where the GPU waits for the host,
or the host for the GPU, show up as steps whose times do not overlap. Events queued
behind a long kernel complete one after another, ~1.3 us each on an H200, so the last
tens of microseconds after a march are blurred by the events themselves.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spdnn import challenge, generate
from spdnn.infer import infer

STEPS = ("batches", "layer", "merge_duplicates", "counts", "settled", "categories")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=120)
    parser.add_argument("--rows", type=int, default=challenge.FEATURE_ROWS)
    args = parser.parse_args()

    import cupy as cp

    from spdnn.backends.cuda import CudaEngine

    network = generate.radixnet(args.neurons, args.layers)
    features = generate.features(args.neurons, args.rows)
    engine = CudaEngine()
    infer(network, features, engine)                     # compile, capture, warm up
    marks = []
    origin = {}

    def wrap(name):
        step = getattr(engine, name)

        def timed(*a, **k):
            begin = time.perf_counter()
            result = step(*a, **k)
            if name == "batches":                   # a generator: time its first batch
                result = list(result)
            event = cp.cuda.Event()
            event.record()
            marks.append((name, a[1] if name in ("layer", "settled") else "", begin,
                          time.perf_counter(), event))
            return result

        return timed

    for name in STEPS:
        setattr(engine, name, wrap(name))
    start_event = cp.cuda.Event()
    mark = engine.clock.mark

    def clock_mark():
        origin["host"] = time.perf_counter()
        start_event.record()
        return mark()

    engine.clock.mark = clock_mark
    result = infer(network, features, engine)
    cp.cuda.get_current_stream().synchronize()
    print(f"N={args.neurons} L={args.layers}: {result.seconds * 1e3:.3f} ms")
    print(f"{'step':>18} {'arg':>4} {'host from':>10} {'host to':>9} {'GPU past':>9}")
    for name, arg, begin, end, event in marks:
        gpu = cp.cuda.get_elapsed_time(start_event, event)
        print(f"{name:>18} {arg!s:>4} {(begin - origin['host']) * 1e3:>10.3f} "
              f"{(end - origin['host']) * 1e3:>9.3f} {gpu:>9.3f}")


if __name__ == "__main__":
    main()
