#!/usr/bin/env python3
"""Show where one inference's time goes: host steps and GPU progress, side by side.

On a GPU machine, from the repository root:
    python3 scripts/timeline.py --neurons 4096 --layers 120 --runs 5

Runs a generated configuration three times to warm up, then --runs times with the engine's
steps wrapped, and shows the run of median time: each step's host start and end (ms
since the clock started) and, through a CUDA event recorded after it, when the GPU got
past it (the launches are steps of their own: a graph's in `layer`, `_march`,
`_list_ahead`). Gaps where the GPU waits for the host, or the host for the GPU, show up
as steps whose times do not overlap. Each step adds an event (~2 us of host time), and
events queued behind a long kernel complete one after another, ~1.3 us each on an H200,
so the times are a little longer than unwrapped ones: compare with the printed times of
the unwrapped warm-up runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

from warm_engine import HookedClock, configuration_arguments, warm_engine

from spdnn.infer import infer

STEPS = ("batches", "layer_span", "layer", "_march", "_list_ahead", "_reported",
         "merge_duplicates", "counts", "settled", "categories")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    configuration_arguments(parser, neurons=4096)
    parser.add_argument("--runs", type=int, default=5, help="wrapped runs; the median is shown")
    args = parser.parse_args()

    import cupy as cp

    network, features, engine = warm_engine(args, 3, "unwrapped")
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
            arg = next((x for x in a[1:] if isinstance(x, int)), "")
            marks.append((name, arg, begin, time.perf_counter(), event))
            return result

        return timed

    for name in STEPS:
        setattr(engine, name, wrap(name))
    start_event = cp.cuda.Event()

    def started():
        marks.clear()
        origin["host"] = time.perf_counter()
        start_event.record()

    engine.clock = HookedClock(engine.clock, started)
    runs = []
    for _ in range(max(1, args.runs)):
        seconds = infer(network, features, engine).seconds
        cp.cuda.get_current_stream().synchronize()
        runs.append((seconds, [(name, arg, begin - origin["host"], end - origin["host"],
                                cp.cuda.get_elapsed_time(start_event, event))
                               for name, arg, begin, end, event in marks]))
    median = statistics.median_low(seconds for seconds, _ in runs)
    seconds, steps = next(run for run in runs if run[0] == median)
    print("wrapped: " + ", ".join(f"{s * 1e3:.3f}" for s, _ in runs)
          + f" ms; the median one, {seconds * 1e3:.3f} ms:")
    print(f"{'step':>18} {'arg':>4} {'host from':>10} {'host to':>9} {'GPU past':>9}")
    for name, arg, begin, end, gpu in steps:
        print(f"{name:>18} {arg!s:>4} {begin * 1e3:>10.3f} {end * 1e3:>9.3f} {gpu:>9.3f}")


if __name__ == "__main__":
    main()
