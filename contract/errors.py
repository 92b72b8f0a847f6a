"""The one error type bad input raises: it names the file, row and column."""

from __future__ import annotations


class DataError(ValueError):
    """Input that breaks the data contract.

    `row` is 1-based over data rows (the header is not counted); for CSV the line in the file is row + 1.
    """

    def __init__(self, path: str, message: str, *, row: int | None = None, column: str | None = None):
        self.path = path
        self.row = row
        self.column = column
        self.reason = message
        where = [str(path)]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(f"{': '.join([', '.join(where), message])}")
