"""Gather sidecars and bench records into one table, and render the summary page.

The workflow writes the list of deployables (recipe, format, sidecar, expected
records) to a JSON file; every fact in a row comes from a typed sidecar or
record, none from a path. A deployable that could not be built keeps one row
whose ``status`` says why: ``unsupported``, ``convert_failed`` or
``stage_failed``; a record that is missing keeps its failure note's reason as
``bench_failed``.
"""

import base64
import io
import json
from pathlib import Path

import pandas as pd

from slimlab.artifacts import read_sidecar
from slimlab.atomic import atomic_path, write_bytes
from slimlab.errors import ArtifactError
from slimlab.option_sets import DEFAULT
from slimlab.records import BenchFailure, BenchRecord, Sidecar, failure_note_path, load

# What fastest.csv keeps for each recipe, format and device: the winning setting and what it buys.
FASTEST_KEY = ["recipe", "format", "device"]
FASTEST_COLUMNS = [*FASTEST_KEY, "option_set", "threads", "options", "latency_median_ms", "latency_cv",
                   "speedup_vs_default", "runtime", "accuracy", "size_bytes"]


def read_plan(path: Path) -> dict:
    """The workflow's ``deployables.json``: ``{"inventory", "bench", "deployables": [...]}``."""
    try:
        plan = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: cannot read the list of deployables: {exc}") from None
    if not isinstance(plan, dict) or not isinstance(plan.get("deployables"), list):
        raise ArtifactError(f"{path}: not a list of deployables written by this slimlab; rerun the workflow")
    return plan


def read_deployables(path: Path) -> list[dict]:
    return read_plan(path)["deployables"]


def failure_status(info: Sidecar) -> str:
    """``convert_failed`` when a conversion itself failed, ``stage_failed`` for a failed (or upstream) step."""
    own = info.lineage[-1].stage if info.lineage else ""
    skipped = (info.error or "").startswith("skipped:")
    return "convert_failed" if own.startswith("convert.") and not skipped else "stage_failed"


def artifact_columns(info: Sidecar, folder: str) -> dict:
    parity = info.metrics.get("parity")
    return {
        "steps": info.steps,
        "artifact": folder,
        "size_bytes": info.size.bytes,
        "gzip_bytes": info.size.gzip_bytes,
        "params": info.params.count,
        "nonzero_params": info.params.nonzero,
        "zero_fraction": info.zero_fraction,
        "macs": info.macs["total"] if info.macs else None,
        "accuracy": info.accuracy["test"],
        "accuracy_val": info.accuracy["val"],
        "parity_agreement": parity["agreement"] if parity else None,
        "parity_max_abs_diff_rel": parity["max_abs_diff_rel"] if parity else None,
        "parity_failed": (not parity["passed"]) if parity else None,
    }


def record_columns(record: BenchRecord) -> dict:
    on_device = {"device": record.device, "option_set": record.option_set, "threads": record.threads,
                 "status": record.status}
    if record.status != "ok":  # e.g. a device that could not run it: keep the reason
        return {**on_device, "error": record.error}
    latency, energy, memory = record.latency, record.energy, record.memory or {}
    return {
        **on_device,
        "runtime": record.runtime,
        "latency_median_ms": latency.median_ms,
        "latency_p90_ms": latency.p90_ms,
        "latency_mean_ms": latency.mean_ms,
        "latency_std_ms": latency.std_ms,
        "latency_cv": latency.cv,
        "latency_min_ms": latency.min_ms,
        "runs": latency.n,
        "init_ms": record.init_ms,
        "options": json.dumps(record.options.reported, sort_keys=True),
        "options_honoured": ",".join(record.options.honoured),
        "peak_rss_kib": memory.get("peak_rss_kib"),
        "load_rss_growth_kib": memory.get("load_growth_kib"),
        # noisy (high CV or throttled), throttled, cooldown_timed_out, ...: a reason to distrust the row
        "flags": ",".join(record.flags),
        "energy_j_per_inference": energy.joules_per_inference if energy else None,
        "avg_power_w": energy.avg_power_w if energy else None,
    }


def missing_record_columns(path: Path) -> dict:
    """A record the run did not produce: its failure note's reason, else that it is missing."""
    note = failure_note_path(path)
    if note.is_file():
        failure = load(BenchFailure, note, "bench failure note")
        return {"device": failure.device, "option_set": failure.option_set, "threads": failure.threads,
                "status": "bench_failed", "error": f"{failure.tag}: {failure.reason}"}
    return {"status": "bench_missing", "error": f"{path}: no record and no failure note"}


