"""The Sparse DNN Graph Challenge's constants and file layout, in one place.

Every other module takes biases, YMAX, sizes and file names from here.
"""

from __future__ import annotations

import math
from pathlib import Path

YMAX = 32.0
"""Activations are clamped at this value after the ReLU."""

NEURONS = (1024, 4096, 16384, 65536)
LAYERS = (120, 480, 1920)
FEATURE_ROWS = 60000
"""The official feature files hold this many images."""

DEFAULT_BIAS = {1024: -0.30, 4096: -0.35, 16384: -0.40, 65536: -0.45}

BIAS_STEP = -0.05
"""The official biases change by this much each time N grows by a factor of 4."""

WEIGHTS_PER_ROW = 32
"""Official weights have exactly this many non-zeros in every row and column."""

WEIGHT_VALUE = 1.0 / 16
"""Every official weight is exactly 1/16."""

TSV_SUFFIXES = (".tsv", ".tsv.gz")

DEFAULT_SEED = 20190612
"""Seed of `spdnn generate` and of the bundled sample when none is given."""


def default_bias(neurons: int, extrapolate: bool = False) -> float:
    """Return the official bias for `neurons`; KeyError for sizes the challenge lacks.

    With `extrapolate`, other sizes get the official trend extended: BIAS_STEP per
    factor 4 in N from the smallest official N.
    """
    if neurons in DEFAULT_BIAS or not extrapolate:
        return DEFAULT_BIAS[neurons]
    smallest = min(DEFAULT_BIAS)
    return round(DEFAULT_BIAS[smallest] + BIAS_STEP * math.log(neurons / smallest, 4), 6)


def configurations() -> list[tuple[int, int]]:
    """Return the 12 official (neurons, layers) pairs, smallest first."""
    return [(n, layers) for n in NEURONS for layers in LAYERS]


def weights_dir(data_dir: Path, neurons: int) -> Path:
    return Path(data_dir) / f"neuron{neurons}"


def layer_stem(neurons: int, layer: int) -> str:
    """Return the file name of 1-based `layer` without suffix: `n1024-l7`."""
    return f"n{neurons}-l{layer}"


def features_stem(neurons: int) -> str:
    return f"sparse-images-{neurons}"


def categories_name(neurons: int, layers: int) -> str:
    return f"neuron{neurons}-l{layers}-categories.tsv"


def network_store_name(neurons: int, layers: int) -> str:
    """Return the file name of spdnn's HDF5 network store: `neuron1024-l120.h5`."""
    return f"neuron{neurons}-l{layers}.h5"


def features_store_name(neurons: int) -> str:
    return f"{features_stem(neurons)}.h5"


def find_tsv(folder: Path, stem: str) -> Path | None:
    """Return `folder/stem.tsv` or `folder/stem.tsv.gz`, whichever exists, else None."""
    for suffix in TSV_SUFFIXES:
        candidate = Path(folder) / (stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def edges(rows: int, weight_nonzeros: int) -> int:
    """Return the challenge's edge count: feature rows times all layers' non-zeros."""
    return int(rows) * int(weight_nonzeros)


SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "sample"
"""The small generated sample in the official layout that `spdnn run` runs by default."""
