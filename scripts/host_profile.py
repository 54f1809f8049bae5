#!/usr/bin/env python3
"""Show where the host's time goes in the CUDA backend's inference: Python's profiler
over several warm inferences of a generated configuration.

On a GPU machine, from the repository root:
    python3 scripts/host_profile.py --neurons 1024 --layers 120 --runs 20

At small N the inference follows the host's pace (scripts/timeline.py shows the gaps);
this shows which functions take that time. The profiler slows every Python call, so read
the shares, not the times: the unprofiled times are printed first for comparison.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
from pathlib import Path

from warm_engine import HookedClock, configuration_arguments, warm_engine

from spdnn.infer import infer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    configuration_arguments(parser, neurons=1024)
    parser.add_argument("--runs", type=int, default=20, help="profiled inferences")
    parser.add_argument("--top", type=int, default=30, help="functions shown per table")
    args = parser.parse_args()

    network, features, engine = warm_engine(args, 5, "unprofiled")
    profiler = cProfile.Profile()
    engine.clock = HookedClock(engine.clock, profiler.enable, profiler.disable)
    profiled = [infer(network, features, engine).seconds for _ in range(args.runs)]
    print("profiled: " + ", ".join(f"{seconds * 1e3:.3f}" for seconds in profiled) + " ms")
    stats = pstats.Stats(profiler).stats    # (file, line, name) -> (calls, _, own, cumulative, _)
    runs = len(profiled)
    print(f"per inference, the {args.top} functions of most own time (us; profiled):")
    print(f"{'calls':>7} {'own':>8} {'with callees':>12}  function")
    rows = sorted(stats.items(), key=lambda item: -item[1][2])[:args.top]
    for (file, line, name), (_, calls, own, cumulative, _) in rows:
        where = f"{Path(file).name}:{line}" if line else file
        print(f"{calls / runs:>7.1f} {own / runs * 1e6:>8.1f} {cumulative / runs * 1e6:>12.1f}"
              f"  {name} ({where})")

if __name__ == "__main__":
    main()
