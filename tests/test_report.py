"""`spdnn report`, `spdnn activity` and `spdnn bench`: records in, tables and plots out."""

from __future__ import annotations

import json
import re
import statistics
import sys

import pytest
from click.testing import CliRunner
from conftest import SHARED, random_features, random_network, reference_categories

from spdnn import benchmark, challenge, report
from spdnn.cli import main
from spdnn.errors import InputError
from spdnn.io import tsv

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

RUN_KEYS = ("neurons", "layers", "features", "edges", "backend", "device", "ranks",
            "read_seconds", "upload_seconds", "inference_seconds", "teraedges_per_second",
            "edges_computed", "categories", "verified")
"""Fields of `spdnn run --json` that every bench record must carry too."""

EDGES_1024_120 = challenge.edges(challenge.FEATURE_ROWS, 1024 * 32 * 120)


def record(**changes) -> dict:
    """Return a plausible run record of N = 1024, 120 layers, with `changes`."""
    return {"neurons": 1024, "layers": 120, "features": challenge.FEATURE_ROWS,
            "edges": EDGES_1024_120, "backend": "cuda", "device": "NVIDIA H100 80GB HBM3",
            "ranks": 1, "read_seconds": 12.3456, "upload_seconds": 0.5,
            "inference_seconds": 0.01234, "teraedges_per_second": 52.13,
            "edges_computed": EDGES_1024_120 // 4, "categories": 1812, "verified": True,
            **changes}


def invoke(*args):
    """Run the CLI in-process; `stdout` and `stderr` of the result stay apart."""
    return CliRunner().invoke(main, [str(arg) for arg in args])


