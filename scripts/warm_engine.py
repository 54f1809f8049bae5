"""What scripts/timeline.py and scripts/host_profile.py share: a generated configuration
on a warmed-up CUDA engine, and the engine's clock with hooks at its start and stop."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spdnn import challenge, generate
from spdnn.infer import infer


def configuration_arguments(parser: argparse.ArgumentParser, neurons: int) -> None:
    """Add --neurons (default `neurons`), --layers and --rows to `parser`."""
    parser.add_argument("--neurons", type=int, default=neurons)
    parser.add_argument("--layers", type=int, default=120)
    parser.add_argument("--rows", type=int, default=challenge.FEATURE_ROWS)


def warm_engine(args: argparse.Namespace, runs: int, label: str):
    """Return (network, features, engine) for the configuration in `args`, after `runs`
    inferences (kernels compiled, graphs captured), whose times are printed as `label`."""
    from spdnn.backends.cuda import CudaEngine

    network = generate.radixnet(args.neurons, args.layers)
    features = generate.features(args.neurons, args.rows)
    engine = CudaEngine()
    plain = [infer(network, features, engine).seconds for _ in range(runs)]
    print(f"N={args.neurons} L={args.layers}: {label} "
          + ", ".join(f"{seconds * 1e3:.3f}" for seconds in plain) + " ms")
    return network, features, engine


class HookedClock:
    """An engine's clock that calls started() once it starts and stopping() before it
    stops (the clock's own seconds_since takes a mark too: the hooks are not in `mark`)."""

    def __init__(self, clock, started, stopping=lambda: None):
        self.clock, self.started, self.stopping = clock, started, stopping

    def mark(self):
        begin = self.clock.mark()
        self.started()
        return begin

    def seconds_since(self, begin):
        self.stopping()
        return self.clock.seconds_since(begin)
