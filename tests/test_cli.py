"""`spdnn run` and `spdnn convert` end to end: outputs, records, exit codes, bad input."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import random_features, random_network, reference_categories

from spdnn.cli import main
from spdnn.io import tsv


def write_layout(folder, network, features, layers_written=None, truth=None):
    """Write a problem in the official layout; returns the folder."""
    n = network.neurons
    (folder / f"neuron{n}").mkdir(parents=True)
    for k, layer in enumerate(network.layers[:layers_written], start=1):
        tsv.write_triples(folder / f"neuron{n}" / f"n{n}-l{k}.tsv", layer)
    tsv.write_triples(folder / f"sparse-images-{n}.tsv", features, integer_values=True)
    if truth is not None:
        tsv.write_categories(folder / f"neuron{n}-l{network.depth}-categories.tsv", truth)
    return folder


@pytest.fixture
def problem(rng, tmp_path):
    network = random_network(rng, 33, 7, 0.5)
    features = random_features(rng, 90, 33)
    truth = reference_categories(network, features)
    write_layout(tmp_path / "data", network, features, truth=truth)
    return tmp_path / "data", network, features, truth


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_run_writes_categories_and_a_complete_record(problem, tmp_path):
    data, network, _, truth = problem
    out, record = tmp_path / "cats.tsv", tmp_path / "run.json"
    result = invoke("run", "--data-dir", data, "--layers", 7, "--bias", 0.5, "--backend", "cpu",
                    "--out", out, "--json", record)
    assert result.exit_code == 0, result.output
    assert "match the truth" in result.output
    np.testing.assert_array_equal(np.loadtxt(out, dtype=int, ndmin=1), truth)
    entry = json.loads(record.read_text())
    for key in ("neurons", "layers", "features", "edges", "backend", "device", "ranks",
                "read_seconds", "inference_seconds", "teraedges_per_second", "categories",
                "verified"):
        assert key in entry
    assert entry["verified"] is True and entry["categories"] == truth.size
    assert entry["edges"] == 90 * network.nonzeros


def test_json_to_stdout_stays_machine_readable(problem):
    data, *_ = problem
    result = CliRunner().invoke(main, ["run", "--data-dir", str(data), "--layers", "7",
                                       "--bias", "0.5", "--json", "-"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["verified"] is True


def test_wrong_truth_exits_1_and_counts_the_difference(problem, tmp_path):
    data, _, _, truth = problem
    wrong = tmp_path / "wrong.tsv"
    tsv.write_categories(wrong, np.append(truth[1:], 10_000))
    result = invoke("run", "--data-dir", data, "--layers", 7, "--bias", 0.5,
                    "--categories", wrong)
    assert result.exit_code == 1
    assert "1 missing, 1 extra" in result.output


def test_only_the_first_layers_are_read(rng, tmp_path):
    network = random_network(rng, 20, 9, -0.5)
    features = random_features(rng, 60, 20)
    data = write_layout(tmp_path / "d", network, features)
    out = tmp_path / "c.tsv"
    result = invoke("run", "--weights", data / "neuron20", "--features",
                    data / "sparse-images-20.tsv", "--layers", 4, "--bias", -0.5, "--out", out)
    assert result.exit_code == 0, result.output
    expected = reference_categories(network.first(4), features)
    np.testing.assert_array_equal(np.loadtxt(out, dtype=int, ndmin=1), expected)


def test_convert_then_run_from_hdf5_and_reuse(problem, tmp_path):
    data, _, _, truth = problem
    store = tmp_path / "store"
    first = invoke("convert", "--data-dir", data, "--layers", 7, "--bias", 0.5, "--out", store)
    assert first.exit_code == 0 and "wrote" in first.output
    again = invoke("convert", "--data-dir", data, "--layers", 7, "--bias", 0.5, "--out", store)
    assert "reused" in again.output
    out = tmp_path / "c.tsv"
    result = invoke("run", "--weights", store / "neuron33-l7.h5", "--features",
                    store / "sparse-images-33.h5", "--out", out)
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.loadtxt(out, dtype=int, ndmin=1), truth)


def test_python_dash_m_works():
    result = subprocess.run([sys.executable, "-m", "spdnn", "--help"], capture_output=True,
                            text=True, check=True)
    assert "run" in result.stdout


BAD_WEIGHTS = {
    "non-numeric token": ("1\t2\t0.5\n3\tx\t1\n", ":2: column 2: 'x' is not an integer"),
    "wrong number of columns": ("1\t2\t0.5\n1\t2\n", ":2: expected 3 tab-separated columns"),
    "index 0": ("1\t2\t0.5\n0\t2\t0.5\n", ":2: column 1: index 0 is outside 1..33"),
    "index above N": ("34\t2\t0.5\n", ":1: column 1: index 34 is outside 1..33"),
    "NaN value": ("1\t2\tnan\n", ":1: column 3: nan is not finite"),
    "inf value": ("1\t2\t0.5\n1\t3\tinf\n", ":2: column 3: inf is not finite"),
}


@pytest.mark.parametrize("case", sorted(BAD_WEIGHTS))
def test_bad_weight_file_exits_2_naming_file_and_line(problem, tmp_path, case):
    data, *_ = problem
    text, message = BAD_WEIGHTS[case]
    (data / "neuron33" / "n33-l3.tsv").write_text(text)
    out, record = tmp_path / "c.tsv", tmp_path / "r.json"
    result = invoke("run", "--data-dir", data, "--layers", 7, "--bias", 0.5, "--out", out,
                    "--json", record)
    assert result.exit_code == 2
    assert "n33-l3.tsv" + message in result.output
    assert "Traceback" not in result.output
    assert not out.exists() and not record.exists()
    assert not list(tmp_path.glob(".*tmp"))


def test_truncated_gzip_exits_2(problem, tmp_path):
    data, *_ = problem
    plain = data / "neuron33" / "n33-l2.tsv"
    packed = gzip.compress(plain.read_bytes() * 50)
    plain.unlink()
    (data / "neuron33" / "n33-l2.tsv.gz").write_bytes(packed[: len(packed) // 2])
    result = invoke("run", "--data-dir", data, "--layers", 7, "--bias", 0.5)
    assert result.exit_code == 2
    assert "n33-l2.tsv.gz" in result.output and "truncated" in result.output


@pytest.mark.parametrize("args, message", [
    (["--layers", "8"], "n33-l8.tsv: no such file"),
    (["--layers", "0"], "0 is not in the range x>=1"),
    (["--backend", "tpu"], "'tpu' is not one of"),
    (["--neurons", "33", "--layers", "7"], "no official bias; give --bias"),
])
def test_bad_usage_exits_2(problem, args, message):
    data, *_ = problem
    result = invoke("run", "--data-dir", data, *args)
    assert result.exit_code == 2
    assert message in result.output


def test_convert_refuses_an_hdf5_network_as_input(problem, tmp_path):
    data, *_ = problem
    store = tmp_path / "store"
    invoke("convert", "--data-dir", data, "--layers", 7, "--bias", 0.5, "--out", store)
    result = invoke("convert", "--weights", store / "neuron33-l7.h5", "--features",
                    data / "sparse-images-33.tsv", "--out", tmp_path / "again")
    assert result.exit_code == 2
    assert "already an HDF5 network" in result.output
    assert not (tmp_path / "again").exists()


@pytest.mark.parametrize("args, message", [
    (["--features-rows", "10"], "go with --synthetic"),
    (["--json", "-", "--trace", "-"], "cannot both go to stdout"),
    (["--synthetic", "--weights", "w", "--features", "f"], "--synthetic reads no files"),
])
def test_options_that_cannot_go_together_exit_2(problem, args, message):
    data, *_ = problem
    extra = [] if "--weights" in args else ["--data-dir", data]
    result = invoke("run", *extra, "--bias", 0.5, *args)
    assert result.exit_code == 2
    assert message in result.output


def test_missing_features_file_exits_2(problem, tmp_path):
    data, *_ = problem
    result = invoke("run", "--weights", data / "neuron33", "--features", tmp_path / "none.tsv",
                    "--bias", 0.5)
    assert result.exit_code == 2
    assert "none.tsv: no such file" in result.output
