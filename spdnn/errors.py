"""Errors that spdnn reports to users as one line, without a traceback."""

from __future__ import annotations

from pathlib import Path


class SpdnnError(Exception):
    """A problem the user can fix: bad input, bad usage. The CLI exits with code 2."""


class InputError(SpdnnError):
    """A file that is missing or malformed; names the file and, where known, the line."""

    def __init__(self, path: Path | str, message: str, line: int | None = None):
        self.path = Path(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")
