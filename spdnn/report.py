"""Throughput records read back and shown: Markdown tables, plots, the published figures.

A record is the JSON of one run (`spdnn run --json`, `spdnn bench`, the scripts). Result
files may hold one record, a list, JSON lines, or records nested in a larger document:
any JSON object with `neurons`, `layers` and `teraedges_per_second` counts as one.
"""

from __future__ import annotations

import itertools
import json
from importlib import resources
from pathlib import Path

from . import challenge
from .errors import InputError, SpdnnError

RECORD_KEYS = frozenset({"neurons", "layers", "teraedges_per_second"})
"""The keys that make a JSON object a run record."""

COUNT_FIELDS = ("neurons", "layers", "ranks", "repeat")
"""Record fields that must be positive integers where present."""

NUMBER_FIELDS = ("teraedges_per_second", "features", "rows", "edges", "edges_computed",
                 "read_seconds", "upload_seconds", "inference_seconds")
"""Record fields that must be numbers or null where present."""

ACTIVITY_LANDMARKS = (1, 2, 3, 4, 5, 10, 20, 50, 100, 200, 500, 1000)
"""Layers that the activity summary lists (and always the last): the curve falls early."""

PLOT_DPI = 150


# ---------------------------------------------------------------------------- records

def find_records(value, around: dict | None = None) -> list[dict]:
    """Return every run record inside a parsed JSON value, in document order.

    A record takes the fields it lacks from the plain values of the documents around it:
    a results file may name its device once, at the top, for all its records.
    """
    around = around or {}
    if isinstance(value, list):
        return [record for item in value for record in find_records(item, around)]
    if not isinstance(value, dict):
        return []
    if RECORD_KEYS <= value.keys():
        return [{**around, **value}]
    plain = {key: item for key, item in value.items() if not isinstance(item, (dict, list))}
    around = {**around, **plain}
    return [record for item in value.values() for record in find_records(item, around)]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def record_problem(record: dict) -> str | None:
    """Return what makes a run record unusable (a field of the wrong type), or None."""
    for key in COUNT_FIELDS:
        value = record.get(key, 1)
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            return f"a record's {key} is {value!r}, not a positive integer"
    for key in NUMBER_FIELDS:
        value = record.get(key)
        if value is not None and not _is_number(value):
            return f"a record's {key} is {value!r}, not a number"
    if record.get("verified") not in (True, False, None):
        return f"a record's verified is {record['verified']!r}, not true, false or null"
    return None


def _checked(records: list[dict], path: Path, line: int | None = None) -> list[dict]:
    """Return `records`; InputError naming the file (and line) at the first unusable one."""
    for record in records:
        problem = record_problem(record)
        if problem is not None:
            raise InputError(path, problem, line)
    return records


def _read_json_text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise InputError(path, "not a text file: give a JSON file") from None


def read_records(path: Path | str) -> list[dict]:
    """Return the run records of a JSON or JSON-lines file (empty when it holds none)."""
    path = Path(path)
    text = _read_json_text(path)
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        pass
    else:
        return _checked(find_records(document), path)
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(path, f"neither JSON nor JSON lines: {error.msg}", number) from None
        records += _checked(find_records(document), path, number)
    return records


def by_configuration(records: list[dict]) -> list[dict]:
    """Return the records ordered by neurons then layers, keeping the file order otherwise."""
    return sorted(records, key=lambda record: (record["neurons"], record["layers"]))


def feature_rows(record: dict) -> int | None:
    """Return the images a record ran (`features`)."""
    # older result files of scripts/bench.py (bench/results/gpu-2026-11-23-*.json) say `rows`
    return record.get("features", record.get("rows"))


def configuration(record: dict) -> str:
    """Return `neurons-layers`, as the published figures key it, and any unofficial row count."""
    name = f"{record['neurons']}-{record['layers']}"
    rows = feature_rows(record)
    if rows is not None and rows != challenge.FEATURE_ROWS:
        name += f" ({rows} rows)"
    return name


# ---------------------------------------------------------------------------- tables

TABLE_COLUMNS = ("configuration", "device", "ranks", "TE/s", "edges computed", "read s",
                 "upload s", "inference s", "verified")
