#!/usr/bin/env python3
"""Summarise Nsight Compute's per-SASS-line counters of one kernel: where its instructions
and stall samples go.

Reads the CSV of `ncu -i REPORT --page source --csv --print-source sass` (plain or .gz, as
scripts/ncu_profile.sh writes it), on any machine:
    python3 scripts/sass_summary.py ncu-2026-12-03-n1024-run-here.sass.csv.gz

Prints, for the chosen kernel (the first one in the file unless --kernel): the warp
instructions executed and the threads each executed on average, the share of each stall
reason among the samples, the instructions by opcode, the groups of lines executed
equally often (a loop's body shows up as one group), and the lines with most samples.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
from collections import Counter
from pathlib import Path


def read_kernels(path: Path) -> dict[str, list[dict[str, str]]]:
    """Return each kernel's SASS lines (a dict of column -> text per line), by kernel name."""
    raw = path.read_bytes()
    text = gzip.decompress(raw).decode() if raw[:2] == b"\x1f\x8b" else raw.decode()
    kernels: dict[str, list[dict[str, str]]] = {}
    header, lines = None, None
    for row in csv.reader(io.StringIO(text)):
        if row and row[0] == "Kernel Name":
            lines = kernels.setdefault(row[1], [])
            header = None
        elif lines is not None and header is None:
            header = row
        elif lines is not None and len(row) == len(header):
            lines.append(dict(zip(header, row, strict=True)))
    return kernels


def number(text: str) -> float:
    """Return the value of one of ncu's numbers ('1,234' or '' for none)."""
    return float(text.replace(",", "") or 0)


def opcode(source: str) -> str:
    """Return the opcode of a SASS line, predicate and modifiers dropped ('@P0 FADD.FTZ' -> 'FADD')."""
    words = source.split()
    if words and words[0].startswith("@"):
        words = words[1:]
    return words[0].split(".")[0] if words else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, help="ncu's SASS source page as CSV (.gz or not)")
    parser.add_argument("--kernel", help="kernel name (default: the first in the file)")
    parser.add_argument("--top", type=int, default=15, help="lines and groups to show")
    args = parser.parse_args()

    kernels = read_kernels(args.csv)
    if not kernels:
        raise SystemExit(f"{args.csv}: no kernel found (is it ncu's --page source --csv output?)")
    name = args.kernel or next(iter(kernels))
    if name not in kernels:
        raise SystemExit(f"{args.csv}: no kernel {name!r}; it has {', '.join(kernels)}")
    lines = kernels[name]
    executed = [number(line["Instructions Executed"]) for line in lines]
    threads = [number(line["Thread Instructions Executed"]) for line in lines]
    samples = [number(line["Warp Stall Sampling (All Samples)"]) for line in lines]
    total, total_samples = sum(executed), sum(samples) or 1
    print(f"{name}: {total:,.0f} warp instructions, {sum(threads) / (total or 1):.1f} threads "
          f"each on average, {sum(samples):,.0f} stall samples, {len(lines)} SASS lines")

    reasons = [column for column in lines[0] if column.startswith("stall_")
               and "Not Issued" not in column]
    shares = Counter({reason[len("stall_"):]: sum(number(line[reason]) for line in lines)
                      for reason in reasons})
    print("stalls: " + ", ".join(f"{reason} {count / total_samples:.0%}"
                                 for reason, count in shares.most_common(8)))

    by_opcode, opcode_threads = Counter(), Counter()
    for line, count, lanes in zip(lines, executed, threads, strict=True):
        by_opcode[opcode(line["Source"])] += count
        opcode_threads[opcode(line["Source"])] += lanes
    print("opcodes: " + ", ".join(
        f"{op} {count / total:.0%} ({opcode_threads[op] / count:.0f} threads)"
        for op, count in by_opcode.most_common(10) if count))

    groups: dict[float, list[int]] = {}
    for index, count in enumerate(executed):
        if count:
            groups.setdefault(count, []).append(index)
    print("lines executed equally often (count: lines, share of instructions, opcodes):")
    for count, members in sorted(groups.items(), key=lambda item: -item[0] * len(item[1]))[:args.top]:
        ops = Counter(opcode(lines[i]["Source"]) for i in members)
        print(f"  {count:>12,.0f}: {len(members):4} lines, {count * len(members) / total:5.1%}, "
              + " ".join(f"{op} {n}" for op, n in ops.most_common(6)))

    print("lines with most stall samples (address, samples, executed, threads, line, top reasons):")
    for index in sorted(range(len(lines)), key=lambda i: -samples[i])[:args.top]:
        line = lines[index]
        top = sorted(((number(line[r]), r[len("stall_"):]) for r in reasons), reverse=True)[:2]
        print(f"  {line['Address'][-5:]:>5} {samples[index]:6.0f} {executed[index]:10,.0f} "
              f"{line['Avg. Threads Executed']:>5}  {line['Source'][:48]:48} "
              + ", ".join(f"{reason} {count:.0f}" for count, reason in top if count))


if __name__ == "__main__":
    main()
