"""CSV cells that a spreadsheet cannot take for formulas.

A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is run as a formula
by Excel, LibreOffice and Google Sheets when the CSV is opened (`=HYPERLINK(...)` sends
data away), and translation memories and glossaries come from other companies. Every CSV
polydub writes goes through `writer`, which puts a `'` before such a cell: spreadsheets
show it as text without the quote. `plain_cell` undoes it when polydub reads its own CSV
back, so an export imports unchanged (a cell that already began with quotes before such a
character gets one more, so the two are each other's inverse).
"""

from __future__ import annotations

import csv
import re

QUOTE = "'"  # a spreadsheet's "this cell is text"
_FORMULA = re.compile(r"'*[=+\-@\t\r]")  # formula starts, behind any quotes added before


def safe_cell(value: object) -> object:
    """`value` with a `'` before it if a spreadsheet would read it as a formula; other
    values (numbers, None) as they are."""
    if isinstance(value, str) and _FORMULA.match(value):
        return QUOTE + value
    return value


def plain_cell(text: str) -> str:
    """A cell as `safe_cell` was given it: one added `'` taken off."""
    return text[1:] if text.startswith(QUOTE) and _FORMULA.match(text) else text


class writer:
    """`csv.writer(handle, **fmt)` whose every cell goes through `safe_cell`."""

    def __init__(self, handle, **fmt):
        self._writer = csv.writer(handle, **fmt)

    def writerow(self, row) -> None:
        self._writer.writerow([safe_cell(cell) for cell in row])

    def writerows(self, rows) -> None:
        for row in rows:
            self.writerow(row)