def rows(deployables: list[dict]) -> pd.DataFrame:
    """One row per (recipe, format, device, option set, threads); a deployable without records keeps one row."""
    out = []
    for item in deployables:
        base = {"recipe": item["recipe"], "format": item["format"]}
        if item.get("unsupported"):
            out.append({**base, "status": "unsupported", "error": item["unsupported"]})
            continue
        info = read_sidecar(item["sidecar"])
        if info.status == "failed":
            out.append({**base, "steps": info.steps, "status": failure_status(info), "error": info.error})
            continue
        base.update(artifact_columns(info, str(Path(item["sidecar"]).parent)))
        if not item.get("records"):
            out.append(base)
        for path in map(Path, item.get("records", [])):
            if path.is_file():
                out.append({**base, **record_columns(load(BenchRecord, path, "bench record"))})
            else:
                out.append({**base, **missing_record_columns(path)})
    return pd.DataFrame(out)


def failed_steps(summary: Path) -> list[str]:
    """One line per recipe whose steps failed: ``recipe: steps: message``."""
    table = pd.read_parquet(summary)
    if "status" not in table:
        return []
    failed = table[table["status"] == "stage_failed"].drop_duplicates(["recipe", "error"])
    return [f"{row.recipe}: {row.steps}: {row.error}" for row in failed.itertuples()]


def plot_accuracy_vs_latency(table: pd.DataFrame, path: Path) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    measured = table.dropna(subset=["latency_median_ms"]) if "latency_median_ms" in table else table.iloc[0:0]
    scale = 600 / max(float(measured["size_bytes"].max()), 1.0) if len(measured) else 1.0
    for (device, fmt), group in (measured.groupby(["device", "format"]) if len(measured) else []):
        ax.scatter(group["latency_median_ms"], 100 * group["accuracy"], s=20 + group["size_bytes"] * scale,
                   alpha=0.6, label=f"{fmt} on {device}")
        for _, row in group.iterrows():
            setting = "" if row["option_set"] == DEFAULT else f" {row['option_set']}"
            ax.annotate(f"{row['recipe']} t{int(row['threads'])}{setting}",
                        (row["latency_median_ms"], 100 * row["accuracy"]),
                        fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("median latency (ms)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs latency (marker area ∝ size on disk)")
    if len(measured):
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_bytes(path, buffer.getvalue())
    return buffer.getvalue()


def fastest(table: pd.DataFrame) -> pd.DataFrame:
    """Per recipe, format and device, the thread count and option set with the lowest median latency.

    ``speedup_vs_default`` compares it with the fastest thread count under the ``default`` set.
    """
    if "latency_median_ms" not in table:  # nothing was measured
        return pd.DataFrame(columns=FASTEST_COLUMNS)
    measured = table.dropna(subset=["latency_median_ms"])
    best = measured.loc[measured.groupby(FASTEST_KEY)["latency_median_ms"].idxmin()]
    default = measured[measured["option_set"] == DEFAULT].groupby(FASTEST_KEY)["latency_median_ms"].min()
    best = best.join(default.rename("default_median_ms"), on=FASTEST_KEY)
    best["speedup_vs_default"] = best["default_median_ms"] / best["latency_median_ms"]
    # Other rows' gaps made these columns float in the full table; every measured row has them.
    best = best.astype({"threads": int, "size_bytes": int})
    return best[FASTEST_COLUMNS].sort_values(FASTEST_KEY).reset_index(drop=True)


def html_table(table: pd.DataFrame) -> str:
    return table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="")


def write(deployables: list[dict], outdir: Path) -> pd.DataFrame:
    outdir = Path(outdir)
    table = rows(deployables)
    best = fastest(table)
    with atomic_path(outdir / "summary.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_path(outdir / "summary.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(outdir / "fastest.csv") as tmp:
        best.to_csv(tmp, index=False)
    png = plot_accuracy_vs_latency(table, outdir / "accuracy_vs_latency.png")
    shown = table.drop(columns=["artifact"], errors="ignore")
    html = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>slimlab summary</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}</style></head>
<body><h1>slimlab summary</h1>
<p>{len(table)} rows: every recipe × format × device × option set × thread count. Accuracy is measured on
the test split in the deployed format; latency is the median of the timed runs on the device.</p>
<img alt="accuracy vs latency" src="data:image/png;base64,{base64.b64encode(png).decode()}">
<h2>Fastest setting per artifact and device</h2>
<p>For each recipe, format and device: the option set and thread count with the lowest median latency, and its
speed-up over the fastest thread count with the <code>default</code> options.</p>
{html_table(best)}
<h2>Every measurement</h2>
{html_table(shown)}
</body></html>
"""
    write_bytes(outdir / "summary.html", html.encode())
    return table