TABLE_ALIGNMENT = ("---", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---")


def _table_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _teraedges(value) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def _seconds(value) -> str:
    if value is None:
        return "–"
    return f"{value:.0f}" if value >= 1000 else f"{value:.3g}"


def _edges_computed(record: dict) -> str:
    """Return the products computed, and their share of the challenge's nominal edges."""
    computed, edges = record.get("edges_computed"), record.get("edges")
    if computed is None:
        return "–"
    if not edges:
        return f"{computed:.3g}"
    return f"{computed:.3g} ({computed / edges:.1%})"


def _verdict(verified) -> str:
    return {True: "yes", False: "**NO**", None: "no truth"}.get(verified, str(verified))


def markdown_table(records: list[dict]) -> str:
    """Return one Markdown table row per record, ordered by configuration."""
    lines = [_table_row(TABLE_COLUMNS), _table_row(TABLE_ALIGNMENT)]
    for record in by_configuration(records):
        teraedges = _teraedges(record["teraedges_per_second"])
        if record.get("repeat", 1) > 1:
            teraedges += f" (median of {record['repeat']})"
        cells = [
            configuration(record),
            record.get("device") or record.get("backend") or "–",
            str(record.get("ranks", "–")),
            teraedges,
            _edges_computed(record),
            _seconds(record.get("read_seconds")),
            _seconds(record.get("upload_seconds")),
            _seconds(record.get("inference_seconds")),
            _verdict(record.get("verified")),
        ]
        lines.append(_table_row(cells))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- published

def published() -> list[dict]:
    """Return the published throughput figures: name, hardware, source, teps by `N-L`."""
    text = resources.files("spdnn").joinpath("published.json").read_text()
    return json.loads(text)["entries"]


# ---------------------------------------------------------------------------- plots

def _figure(**settings):
    """Return a new matplotlib Figure; SpdnnError when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SpdnnError("plots need matplotlib: pip install 'spdnn[plot]'") from None
    return Figure(layout="constrained", **settings)


def save_png(figure, path: Path | str) -> None:
    from .io.atomic import atomic_path

    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=PLOT_DPI)


def series_name(record: dict) -> str:
    """Return the legend name of the runs comparable with `record`: backend, device, size."""
    backend = f" {record['backend']}" if record.get("backend") else ""
    name = f"spdnn{backend}: {record.get('device', 'unknown device')}"
    if record.get("ranks", 1) > 1:
        name += f", {record['ranks']} ranks"
    rows = feature_rows(record)
    if rows is not None and rows != challenge.FEATURE_ROWS:
        name += f", {rows} rows"
    return name


def best_by_series(records: list[dict]) -> dict[str, dict[str, float]]:
    """Return the best TE/s of every series at every `N-L` it ran (as papers report)."""
    best: dict[str, dict[str, float]] = {}
    for record in records:
        value = record["teraedges_per_second"]
        if value is None:
            continue
        key = f"{record['neurons']}-{record['layers']}"
        series = best.setdefault(series_name(record), {})
        series[key] = max(value, series.get(key, 0.0))
    return best


def throughput_figure(records: list[dict]):
    """Return a log-scale plot of TE/s per configuration, ours solid, published dashed.

    Lines join the layer counts of one N only: different N are different problems.
    """
    ours = best_by_series(by_configuration(records))
    keys = list(dict.fromkeys(key for series in ours.values() for key in series))
    keys.sort(key=lambda key: tuple(int(part) for part in key.split("-")))
    if not keys:
        raise SpdnnError("no record has a throughput to plot")
    groups = [list(group) for _, group in
              itertools.groupby(enumerate(keys), key=lambda item: item[1].split("-")[0])]
    figure = _figure(figsize=(max(8.0, 0.8 * len(keys) + 3.0), 7.0))
    axes = figure.subplots()

    def draw(teps: dict, label: str, **style) -> None:
        for group in groups:
            points = [(place, teps[key]) for place, key in group if key in teps]
            if points:
                axes.plot(*zip(*points), label=label, **style)
                label = "_nolegend_"   # one legend entry per series, not per N

    colours = itertools.cycle(f"C{index}" for index in range(10))
    for name, teps in ours.items():
        draw(teps, name, color=next(colours), marker="o", linewidth=2.5, markersize=7,
             zorder=3)
    for entry in published():
        draw(entry["teps"], f"{entry['name']}, {entry['hardware']}", color=next(colours),
             marker=".", linestyle="--", linewidth=1, alpha=0.8)
    for group in groups[1:]:
        axes.axvline(group[0][0] - 0.5, color="grey", linewidth=0.5)
    axes.set_yscale("log")
    axes.set_xticks(range(len(keys)), keys, rotation=30)
    axes.set_xlim(-0.5, len(keys) - 0.5)
    axes.set_xlabel("configuration (neurons-layers)")
    axes.set_ylabel("tera-edges per second")
    axes.set_title("Throughput: spdnn's best records beside published results")
    axes.grid(True, which="both", axis="y", alpha=0.3)
    figure.legend(fontsize="small", loc="outside lower center", ncols=2)
    return figure


# ---------------------------------------------------------------------------- activity

def read_trace(path: Path | str) -> dict:
    """Return a trace written by `spdnn run --trace`; InputError when the file is not one."""
    path = Path(path)
    try:
        trace = json.loads(_read_json_text(path))
    except json.JSONDecodeError as error:
        raise InputError(path, f"not JSON: {error.msg}", error.lineno) from None
    if not isinstance(trace, dict) or not {"active_rows", "distinct_rows"} <= trace.keys():
        raise InputError(path, "not a trace of `spdnn run --trace` (no active_rows)")
    active, distinct = trace["active_rows"], trace["distinct_rows"]
    for key, counts in (("active_rows", active), ("distinct_rows", distinct)):
        if not isinstance(counts, list) or not all(_is_number(count) for count in counts):
            raise InputError(path, f"{key} is not a list of row counts")
    if len(active) != len(distinct):
        raise InputError(path, f"{len(active)} active_rows but {len(distinct)} distinct_rows")
    if trace.get("features") is not None and not _is_number(trace["features"]):
        raise InputError(path, f"features is {trace['features']!r}, not a number")
    return trace


def activity_table(trace: dict) -> str:
    """Return a Markdown table of active and distinct rows at the landmark layers."""
    active, distinct = trace["active_rows"], trace["distinct_rows"]
    rows = trace.get("features")
    depth = len(active)
    layers = [layer for layer in ACTIVITY_LANDMARKS if layer < depth]
    if depth:
        layers.append(depth)
    lines = [_table_row(("layer", "active rows", "of the features", "distinct rows")),
             _table_row(("---:",) * 4)]
    for layer in layers:
        share = f"{active[layer - 1] / rows:.1%}" if rows else "–"
        lines.append(_table_row((str(layer), str(active[layer - 1]), share,
                                 str(distinct[layer - 1]))))
    return "\n".join(lines) + "\n"


def activity_figure(trace: dict):
    """Return a plot of active and distinct rows per layer: the curve behind the speed."""
    active, distinct = trace["active_rows"], trace["distinct_rows"]
    layers = range(1, len(active) + 1)
    figure = _figure(figsize=(7.0, 4.5))
    axes = figure.subplots()
    axes.plot(layers, active, label="active rows (images still non-zero)", linewidth=2)
    axes.plot(layers, distinct, label="distinct rows (rows computed)", linewidth=2,
              linestyle="--")
    if trace.get("features"):
        axes.axhline(trace["features"], color="grey", linestyle=":", linewidth=1,
                     label=f"features ({trace['features']})")
    axes.set_xscale("log")
    axes.set_yscale("symlog", linthresh=1)   # rows may all die: zero must stay drawable
    axes.set_ylim(bottom=0)
    axes.set_xlabel("layer")
    axes.set_ylabel("rows")
    where = ", ".join(str(trace[key]) for key in ("backend", "device") if trace.get(key))
    axes.set_title(f"Rows per layer: N={trace.get('neurons', '?')}, {len(active)} layers"
                   + (f" ({where})" if where else ""))
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    return figure
