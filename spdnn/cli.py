"""The `spdnn` command line: thin click commands over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import challenge
from .errors import SpdnnError


class BadInput(click.ClickException):
    """Bad input or usage: one line on stderr, exit code 2."""

    exit_code = 2


def progress(items, label: str = ""):
    """Return `items` wrapped in a progress bar on stderr when stderr is a terminal."""
    return _ProgressIterable(items, label)


class _ProgressIterable:
    def __init__(self, items, label):
        self.items, self.label = items, label

    def __iter__(self):
        if not sys.stderr.isatty():
            yield from self.items
            return
        with click.progressbar(self.items, label=self.label, file=sys.stderr) as bar:
            yield from bar


def _positive(ctx, param, value):
    if value is not None and value < 1:
        raise click.BadParameter(f"must be at least 1, not {value}")
    return value


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


def _sources(data_dir, weights, features, categories, neurons, layers):
    from . import dataset

    if weights or features:
        if not (weights and features):
            raise click.UsageError("--weights and --features go together")
        if data_dir:
            raise click.UsageError("give --data-dir or --weights/--features, not both")
        return dataset.Sources(Path(weights), Path(features),
                               Path(categories) if categories else None, neurons, layers)
    sources = dataset.from_data_dir(Path(data_dir or challenge.SAMPLE_DIR), neurons, layers)
    if categories:
        sources.categories = Path(categories)
    return sources


def _write_json(destination: str, entry: dict) -> None:
    from .io.atomic import write_text_atomic

    text = json.dumps(entry, indent=2) + "\n"
    if destination == "-":
        click.echo(text, nl=False)
    else:
        write_text_atomic(destination, text)


data_options = [
    click.option("--data-dir", type=click.Path(file_okay=False),
                 help="Folder in the official layout: neuron{N}/, sparse-images-{N}.tsv[.gz], "
                      "neuron{N}-l{L}-categories.tsv. Default: the bundled sample."),
    click.option("--weights", type=click.Path(),
                 help="Folder of n{N}-l{k}.tsv[.gz] layer files, or a network .h5 file."),
    click.option("--features", type=click.Path(),
                 help="Feature file: sparse-images-{N}.tsv[.gz] or a features .h5 file."),
    click.option("--neurons", "-n", type=int, callback=_positive,
                 help="N, neurons per layer. Default: found from the file names."),
    click.option("--layers", "-l", type=int, callback=_positive,
                 help="L, layers to run. Default: 120 with --data-dir, else every layer "
                      "the weights hold."),
    click.option("--bias", type=float,
                 help="Bias of every neuron. Default: the official one for N "
                      "(-0.30, -0.35, -0.40, -0.45); required for other N."),
]


def with_data_options(function):
    for option in reversed(data_options):
        function = option(function)
    return function


@main.command()
@with_data_options
@click.option("--categories", type=click.Path(),
              help="Truth file to check against (one 1-based id per line).")
@click.option("--backend", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="auto picks a GPU when one is usable.")
@click.option("--threads", type=int, callback=_positive,
              help="CPU threads for the cpu backend. Default: every core this process may use.")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write the computed categories here, one 1-based id per line.")
@click.option("--json", "json_out", metavar="FILE",
              help="Write the run's record as JSON to FILE ('-' for stdout).")
@click.option("--trace", type=click.Path(dir_okay=False),
              help="Write active and distinct rows per layer as JSON (for `spdnn report`).")
def run(data_dir, weights, features, neurons, layers, bias, categories, backend, threads,
        out, json_out, trace):
    """Run the inference, time it, and check the categories against the truth.

    Exit code 0: done (and the categories match the truth when one is known);
    1: the categories differ from the truth; 2: bad usage or bad input.
    """
    from . import dataset, runner
    from .backends import make_engine
    from .io import tsv

    talk = sys.stderr if json_out == "-" else sys.stdout
    try:
        sources = _sources(data_dir, weights, features, categories, neurons, layers)
        engine = make_engine(backend, threads)
        problem = dataset.load(sources, bias, progress)
        result, entry = runner.run(problem, engine)
        if out:
            tsv.write_categories(out, result.categories)
        if json_out:
            _write_json(json_out, entry)
        if trace:
            _write_json(trace, runner.trace(entry, result))
    except SpdnnError as error:
        raise BadInput(str(error)) from None
    except OSError as error:
        raise BadInput(f"{error.filename or ''}: {error.strerror or error}") from None
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

    try:
        sources = _sources(data_dir, weights, features, None, neurons, layers)
        network_path, features_path, wrote = dataset.convert(sources, Path(out_dir), bias,
                                                             progress)
    except SpdnnError as error:
        raise BadInput(str(error)) from None
    state = "wrote" if wrote else "up to date, reused"
    click.echo(f"{state}: {network_path} {features_path}")
