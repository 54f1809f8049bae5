"""One run of the challenge: inference, the check against the truth, and its record."""

from __future__ import annotations

import datetime
import sys

import numpy as np

from . import __version__, challenge
from .dataset import Problem
from .infer import Inference, infer


def compare(categories: np.ndarray, truth: np.ndarray | None) -> dict:
    """Return verified (None without truth) and the counts of missing and extra ids."""
    if truth is None:
        return {"verified": None, "missing": None, "extra": None}
    missing = np.setdiff1d(truth, categories).size
    extra = np.setdiff1d(categories, truth).size
    return {"verified": missing == 0 and extra == 0, "missing": missing, "extra": extra}


def record(problem: Problem, result: Inference, engine, ranks: int = 1) -> dict:
    """Return the JSON-ready record of a run (the fields of `spdnn run --json`)."""
    network, rows = problem.network, problem.features.shape[0]
    edges = challenge.edges(rows, network.nonzeros)
    seconds = result.seconds
    return {
        "spdnn_version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "neurons": network.neurons,
        "layers": network.depth,
        "features": rows,
        "bias": float(network.bias),
        "edges": edges,
        "backend": engine.name,
        "device": engine.device,
        "ranks": ranks,
        "read_seconds": problem.read_seconds,
        "upload_seconds": result.upload_seconds,
        "inference_seconds": seconds,
        "teraedges_per_second": edges / seconds / 1e12 if seconds > 0 else None,
        "edges_computed": result.multiply_adds,
        "categories": int(result.categories.size),
        **compare(result.categories, problem.truth),
    }


def trace(entry: dict, result: Inference) -> dict:
    """Return the per-layer activity of a run: the curve that explains its speed."""
    keys = ("neurons", "layers", "features", "backend", "device", "date")
    traced = {**{key: entry[key] for key in keys},
              "active_rows": result.active_rows, "distinct_rows": result.distinct_rows}
    if getattr(result, "per_rank", None):     # an MPI run: each rank's curve, for balance
        traced["ranks"] = entry["ranks"]
        traced["per_rank"] = result.per_rank
    return traced


def run(problem: Problem, engine) -> tuple[Inference, dict]:
    result = infer(problem.network, problem.features, engine)
    return result, record(problem, result, engine)


def summary(entry: dict) -> str:
    """Return the few human lines that `spdnn run` prints."""
    verdict = {None: "no truth given", True: "categories match the truth"}.get(
        entry["verified"],
        f"categories DIFFER from the truth: {entry['missing']} missing, {entry['extra']} extra")
    return "\n".join([
        (f"spdnn: N={entry['neurons']} layers={entry['layers']} features={entry['features']} "
         f"on {entry['backend']} ({entry['device']}, {entry['ranks']} rank(s))"),
        f"  read       {entry['read_seconds']:10.3f} s",
        f"  upload     {entry['upload_seconds']:10.3f} s",
        (f"  inference  {entry['inference_seconds']:10.4f} s   "
         f"{entry['teraedges_per_second']:.4g} TE/s "
         f"({entry['edges']:.3g} edges, {entry['edges_computed']:.3g} computed)"),
        f"  {entry['categories']} categories: {verdict}",
    ])
