"""The `spdnn` command line: thin click commands over the library."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from . import challenge
from .backends import BACKENDS
from .errors import SpdnnError


class BadInput(click.ClickException):
    """Bad input or usage: one line on stderr, exit code 2."""

    exit_code = 2


def progress(items, label: str = ""):
    """Yield `items`, with a progress bar on stderr when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield from items
        return
    with click.progressbar(items, label=label, file=sys.stderr) as bar:
        yield from bar


@contextlib.contextmanager
def user_errors():
    """Turn the library's input errors and file-system errors into one line and exit 2."""
    try:
        yield
    except SpdnnError as error:
        raise BadInput(str(error)) from None
    except OSError as error:
        raise BadInput(f"{error.filename or ''}: {error.strerror or error}") from None


POSITIVE = click.IntRange(min=1)
OFFICIAL_BIASES = ", ".join(f"{b:.2f}" for b in challenge.DEFAULT_BIAS.values())


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             invoke_without_command=True)
@click.version_option(package_name="spdnn")
@click.pass_context
def main(ctx):
    """Sparse DNN Graph Challenge inference, exact and fast, on CPUs and GPUs.

    Run `spdnn run` with no arguments to infer the bundled sample and check it.
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


def _check_sources(data_dir, weights, features) -> None:
    """Refuse source options that cannot go together (before any file is looked at)."""
    if (weights or features) and not (weights and features):
        raise click.UsageError("--weights and --features go together")
    if data_dir and weights:
        raise click.UsageError("give --data-dir or --weights/--features, not both")


def _sources(data_dir, weights, features, categories, neurons, layers):
    """Return the paths of the problem the options name (the bundled sample by default)."""
    from . import dataset

    _check_sources(data_dir, weights, features)
    if weights:
        return dataset.Sources(Path(weights), Path(features),
                               Path(categories) if categories else None, neurons, layers)
    sources = dataset.from_data_dir(Path(data_dir or challenge.SAMPLE_DIR), neurons, layers)
    if categories:
        sources.categories = Path(categories)
    return sources


def _write_text(destination: str, text: str) -> None:
    """Write `text` to a file atomically, or to stdout when `destination` is '-'."""
    from .io.atomic import write_text_atomic

    if destination == "-":
        click.echo(text, nl=False)
    else:
        write_text_atomic(destination, text)


def _write_json(destination: str, entry: dict) -> None:
    _write_text(destination, json.dumps(entry, indent=2) + "\n")


data_options = [
    click.option("--data-dir", type=click.Path(file_okay=False),
                 help="Folder in the official layout: neuron{N}/, sparse-images-{N}.tsv[.gz], "
                      "neuron{N}-l{L}-categories.tsv. Default: the bundled sample."),
    click.option("--weights", type=click.Path(),
                 help="Folder of n{N}-l{k}.tsv[.gz] layer files, or a network .h5 file."),
    click.option("--features", type=click.Path(),
                 help="Feature file: sparse-images-{N}.tsv[.gz] or a features .h5 file."),
    click.option("--neurons", "-n", type=POSITIVE,
                 help="N, neurons per layer. Default: found from the file names."),
    click.option("--layers", "-l", type=POSITIVE,
                 help="L, layers to run. Default with --data-dir: the L of the one "
                      "neuron{N}-l{L}-categories.tsv there, else 120; otherwise every layer "
                      "the weights hold."),
    click.option("--bias", type=float,
                 help=f"Bias of every neuron. Default: the official one for N "
                      f"({OFFICIAL_BIASES}); required for other N."),
]


def with_data_options(function):
    for option in reversed(data_options):
        function = option(function)
    return function


@main.command()
@with_data_options
@click.option("--categories", type=click.Path(),
              help="Truth file to check against (one 1-based id per line).")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto",
              show_default=True, help="auto picks a GPU when one is usable.")
@click.option("--threads", type=POSITIVE,
              help="CPU threads for the cpu backend. Default: every core this process may use.")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write the computed categories here, one 1-based id per line.")
@click.option("--json", "json_out", metavar="FILE",
              help="Write the run's record as JSON to FILE ('-' for stdout).")
@click.option("--trace", type=click.Path(dir_okay=False),
              help="Write active and distinct rows per layer as JSON (for `spdnn activity`).")
@click.option("--synthetic", is_flag=True,
              help="Generate the problem in memory instead of reading files (RadiX-Net "
                   "weights, digit-like images; no truth, so nothing is verified). "
                   f"Default size: N = {challenge.NEURONS[0]}, L = {challenge.LAYERS[0]}.")
@click.option("--features-rows", type=POSITIVE,
              help=f"Feature rows of a --synthetic problem. Default: {challenge.FEATURE_ROWS}.")
@click.option("--seed", type=click.IntRange(min=0),
              help=f"Seed of a --synthetic problem. Default: {challenge.DEFAULT_SEED}.")
def run(data_dir, weights, features, neurons, layers, bias, categories, backend, threads,
        out, json_out, trace, synthetic, features_rows, seed):
    """Run the inference, time it, and check the categories against the truth.

    Exit code 0: done (and the categories match the truth when one is known);
    1: the categories differ from the truth; 2: bad usage or bad input.
    """
    from . import dataset, distributed, runner
    from .backends import make_engine
    from .io import tsv

    if json_out == "-" and trace == "-":
        raise click.UsageError("--json and --trace cannot both go to stdout")
    if not synthetic and (features_rows or seed is not None):
        raise click.UsageError("--features-rows and --seed go with --synthetic")
    talk = sys.stderr if "-" in (json_out, trace) else sys.stdout
    with user_errors():
        if distributed.launched():        # mpiexec/srun: rows split over ranks, rank 0 reports
            if synthetic:
                raise click.UsageError("--synthetic runs in one process; under MPI, "
                                       "`spdnn generate` the files first")
            _check_sources(data_dir, weights, features)
            # the files are looked for inside the job, so a rank that misses them stops all
            result, entry = distributed.run(
                lambda: _sources(data_dir, weights, features, categories, neurons, layers),
                bias, backend, threads, progress)
            if entry is None:
                return
        else:
            engine = make_engine(backend, threads)
            if synthetic:
                if data_dir or weights or features or categories:
                    raise click.UsageError("--synthetic reads no files: drop --data-dir, "
                                           "--weights, --features and --categories")
                problem = dataset.synthetic(neurons or challenge.NEURONS[0],
                                            layers or challenge.LAYERS[0],
                                            features_rows or challenge.FEATURE_ROWS,
                                            challenge.DEFAULT_SEED if seed is None else seed,
                                            bias)
            else:
                sources = _sources(data_dir, weights, features, categories, neurons, layers)
                problem = dataset.load(sources, bias, progress)
            result, entry = runner.run(problem, engine)
        if out:
            tsv.write_categories(out, result.categories)
        if json_out:
            _write_json(json_out, entry)
        if trace:
            _write_json(trace, runner.trace(entry, result))
    click.echo(runner.summary(entry), file=talk)
    if entry["verified"] is False:
        sys.exit(1)


@main.command()
@with_data_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder for neuron{N}-l{L}.h5 and sparse-images-{N}.h5.")
def convert(data_dir, weights, features, neurons, layers, bias, out_dir):
    """Convert challenge TSV files into spdnn's compressed HDF5 store.

    A second conversion of unchanged inputs reuses the files already written.
    """
    from . import dataset

    with user_errors():
        sources = _sources(data_dir, weights, features, None, neurons, layers)
        network_path, features_path, wrote = dataset.convert(sources, Path(out_dir), bias,
                                                             progress)
    state = "wrote" if wrote else "up to date, reused"
    click.echo(f"{state}: {network_path} {features_path}")


def _append_json_line(destination: str, entry: dict) -> None:
    line = json.dumps(entry) + "\n"
    if destination == "-":
        click.echo(line, nl=False)
        return
    Path(destination).parent.mkdir(parents=True, exist_ok=True)
    with open(destination, "a") as results:
        results.write(line)


@main.command()
@click.option("--neurons", "-n", type=click.IntRange(min=1), multiple=True,
              help="N to run; repeat for several. Default: 1024, 4096, 16384, 65536.")
@click.option("--layers", "-l", type=click.IntRange(min=1), multiple=True,
              help="Layers to run; repeat for several. Default: 120, 480, 1920.")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False),
              help="Read problems in the official layout from here. Default: generate them.")
@click.option("--features-rows", type=click.IntRange(min=1),
              help=f"Images to generate per N. Default: {challenge.FEATURE_ROWS}.")
@click.option("--seed", type=click.IntRange(min=0), default=challenge.DEFAULT_SEED,
              show_default=True,
              help="Seed of the generated weights and images.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto",
              show_default=True, help="auto picks a GPU when one is usable.")
@click.option("--threads", type=POSITIVE,
              help="CPU threads for the cpu backend. Default: every core this process may use.")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Inferences per configuration: the record is the median one and holds "
                   "every time.")
@click.option("--results", default="spdnn-results.jsonl", show_default=True, metavar="FILE",
              help="Append each configuration's record here as a JSON line ('-' for stdout).")
def bench(neurons, layers, data_dir, features_rows, seed, backend, threads, repeat, results):
    """Run several configurations, appending each record as a JSON line.

    Records are those of `spdnn run --json`. Configurations run smallest first; one that would not fit in memory, or whose files
    --data-dir lacks, is skipped with a note on stderr. Ends with a table of the runs
    (on stdout, or on stderr with --results -). Exit code 1 when a run's categories
    differ from the truth.
    """
    from . import benchmark, runner
    from . import report as reports

    if data_dir and features_rows:
        raise click.UsageError("--features-rows is for generated problems, not --data-dir")
    talk = sys.stderr if results == "-" else sys.stdout
    entries = []
    with user_errors():
        chosen = benchmark.configurations(neurons, layers)
        for entry in benchmark.bench(
                chosen, backend=backend, threads=threads,
                data_dir=Path(data_dir) if data_dir else None,
                rows=features_rows or challenge.FEATURE_ROWS, seed=seed, repeat=repeat,
                progress=progress, note=lambda line: click.echo(line, err=True)):
            _append_json_line(results, entry)
            click.echo(runner.summary(entry), err=True)
            entries.append(entry)
    if not entries:
        raise BadInput("no configuration could run here (see the notes above)")
    click.echo(reports.markdown_table(entries), file=talk, nl=False)
    if any(entry["verified"] is False for entry in entries):
        sys.exit(1)


@main.command("report")
@click.argument("results", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False))
@click.option("--markdown", "markdown_out", default="-", show_default=True, metavar="FILE",
              help="Write the table here ('-' for stdout).")
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Also draw TE/s per configuration beside the published figures (PNG).")
def report_command(results, markdown_out, plot):
    """Tabulate (and plot) run records from JSON and JSON-lines files.

    Records come from `spdnn run --json`, `spdnn bench` or bench/results/*.json. Reads JSON or JSON-lines files, taking every object that has neurons, layers and
    teraedges_per_second; a file without any is noted on stderr and skipped.
    """
    from . import report as reports

    records = []
    with user_errors():
        for path in results:
            found = reports.read_records(path)
            if not found:
                click.echo(f"spdnn report: {path}: no run records, skipped", err=True)
            records += found
        if not records:
            raise BadInput("no run records in the files given")
        table = reports.markdown_table(records)
        if plot:
            reports.save_png(reports.throughput_figure(records), plot)
        _write_text(markdown_out, table)


@main.command()
@click.argument("trace", type=click.Path(exists=True, dir_okay=False))
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Also draw active and distinct rows per layer (PNG).")
def activity(trace, plot):
    """Show the rows still active after each layer of a `spdnn run --trace` file.

    Prints a Markdown table at landmark layers; --plot draws every layer.
    """
    from . import report as reports

    with user_errors():
        traced = reports.read_trace(trace)
        if plot:
            reports.save_png(reports.activity_figure(traced), plot)
        table = reports.activity_table(traced)
    click.echo(table, nl=False)


@main.command("generate")
@click.option("--neurons", "-n", type=POSITIVE, default=challenge.NEURONS[0], show_default=True,
              help="N: 16 * 2^p neurons, a square (1024, 4096, 16384, 65536, or 256, ...).")
@click.option("--layers", "-l", type=click.IntRange(min=1), default=challenge.LAYERS[0],
              show_default=True, help="L, layers of the network.")
@click.option("--features-rows", type=click.IntRange(min=1), default=challenge.FEATURE_ROWS,
              show_default=True, help="Images to draw.")
@click.option("--seed", type=click.IntRange(min=0), default=challenge.DEFAULT_SEED,
              show_default=True, help="Seed of the weights' permutations and of the images.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder to write the data set into, in the official layout.")
@click.option("--format", "fmt", type=click.Choice(["tsv", "tsv.gz", "h5"]), default="tsv",
              show_default=True, help="Challenge TSV (plain or gzip) or spdnn's HDF5 store.")
@click.option("--bias", type=float,
              help="Bias of every neuron. Default: the official one for N, else its trend.")
def generate_command(neurons, layers, features_rows, seed, out_dir, fmt, bias):
    """Generate a synthetic problem: RadiX-Net weights, digit-like images, their truth.

    Writes neuron{N}/n{N}-l{k}.tsv, sparse-images-{N}.tsv (or, with --format h5,
    neuron{N}-l{L}.h5 and sparse-images-{N}.h5) and neuron{N}-l{L}-categories.tsv, the
    truth computed by the exact CPU backend. Every file is written atomically, the
    truth last.
    """
    from . import generate

    try:
        generate.check_neurons(neurons)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--neurons") from None
    with user_errors():
        written = generate.write_dataset(Path(out_dir), neurons, layers, features_rows, seed,
                                         fmt, bias, progress)
    click.echo(f"wrote {written.weights} ({layers} layers), {written.features} "
               f"({features_rows} rows), {written.categories} ({written.survivors} categories)")
