"""The report: every deployable's sidecar and bench records, gathered into tables, a page and a plot.

``write`` builds ``summary.{parquet,csv,html}``, ``fastest.csv`` and ``accuracy_vs_latency.png``
from the workflow's list of deployables (``read_deployables``); ``slimlab report show``
prints the summary in a terminal (:mod:`slimlab.report.terminal`).
"""

import functools
from pathlib import Path

import pandas as pd

from slimlab.artifacts import read_sidecar
from slimlab.atomic import atomic_path, write_bytes
from slimlab.report.tables import (FASTEST_COLUMNS, FASTEST_KEY, NOT_DEVICE_FIGURE, REFERENCE, budgets_missed,
                                   failed_steps, fastest, read_deployables, read_plan, rows, step_deltas)

__all__ = ["FASTEST_COLUMNS", "FASTEST_KEY", "NOT_DEVICE_FIGURE", "REFERENCE", "budgets_missed", "failed_steps",
           "fastest", "read_deployables", "read_plan", "rows", "write"]


def write(deployables: list[dict], outdir: Path, reference: str = REFERENCE) -> pd.DataFrame:
    """Write every report file into ``outdir``; speed-ups and MAC ratios are against the ``reference`` recipe."""
    from slimlab.report import page, plots  # matplotlib: only here, not for the readers of the tables

    outdir = Path(outdir)
    read = functools.cache(read_sidecar)  # recipes share their chains' sidecars: read each once
    table = rows(deployables, reference, read)
    best = fastest(table)
    with atomic_path(outdir / "summary.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_path(outdir / "summary.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(outdir / "fastest.csv") as tmp:
        best.to_csv(tmp, index=False)
    measured = plots.points(table)
    write_bytes(outdir / "accuracy_vs_latency.png", plots.accuracy_vs_latency_png(measured))
    html = page.render(table, measured, best, step_deltas(table, read), reference)
    write_bytes(outdir / "summary.html", html.encode())
    return table