def table_rows(markdown: str) -> list[list[str]]:
    """Return the cells of a Markdown table's body rows."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def is_png(path) -> bool:
    return path.read_bytes()[:8] == PNG_SIGNATURE


@pytest.fixture
def results(tmp_path):
    """Three result files in the three shapes: JSON lines, one record, and a document
    whose records take their device from its top level."""
    lines = tmp_path / "bench.jsonl"
    lines.write_text(json.dumps(record(neurons=4096)) + "\n\n"
                     + json.dumps(record(layers=480, verified=None)) + "\n")
    nested = tmp_path / "h100.json"
    without_device = record(verified=False, repeat=5)
    device = without_device.pop("device")
    nested.write_text(json.dumps({"device": device, "machine": {"gpus": 1},
                                 "results": [without_device]}))
    single = tmp_path / "run.json"
    single.write_text(json.dumps(record(features=200, backend="cpu", device="CPU, 2 threads",
                                        teraedges_per_second=0.0589), indent=2))
    return [lines, nested, single]


def test_table_has_one_row_per_record_in_configuration_order(results):
    result = invoke("report", *results)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    rows = table_rows(result.stdout)
    assert [row[0] for row in rows] == ["1024-120", "1024-120 (200 rows)", "1024-480",
                                        "4096-120"]
    assert rows[0] == ["1024-120", "NVIDIA H100 80GB HBM3", "1", "52.1 (median of 5)",
                       "5.9e+10 (25.0%)", "12.3", "0.5", "0.0123", "**NO**"]
    assert rows[1][1:4] == ["CPU, 2 threads", "1", "0.0589"]
    assert rows[1][-1] == "yes"
    assert rows[2][-1] == "no truth"


def test_records_of_scripts_bench_show_their_row_count(tmp_path):
    gpu = tmp_path / "gpu.json"
    scripted = record(neurons=65536, layers=1920, rows=30000)
    del scripted["features"], scripted["device"]
    gpu.write_text(json.dumps({"device": "NVIDIA H100", "records": [scripted]}))
    assert table_rows(invoke("report", gpu).stdout)[0][:2] == ["65536-1920 (30000 rows)",
                                                                "NVIDIA H100"]


def test_markdown_file_gets_the_table_and_stdout_stays_empty(results, tmp_path):
    table = tmp_path / "table.md"
    result = invoke("report", *results, "--markdown", table)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert len(table_rows(table.read_text())) == 4


def test_files_without_records_are_noted_on_stderr_and_skipped(results, tmp_path):
    other = tmp_path / "device.json"
    other.write_text(json.dumps({"gpu": "H100", "driver": "550"}))
    result = invoke("report", other, results[1])
    assert result.exit_code == 0, result.output
    assert "device.json: no run records, skipped" in result.stderr
    assert len(table_rows(result.stdout)) == 1


def test_no_records_at_all_is_bad_input(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    result = invoke("report", empty)
    assert result.exit_code == 2
    assert "no run records" in result.stderr and result.stdout == ""


def test_broken_json_lines_name_the_file_and_the_line(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(record()) + "\n{oops\n")
    result = invoke("report", broken)
    assert result.exit_code == 2
    assert "broken.jsonl:2" in result.stderr


@pytest.mark.parametrize("changes, complaint", [
    ({"teraedges_per_second": "fast"}, "teraedges_per_second is 'fast', not a number"),
    ({"layers": "120"}, "layers is '120', not a positive integer"),
    ({"ranks": None}, "ranks is None, not a positive integer"),
    ({"verified": [True]}, "verified is [True]"),
])
def test_malformed_records_are_bad_input_naming_the_file(tmp_path, changes, complaint):
    document = tmp_path / "malformed.json"
    document.write_text(json.dumps({"records": [record(), record(**changes)]}))
    lines = tmp_path / "malformed.jsonl"
    lines.write_text(json.dumps(record()) + "\n" + json.dumps(record(**changes)) + "\n")
    for path, where in ((document, "malformed.json: "), (lines, "malformed.jsonl:2: ")):
        with pytest.raises(InputError, match=re.escape(complaint)):
            report.read_records(path)
        result = invoke("report", path)
        assert result.exit_code == 2
        assert where in result.stderr and complaint in result.stderr
        assert "Traceback" not in result.output


def test_plot_is_a_png_with_the_published_figures_labelled_by_hardware(results, tmp_path):
    pytest.importorskip("matplotlib", reason="plots need the optional extra spdnn[plot]")
    import matplotlib.image

    plot = tmp_path / "teps.png"
    result = invoke("report", *results, "--plot", plot)
    assert result.exit_code == 0, result.output
    assert is_png(plot)
    assert matplotlib.image.imread(plot).ndim == 3
    records = [found for path in results for found in report.read_records(path)]
    legend = [text.get_text() for text in report.throughput_figure(records).legends[0].texts]
    assert "spdnn cuda: NVIDIA H100 80GB HBM3" in legend
    assert "spdnn cpu: CPU, 2 threads, 200 rows" in legend
    assert "SNICIT (ICPP 2023), 1x RTX A6000" in legend
    assert "SuiteSparse:GraphBLAS v3.2, CPU, 40 threads, 20-core Xeon E5-2698v4" in legend


def test_plot_without_matplotlib_says_how_to_get_it(results, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    result = invoke("report", *results, "--plot", tmp_path / "teps.png")
    assert result.exit_code == 2
    assert "pip install 'spdnn[plot]'" in result.stderr
    assert "Traceback" not in result.output


def test_published_figures_carry_their_hardware_and_source():
    entries = report.published()
    assert len(entries) >= 6
    for entry in entries:
        assert entry["name"] and entry["hardware"] and entry["source"]
        assert set(entry["teps"]) <= {f"{n}-{layers}" for n, layers in challenge.configurations()}
    anchors = SHARED / "anchors" / "published.json"
    if anchors.is_file():
        assert entries == json.loads(anchors.read_text())["entries"]


@pytest.fixture
def trace(tmp_path):
    active = [90, 66, 35, 16, 8] + [3] * 25
    path = tmp_path / "trace.json"
    path.write_text(json.dumps({"neurons": 1024, "layers": 30, "features": 100,
                                "backend": "cpu", "device": "CPU, 2 threads",
                                "active_rows": active,
                                "distinct_rows": active[:10] + [1] * 20}))
    return path


def test_activity_lists_the_landmark_layers(trace):
    result = invoke("activity", trace)
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert [row[0] for row in rows] == ["1", "2", "3", "4", "5", "10", "20", "30"]
    assert rows[1] == ["2", "66", "66.0%", "66"]
    assert rows[-1] == ["30", "3", "3.0%", "1"]


def test_activity_plot_is_a_png(trace, tmp_path):
    pytest.importorskip("matplotlib", reason="plots need the optional extra spdnn[plot]")
    import matplotlib.image

    plot = tmp_path / "activity.png"
    result = invoke("activity", trace, "--plot", plot)
    assert result.exit_code == 0, result.output
    assert is_png(plot) and matplotlib.image.imread(plot).ndim == 3


def test_activity_rejects_a_file_that_is_not_a_trace(results):
    result = invoke("activity", results[2])
    assert result.exit_code == 2
    assert "not a trace" in result.stderr


@pytest.mark.parametrize("changes, complaint", [
    ({"active_rows": "many"}, "active_rows is not a list of row counts"),
    ({"distinct_rows": [3, "2"]}, "distinct_rows is not a list of row counts"),
    ({"distinct_rows": [3, 2]}, "30 active_rows but 2 distinct_rows"),
    ({"features": "all"}, "features is 'all', not a number"),
])
def test_activity_rejects_a_malformed_trace_naming_the_file(trace, changes, complaint):
    trace.write_text(json.dumps({**json.loads(trace.read_text()), **changes}))
    with pytest.raises(InputError, match=re.escape(complaint)):
        report.read_trace(trace)
    result = invoke("activity", trace)
    assert result.exit_code == 2
    assert f"trace.json: {complaint}" in result.stderr
    assert "Traceback" not in result.output


def test_run_json_on_stdout_stays_machine_readable_and_reportable(rng, tmp_path):
    network = random_network(rng, 40, 6, -0.2)
    features = random_features(rng, 60, 40)
    weights = tmp_path / "neuron40"
    weights.mkdir()
    for k, layer in enumerate(network.layers, start=1):
        tsv.write_triples(weights / f"n40-l{k}.tsv", layer)
    tsv.write_triples(tmp_path / "sparse-images-40.tsv", features, integer_values=True)
    result = invoke("run", "--weights", weights, "--features", tmp_path / "sparse-images-40.tsv",
                    "--bias", -0.2, "--backend", "cpu", "--json", "-")
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)
    assert set(RUN_KEYS) <= entry.keys()
    assert "inference" in result.stderr
    saved = tmp_path / "run.json"
    saved.write_text(result.stdout)
    # the row count is the TSV's (trailing empty images leave no line)
    assert table_rows(invoke("report", saved).stdout)[0][0] == f"40-6 ({entry['features']} rows)"


def test_configurations_default_to_the_twelve_official_ones():
    assert benchmark.configurations() == challenge.configurations()
    assert benchmark.configurations((4096, 1024), (480,)) == [(1024, 480), (4096, 480)]


def test_bench_skips_what_does_not_fit_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark, "host_available_bytes", lambda: 2**20)
    results_file = tmp_path / "results.jsonl"
    result = invoke("bench", "--neurons", 1024, "--layers", 120, "--backend", "cpu",
                    "--results", results_file)
    assert result.exit_code == 2
    assert "skipped: needs about" in result.stderr and "host memory" in result.stderr
    assert result.stdout == "" and not results_file.exists()


def test_bench_features_rows_are_for_generated_problems(tmp_path):
    result = invoke("bench", "--data-dir", tmp_path, "--features-rows", 10)
    assert result.exit_code == 2
    assert "--features-rows" in result.stderr


def test_bench_reads_the_official_layout_and_skips_what_it_lacks(rng, tmp_path):
    network = random_network(rng, 1024, 7, challenge.default_bias(1024))
    features = random_features(rng, 50, 1024, density=0.05)
    (tmp_path / "neuron1024").mkdir()
    for k, layer in enumerate(network.layers, start=1):
        tsv.write_triples(tmp_path / "neuron1024" / f"n1024-l{k}.tsv", layer)
    tsv.write_triples(tmp_path / "sparse-images-1024.tsv", features, integer_values=True)
    tsv.write_categories(tmp_path / "neuron1024-l7-categories.tsv",
                         reference_categories(network, features))
    results_file = tmp_path / "results.jsonl"
    result = invoke("bench", "--data-dir", tmp_path, "-n", 1024, "-l", 7, "-l", 8,
                    "--backend", "cpu", "--results", results_file)
    assert result.exit_code == 0, result.output
    assert "skipped: " in result.stderr and "holds 7 layer files, not 8" in result.stderr
    [entry] = [json.loads(line) for line in results_file.read_text().splitlines()]
    assert (entry["layers"], entry["verified"], entry["data"]) == (7, True, str(tmp_path))
    assert entry["read_seconds"] > 0


def test_bench_appends_verified_json_lines_with_every_time(tmp_path):
    generate = pytest.importorskip("spdnn.generate", reason="spdnn.generate not there yet")
    if not all(hasattr(generate, name) for name in ("radixnet", "features", "truth")):
        pytest.skip("spdnn.generate lacks radixnet/features/truth")
    results_file = tmp_path / "results.jsonl"
    earlier = json.dumps(record()) + "\n"
    results_file.write_text(earlier)
    result = invoke("bench", "--neurons", 1024, "--layers", 120, "--features-rows", 200,
                    "--backend", "cpu", "--repeat", 3, "--results", results_file)
    assert result.exit_code == 0, result.output
    lines = results_file.read_text().splitlines(keepends=True)
    assert len(lines) == 2 and lines[0] == earlier
    entry = json.loads(lines[1])
    assert set(RUN_KEYS) <= entry.keys()
    assert (entry["neurons"], entry["layers"], entry["features"]) == (1024, 120, 200)
    assert entry["verified"] is True and entry["backend"] == "cpu"
    assert len(entry["inference_seconds_all"]) == 3
    assert entry["inference_seconds"] == statistics.median(entry["inference_seconds_all"])
    assert entry["edges"] == challenge.edges(200, 1024 * 32 * 120)
    # progress and notes on stderr; stdout is the table alone
    assert "bench 1/1: N=1024, 120 layers" in result.stderr
    assert all(line.startswith("|") for line in result.stdout.splitlines())
    assert table_rows(result.stdout)[0][0] == "1024-120 (200 rows)"
