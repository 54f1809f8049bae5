#!/usr/bin/env python3
"""Measure what the host pays for the CUDA calls the layer loop makes, on this machine.

On a GPU machine, from the repository root:
    python3 scripts/launch_costs.py

At small N the inference follows the host's pace (scripts/timeline.py), so the cost of
one launch through CuPy sets how fast it can go. Each line is the median over rounds of
the host time per call (us), from a loop of calls with the GPU idle at the start of
each round.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time

import numpy as np

SOURCE = r"""
extern "C" __global__ void empty() {}
extern "C" __global__ void many(const float* a, const float* b, const int* c, int* d, int e,
                                int f, int* g, unsigned long long h, const int* i,
                                unsigned char* j, const int* k, int* l, int m, int n,
                                float o, float p) {}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per round")
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()

    import cupy as cp

    module = cp.RawModule(code=SOURCE)
    empty, many = module.get_function("empty"), module.get_function("many")
    floats = cp.zeros(1024, cp.float32)
    ints = cp.zeros(1024, cp.int32)
    flags = cp.zeros(1024, cp.uint8)
    mapped_pointer = cp.cuda.runtime.hostAlloc(4 * 1024, 3)

    mapped = np.ctypeslib.as_array((ctypes.c_int32 * 1024).from_address(mapped_pointer))
    stream = cp.cuda.get_current_stream()
    many_args = (floats, floats, ints, ints, np.int32(1), np.int32(2), ints,
                 np.uint64(mapped_pointer), ints, flags, ints, ints, np.int32(3),
                 np.int32(4), np.float32(0.5), np.float32(32))
    capture = cp.cuda.Stream(non_blocking=True)
    with capture:
        capture.begin_capture()
        many((1,), (32,), many_args)
        graph = capture.end_capture()

    def event():
        cp.cuda.Event().record()

    steps = {
        "launch, no arguments": lambda: empty((1,), (32,), ()),
        "launch, 16 arguments (march-like)": lambda: many((132,), (256,), many_args),
        "graph launch, one kernel": lambda: graph.launch(),
        "event created and recorded": event,
        "memcpyAsync device to device, 4 KB": lambda: cp.cuda.runtime.memcpyAsync(
            ints.data.ptr, floats.data.ptr, 4096, cp.cuda.runtime.memcpyDeviceToDevice,
            stream.ptr),
        "get_current_stream": cp.cuda.get_current_stream,
        "stream.done": lambda: stream.done,
        "read one int of mapped memory": lambda: int(mapped[7]),
        "numpy pointer (ndarray.ctypes.data)": lambda: mapped.ctypes.data,
    }
    print(f"host time per call (us), median of {args.rounds} rounds of {args.calls} calls:")
    for name, step in steps.items():
        times = []
        for _ in range(args.rounds):
            stream.synchronize()
            begin = time.perf_counter()
            for _ in range(args.calls):
                step()
            times.append((time.perf_counter() - begin) / args.calls)
        print(f"{statistics.median(times) * 1e6:8.2f}  {name}")
    stream.synchronize()
    cp.cuda.runtime.freeHost(mapped_pointer)


if __name__ == "__main__":
    main()
