"""The terminals bench prints to: the only place in bench that owns a console."""

from __future__ import annotations

import os
import sys

from rich.console import Console

# bench run: 3 when a cell failed or timed out, or when nothing could be measured (the rows are written).
EXIT_OK, EXIT_USAGE, EXIT_CELLS_FAILED, EXIT_INTERRUPTED = 0, 2, 3, 130

console = Console(stderr=True)
# Piped to a file or a CI log, rich would squeeze the wide tables into 80 columns.
out = Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=220)
