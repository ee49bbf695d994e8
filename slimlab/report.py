"""Gather sidecars and bench records into one table, and render the summary page."""

import base64
import io
import json
from pathlib import Path

import pandas as pd

from slimlab.artifacts import Artifact, failure
from slimlab.atomic import atomic_path, write_bytes
from slimlab.option_sets import DEFAULT

# What fastest.csv keeps for each recipe, format and device: the winning setting and what it buys.
FASTEST_KEY = ["recipe", "format", "device"]
FASTEST_COLUMNS = [*FASTEST_KEY, "option_set", "threads", "options", "latency_median_ms", "latency_cv",
                   "speedup_vs_default", "runtime", "accuracy", "size_bytes"]


def option_set_of(record_path: str) -> str:
    """A record lives at ``<device>/<artifact>/<option set>/threads-<n>.json``."""
    return Path(record_path).parent.name


def rows(deployables: list[dict]) -> pd.DataFrame:
    """One row per (recipe, format, device, option set, threads); deployables without records keep one
    empty-latency row.

    A failed conversion is one row with ``status: convert_failed`` and the converter's message.
    """
    out = []
    for item in deployables:
        if item.get("unsupported"):
            out.append({"recipe": item["recipe"], "format": item["format"], "status": "unsupported",
                        "error": item["unsupported"]})
            continue
        error = failure(item["sidecar"])
        if error is not None:
            out.append({"recipe": item["recipe"], "format": item["format"], "status": "convert_failed", "error": error})
            continue
        artifact = Artifact.load(item["sidecar"])
        meta = artifact.meta
        parity = meta["metrics"].get("parity")
        base = {
            "recipe": item["recipe"],
            "format": item["format"],
            "lineage": " → ".join(step["stage"] for step in meta["lineage"]),
            "artifact": str(artifact.dir),
            "size_bytes": meta["size"]["bytes"],
            "gzip_bytes": meta["size"]["gzip_bytes"],
            "params": meta["params"]["count"],
            "nonzero_params": meta["params"]["nonzero"],
            "sparsity": meta["sparsity"],
            "accuracy": meta["accuracy"]["test"],
            "accuracy_val": meta["accuracy"]["val"],
            "parity_agreement": parity["agreement"] if parity else None,
            "parity_max_abs_diff_rel": parity["max_abs_diff_rel"] if parity else None,
            "parity_failed": (not parity["passed"]) if parity else None,
        }
        paths = item.get("records", [])
        if not paths:
            out.append(base)
        for path in paths:
            record = json.loads(Path(path).read_text())
            on_device = {**base, "device": record["device"], "option_set": option_set_of(path)}
            if record["status"] != "ok":  # e.g. a device that could not run it: keep the reason
                out.append({**on_device, "status": record["status"], "error": record.get("error")})
                continue
            latency = record["latency"]
            out.append({
                **on_device,
                "threads": record["settings"]["threads"],
                "runtime": record["raw"]["runtime"],
                "status": record["status"],
                "latency_median_ms": latency["median_ms"],
                "latency_p90_ms": latency["p90_ms"],
                "latency_mean_ms": latency["mean_ms"],
                "latency_std_ms": latency["std_ms"],
                "latency_cv": latency["cv"],
                "latency_min_ms": latency["min_ms"],
                "runs": latency["n"],
                "init_ms": record["raw"]["init_ms"],
                "options": json.dumps(record["raw"].get("options", {}), sort_keys=True),
                # noisy (high CV or throttled), throttled, cooldown_timed_out: a reason to distrust the row
                "flags": ",".join(record.get("flags", [])),
                "energy_j_per_inference": (record.get("energy") or {}).get("joules_per_inference"),
                "avg_power_w": (record.get("energy") or {}).get("avg_power_w"),
            })
    return pd.DataFrame(out)


def plot_accuracy_vs_latency(table: pd.DataFrame, path: Path) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    measured = table.dropna(subset=["latency_median_ms"]) if "latency_median_ms" in table else table.iloc[0:0]
    scale = 600 / max(float(measured["size_bytes"].max()), 1.0) if len(measured) else 1.0
    for (device, fmt), group in measured.groupby(["device", "format"]):
        ax.scatter(group["latency_median_ms"], 100 * group["accuracy"], s=20 + group["size_bytes"] * scale,
                   alpha=0.6, label=f"{fmt} on {device}")
        for _, row in group.iterrows():
            setting = "" if row["option_set"] == DEFAULT else f" {row['option_set']}"
            ax.annotate(f"{row['recipe']} t{row['threads']}{setting}", (row["latency_median_ms"], 100 * row["accuracy"]),
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
    shown = table.drop(columns=["artifact", "lineage"], errors="ignore")
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
