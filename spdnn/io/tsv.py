"""The challenge's TSV files (plain or gzip): weights, features and truth categories.

Parsing goes through pyarrow's multi-threaded CSV reader. When it or a value check
fails, a slow line-by-line scan finds the first bad line so that the error names it.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from ..network import VALUE_DTYPE
from .atomic import atomic_path


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="ascii", errors="replace")
    return open(path, encoding="ascii", errors="replace")


def _first_bad_line(path: Path, columns: int, integer_columns: int, limit: int | None):
    """Return (line, reason) of the first malformed line, or None when every line parses."""
    try:
        with _open_text(path) as lines:
            for number, text in enumerate(lines, start=1):
                fields = text.rstrip("\r\n").split("\t")
                if fields == [""]:
                    continue
                if len(fields) != columns:
                    return number, f"expected {columns} tab-separated columns, found {len(fields)}"
                for position, token in enumerate(fields):
                    try:
                        value = int(token) if position < integer_columns else float(token)
                    except ValueError:
                        kind = "an integer" if position < integer_columns else "a number"
                        return number, f"column {position + 1}: {token!r} is not {kind}"
                    if not math.isfinite(value):
                        return number, f"column {position + 1}: {token!r} is not finite"
                    if position < integer_columns and limit is not None and not 1 <= value <= limit:
                        return number, f"column {position + 1}: index {value} is outside 1..{limit}"
    except (EOFError, OSError, zlib.error) as error:
        return None, f"cannot decompress ({error}); the file is truncated or corrupt"
    return None


def read_table(path: Path | str, columns: int = 3, integer_columns: int = 2,
               limit: int | None = None) -> list[np.ndarray]:
    """Return the columns of a headerless TSV file as arrays (int64 ids, float64 values).

    Integer columns hold 1-based indices that must lie in 1..limit when `limit` is given;
    value columns must be finite. Any violation raises InputError naming the line.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    names = [f"c{k}" for k in range(columns)]
    types = {name: (pa.int64() if k < integer_columns else pa.float64())
             for k, name in enumerate(names)}
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names),
            parse_options=pacsv.ParseOptions(delimiter="\t"),
            convert_options=pacsv.ConvertOptions(column_types=types),
        )
    except (pa.ArrowException, OSError, EOFError, zlib.error) as error:
        problem = _first_bad_line(path, columns, integer_columns, limit)
        if problem is None:
            message = str(error).splitlines()[0]
            if "Empty CSV file" in message:
                raise InputError(path, "the file is empty") from None
            raise InputError(path, f"cannot parse: {message}") from None
        line, reason = problem
        raise InputError(path, reason, line) from None

    arrays = [table.column(k).to_numpy() for k in range(columns)]
    for k, array in enumerate(arrays):
        if k < integer_columns and limit is not None:
            bad = np.flatnonzero((array < 1) | (array > limit))
            if bad.size:
                raise InputError(path, f"column {k + 1}: index {array[bad[0]]} is outside "
                                 f"1..{limit}", int(bad[0]) + 1)
        elif k >= integer_columns:
            bad = np.flatnonzero(~np.isfinite(array))
            if bad.size:
                raise InputError(path, f"column {k + 1}: {array[bad[0]]} is not finite",
                                 int(bad[0]) + 1)
    return arrays


def read_weights(path: Path | str, neurons: int) -> sp.csr_matrix:
    """Return one layer `row column value` (1-based) as an N x N CSR matrix."""
    rows, columns, values = read_table(path, limit=neurons)
    layer = sp.csr_matrix((values.astype(VALUE_DTYPE), (rows - 1, columns - 1)),
                          shape=(neurons, neurons))
    layer.sum_duplicates()
    return layer


def read_features(path: Path | str, neurons: int) -> sp.csr_matrix:
    """Return `image pixel value` triples as a CSR matrix with one row per image.

    The row count is the largest image id in the file (a TSV file cannot show images
    after the last one that has a pixel; they would infer nothing).
    """
    images, pixels, values = read_table(path, limit=None)
    path = Path(path)
    bad = np.flatnonzero((pixels < 1) | (pixels > neurons))
    if bad.size:
        raise InputError(path, f"column 2: pixel {pixels[bad[0]]} is outside 1..{neurons}",
                         int(bad[0]) + 1)
    bad = np.flatnonzero(images < 1)
    if bad.size:
        raise InputError(path, f"column 1: image id {images[bad[0]]} is below 1", int(bad[0]) + 1)
    if images.size == 0:
        raise InputError(path, "the file holds no features")
    count = int(images.max())
    features = sp.csr_matrix((values.astype(VALUE_DTYPE), (images - 1, pixels - 1)),
                             shape=(count, neurons))
    features.sum_duplicates()
    features.eliminate_zeros()
    return features


def read_categories(path: Path | str) -> np.ndarray:
    """Return the 1-based ids of a truth file, ascending (an empty file is no categories)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    ids = []
    with _open_text(path) as lines:
        for number, text in enumerate(lines, start=1):
            token = text.strip()
            if not token:
                continue
            try:
                value = int(token)
            except ValueError:
                raise InputError(path, f"{token!r} is not an integer id", number) from None
            if value < 1:
                raise InputError(path, f"id {value} is below 1", number)
            ids.append(value)
    return np.unique(np.array(ids, dtype=np.int64))


def write_categories(path: Path | str, categories: np.ndarray) -> None:
    """Write 1-based ids one per line, atomically."""
    with atomic_path(path) as temporary:
        np.savetxt(temporary, np.asarray(categories, dtype=np.int64), fmt="%d")


def write_triples(path: Path | str, matrix: sp.spmatrix, integer_values: bool = False,
                  column_major: bool = True) -> None:
    """Write a sparse matrix as 1-based `row column value` lines, atomically; .gz compresses.

    Lines are ordered by column then row, as in the official weight files, or with
    `column_major=False` by row then column, as in the official feature files; feature
    files also pass `integer_values` to print their 1s as integers.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    ordered = sp.csc_matrix(matrix) if column_major else sp.csr_matrix(matrix)
    if not ordered.has_sorted_indices:
        ordered = ordered.sorted_indices()   # a copy: the caller's matrix stays as it was
    coo = ordered.tocoo()
    values = pa.array(coo.data.astype(np.int64 if integer_values else np.float64))
    table = pa.table({"r": pa.array(coo.row.astype(np.int64) + 1),
                      "c": pa.array(coo.col.astype(np.int64) + 1), "v": values})
    options = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    path = Path(path)
    with atomic_path(path) as temporary:
        compression = "gzip" if path.name.endswith(".gz") else None
        with pa.CompressedOutputStream(str(temporary), "gzip") if compression else \
                pa.OSFile(str(temporary), "wb") as sink:
            pacsv.write_csv(table, sink, write_options=options)
