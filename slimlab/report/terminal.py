"""``slimlab report show``: the summary as a rich table in the terminal, filtered and sorted."""

import sys
from pathlib import Path

import pandas as pd
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from slimlab.errors import ArtifactError, SlimlabError
from slimlab.report.tables import number_format, with_quality

SUMMARY = Path("results/report/summary.parquet")
KEY = ["recipe", "format", "device", "option_set", "threads"]
COLUMNS = [*KEY, "status", "accuracy", "latency_median_ms", "speedup_vs_baseline", "mac_ratio", "size_bytes", "flags"]
STATUS_STYLE = {"ok": "green"}
PIPED_WIDTH = 200
TEXT_WIDTH = 12


def read_summary(path: Path) -> pd.DataFrame:
    if not Path(path).is_file():
        raise ArtifactError(f"{path}: no summary here; run the workflow (snakemake) or pass --summary")
    return pd.read_parquet(path) if Path(path).suffix == ".parquet" else pd.read_csv(path)


def select(table: pd.DataFrame, filters: dict[str, list[str]], sort: str | None, descending: bool,
           columns: list[str]) -> pd.DataFrame:
    """The rows whose device, format and recipe are among those asked for, sorted; an unknown value or column is
    one SlimlabError line that lists what there is."""
    for column, wanted in filters.items():
        if not wanted:
            continue
        known = sorted(table[column].dropna().unique())
        unknown = [value for value in wanted if value not in known]
        if unknown:
            raise SlimlabError(f"no {column} {', '.join(map(repr, unknown))} in the summary; it has {', '.join(known)}")
        table = table[table[column].isin(wanted)]
    unknown = [column for column in [*columns, *([sort] if sort else [])] if column not in table]
    if unknown:
        raise SlimlabError(f"no column {', '.join(map(repr, unknown))} in the summary; columns: "
                           f"{', '.join(table.columns)}")
    ordered = table.sort_values(sort or KEY, ascending=not descending, na_position="last", kind="stable")
    return ordered[columns]


def render(table: pd.DataFrame, title: str) -> Table:
    """Numbers never fold (a column is as wide as its widest number); text folds past TEXT_WIDTH, headers wrap."""
    shown = Table(title=title, header_style="bold", row_styles=["", "dim"], box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    cells = {}
    for column in table.columns:
        numbers = number_format(table[column])
        cells[column] = ["" if pd.isna(value) else (numbers or str)(value) for value in table[column]]
        widest = max(map(len, cells[column]), default=0)
        shown.add_column(column.replace("_", " "), justify="right" if numbers else "left", overflow="fold",
                         min_width=widest if numbers else min(widest, TEXT_WIDTH))
    for n, status in enumerate(table["status"] if "status" in table else [None] * len(table)):
        # Text, not markup: a step's params hold brackets.
        shown.add_row(*(Text(cells[column][n], style=STATUS_STYLE.get(status, "red") if column == "status" else "")
                        for column in table.columns))
    return shown


def show(summary: Path, filters: dict[str, list[str]], sort: str | None, descending: bool,
         columns: list[str] | None, console: Console | None = None) -> None:
    found = read_summary(summary)
    table = select(found, filters, sort, descending, columns or with_quality(COLUMNS, found))
    # Piped into a file or a pager, a row stays on one line where it can; a terminal gets its own width.
    console = console or Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)
    shown = render(table, f"{summary}: {len(table)} rows")
    # Wider than the terminal rather than cropped: a cut column would hide numbers (--columns picks fewer).
    console.print(shown, width=max(console.width, Measurement.get(console, console.options, shown).minimum),
                  crop=False)
