"""The report's tables, from typed sidecars and records only (never from a path).

``rows`` is the summary: one row per recipe, format, device, option set and thread
count. A deployable that could not be built keeps one row whose ``status`` says why
(``unsupported``, ``convert_failed``, ``stage_failed``); a record that is missing
keeps its failure note's reason (``bench_failed``), or says it is missing
(``bench_missing``).

A record from an emulated device (``emulated``: the core it emulates), or one a software
GPU driver ran (flag ``software_gpu``: Mesa's lavapipe is the CPU), keeps its latency
columns, but never enters a speed-up, ``fastest`` or the plots: it shows what ran and
with what output. ``device_*`` columns hold a device's own run of the test samples
(``python: {evaluate: N}``), ``device_parity_failed`` when it misses the parity bar.
"""

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from slimlab import budget
from slimlab.artifacts import SIDECAR, read_sidecar
from slimlab.errors import ArtifactError
from slimlab.option_sets import DEFAULT
from slimlab.records import (BenchFailure, BenchRecord, DeviceEval, Emulation, Sidecar, Step, failure_note_path,
                             load)

ReadSidecar = Callable[[str | Path], Sidecar]

# A speed-up compares like with like: the same format, device, option set and thread count.
SETTING = ["format", "device", "option_set", "threads"]
# The recipe speed-ups and MAC ratios are measured against (bench/compression.py uses the same one).
REFERENCE = "baseline"
# issue 11: a speed-up below this share of the MAC ratio means the runtime does not turn fewer MACs into time.
SPEEDUP_BELOW_MACS = 0.6

# Every summary column in order, with its dtype: the table has them all even when nothing was measured.
COLUMNS = {
    "recipe": "str", "format": "str", "device": "str", "option_set": "str", "threads": "float64",
    "status": "str", "error": "str", "steps": "str", "step_params": "str",
    "size_bytes": "float64", "gzip_bytes": "float64", "params": "float64", "nonzero_params": "float64",
    "zero_fraction": "float64", "macs": "float64",
    "accuracy": "float64", "accuracy_val": "float64", "task": "str",
    "budget_metric": "str", "budget_source": "float64", "budget_value": "float64", "budget_drop": "float64",
    "budget_max_drop": "float64", "notes": "str",
    "fidelity_snr_db": "float64", "fidelity_cosine": "float64", "parity_agreement": "float64",
    "parity_max_abs_diff_rel": "float64", "parity_failed": "object",
    "device_accuracy": "float64", "device_agreement": "float64", "device_max_abs_diff_rel": "float64",
    "device_parity_failed": "object",
    "runtime": "str", "emulated": "str", "latency_median_ms": "float64", "speedup_vs_baseline": "float64",
    "mac_ratio": "float64",
    "latency_p90_ms": "float64", "latency_mean_ms": "float64", "latency_std_ms": "float64", "latency_cv": "float64",
    "latency_min_ms": "float64", "runs": "float64", "init_ms": "float64",
    "options": "str", "options_honoured": "str",
    "peak_rss_kib": "float64", "load_rss_growth_kib": "float64", "runtime_memory_mb": "float64",
    "energy_j_per_inference": "float64", "avg_power_w": "float64", "energy_reason": "str",
    "flags": "str", "artifact": "str", "record": "str",
}

# Besides COLUMNS, one column per metric of the task (``test_<metric>``, e.g. ``test_map50``) and per output's
# fidelity (``snr_db:<output>``), after the fixed ones.
TASK_METRIC, OUTPUT_SNR = "test_", "snr_db:"



def with_quality(columns: list[str], table: pd.DataFrame) -> list[str]:
    """``columns`` with the task's metrics and the worst output's fidelity after ``accuracy``, where the table has
    any value for them (a classifier's report keeps its shape)."""
    quality = [column for column in ("fidelity_snr_db", *sorted(c for c in table if c.startswith(TASK_METRIC)))
               if column in table and table[column].notna().any() and column not in columns]
    at = columns.index("accuracy") + 1
    return [*columns[:at], *quality, *columns[at:]]


# What fastest.csv keeps for each recipe, format and device: the winning setting and what it buys.
FASTEST_KEY = ["recipe", "format", "device"]
FASTEST_COLUMNS = [*FASTEST_KEY, "option_set", "threads", "options", "latency_median_ms", "latency_cv",
                   "speedup_vs_default", "runtime", "accuracy", "size_bytes"]


def number_format(column: pd.Series) -> Callable[[float], str] | None:
    """How the page and the terminal write a column of numbers: whole numbers with thousands separators, others to 4
    significant digits; None for any other column."""
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return None
    return "{:,.0f}".format if (column.dropna() % 1 == 0).all() else "{:.4g}".format


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
        # Every param of every step, defaults included: `steps` shows only those that differ.
        "step_params": json.dumps([{step.stage: step.params} for step in info.lineage], sort_keys=True),
        "artifact": folder,
        "size_bytes": info.size.bytes,
        "gzip_bytes": info.size.gzip_bytes,
        "params": info.params.count,
        "nonzero_params": info.params.nonzero,
        "zero_fraction": info.zero_fraction,
        "macs": info.macs["total"] if info.macs else None,
        "accuracy": info.accuracy["test"] if info.accuracy else None,
        "accuracy_val": info.accuracy["val"] if info.accuracy else None,
        "task": info.dataset.get("task", {}).get("name"),
        **fidelity_columns(info.fidelity),
        **({TASK_METRIC + metric: value for metric, value in info.quality["test"].items()} if info.quality else {}),
        "parity_agreement": parity["agreement"] if parity else None,
        "parity_max_abs_diff_rel": parity["max_abs_diff_rel"] if parity else None,
        "parity_failed": (not parity["passed"]) if parity else None,
    }


def unchanged_steps(info: Sidecar, read: ReadSidecar) -> str | None:
    """Which steps of the lineage left their model as it was, and why (``StageContext.unchanged``)."""
    notes = [f"{step.stage} changed nothing: {reason}" for step in info.lineage
             if (reason := read(Path(step.artifact) / SIDECAR).metrics.get("unchanged"))]
    return "; ".join(notes) or None


def fidelity_columns(fidelity: dict | None) -> dict:
    """The least SNR and cosine over the outputs, and each output's SNR (against the recipe's source model)."""
    if not fidelity:
        return {}
    outputs = fidelity["outputs"]
    return {"fidelity_snr_db": min(found["snr_db"] for found in outputs.values()),
            "fidelity_cosine": min(found["cosine"] for found in outputs.values()),
            **{OUTPUT_SNR + name: found["snr_db"] for name, found in outputs.items()}}


def emulated_text(emulated: Emulation | None) -> str | None:
    """What the ``emulated`` column says: the core an emulated device emulates (or ``yes``); empty for a device."""
    return None if emulated is None else emulated.qemu_cpu or "yes"


def device_eval_columns(found: DeviceEval | None) -> dict:
    if found is None:
        return {}
    return {"device_accuracy": found.accuracy, "device_agreement": found.agreement,
            "device_max_abs_diff_rel": found.max_abs_diff_rel, "device_parity_failed": not found.passed}


def record_columns(record: BenchRecord) -> dict:
    on_device = {"device": record.device, "option_set": record.option_set, "threads": record.threads,
                 "status": record.status, "emulated": emulated_text(record.emulated)}
    if record.status != "ok":  # e.g. a device that could not run it: keep the reason
        return {**on_device, "error": record.error}
    latency, energy, memory = record.latency, record.energy, record.memory or {}
    return {
        **on_device,
        **device_eval_columns(record.device_eval),
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
        "runtime_memory_mb": memory.get("runtime_mb"),  # the runtime's own account, where it gives one (MNN)
        # noisy (high CV or throttled), throttled, cooldown_timed_out, ...: a reason to distrust the row
        "flags": ",".join(record.flags),
        "energy_j_per_inference": energy.joules_per_inference if energy else None,
        "avg_power_w": energy.avg_power_w if energy else None,
        "energy_reason": energy.reason if energy else None,
    }


def missing_record_columns(path: Path) -> dict:
    """A record the run did not produce: its failure note's reason, else that it is missing."""
    note = failure_note_path(path)
    if note.is_file():
        failure = load(BenchFailure, note, "bench failure note")
        return {"device": failure.device, "option_set": failure.option_set, "threads": failure.threads,
                "emulated": emulated_text(failure.emulated), "status": "bench_failed",
                "error": f"{failure.tag}: {failure.reason}"}
    return {"status": "bench_missing", "error": f"{path}: no record and no failure note"}


def rows(deployables: list[dict], reference: str = REFERENCE, read: ReadSidecar = read_sidecar) -> pd.DataFrame:
    """One row per (recipe, format, device, option set, threads); a deployable without records keeps one row."""
    out = []
    for item in deployables:
        base = {"recipe": item["recipe"], "format": item["format"]}
        if item.get("unsupported"):
            out.append({**base, "status": "unsupported", "error": item["unsupported"]})
            continue
        info = read(item["sidecar"])
        if info.status != "ok":
            status = "unsupported" if info.status == "unsupported" else failure_status(info)
            out.append({**base, "steps": info.steps, "status": status, "error": info.error})
            continue
        base.update(artifact_columns(info, str(Path(item["sidecar"]).parent)), notes=unchanged_steps(info, read))
        missed = False
        if item.get("budget"):
            judged = budget.verdict(item["budget"], info, read(item["budget_source"]))
            missed = judged.pop("missed")
            base.update(judged, status=BUDGET_MISSED if missed else "ok")
        if not item.get("records"):
            out.append(base)
        for path in map(Path, item.get("records", [])):
            found = record_columns(load(BenchRecord, path, "bench record")) if path.is_file() \
                else missing_record_columns(path)
            if missed and found["status"] == "ok":
                found["status"] = BUDGET_MISSED
            out.append({**base, "record": str(path), **found})
    frame = pd.DataFrame(out)
    extra = sorted(column for column in frame.columns if column.startswith((TASK_METRIC, OUTPUT_SNR)))
    columns = {**COLUMNS, **dict.fromkeys(extra, "float64")}
    return compare_with_reference(frame.reindex(columns=list(columns)).astype(columns), reference)


# A measured model outside its recipe's quality budget: it keeps its figures, but is never offered as fastest.
BUDGET_MISSED = "budget_missed"
# Record flags that say its latency is not the device's own: an emulator's, or a software GPU driver's.
NOT_DEVICE_FIGURE = {"emulated", "software_gpu"}


def not_device_figure(table: pd.DataFrame) -> pd.Series:
    """Which rows' latencies are no device figure: from an emulated device, or flagged as one (NOT_DEVICE_FIGURE)."""
    emulated = table["emulated"].notna() if "emulated" in table else pd.Series(False, index=table.index)
    flags = table["flags"] if "flags" in table else pd.Series(None, index=table.index, dtype=object)
    flagged = flags.fillna("").map(lambda text: not NOT_DEVICE_FIGURE.isdisjoint(text.split(",")))
    return emulated | flagged.astype(bool)


def device_figures(table: pd.DataFrame) -> pd.DataFrame:
    """The rows whose latency is a device's: measured, and neither on an emulator nor on a software GPU (those rows
    keep their latency columns, but never enter a speed-up, fastest.csv, a plot or a Pareto front)."""
    measured = table["status"].isin(["ok", BUDGET_MISSED])
    return table[measured & ~not_device_figure(table)].dropna(subset=["latency_median_ms"])


def compare_with_reference(table: pd.DataFrame, reference: str) -> pd.DataFrame:
    """``speedup_vs_baseline`` and ``mac_ratio`` against the ``reference`` recipe in the same setting; rows whose
    speed-up is below SPEEDUP_BELOW_MACS × their MAC ratio get the ``speedup_below_macs`` flag."""
    measured = device_figures(table[table["recipe"] == reference])
    ref = measured.drop_duplicates(SETTING).set_index(SETTING)[["latency_median_ms", "macs"]]
    matched = table.join(ref, on=SETTING, rsuffix="_reference")
    table["speedup_vs_baseline"] = matched["latency_median_ms_reference"] / table["latency_median_ms"]
    table["mac_ratio"] = matched["macs_reference"] / table["macs"]
    below = table["speedup_vs_baseline"] < SPEEDUP_BELOW_MACS * table["mac_ratio"]
    table.loc[below, "flags"] = (table.loc[below, "flags"].fillna("") + ",speedup_below_macs").str.strip(",")
    return table


def failed_steps(summary: Path) -> list[str]:
    """One line per recipe whose steps failed: ``recipe: steps: message``."""
    failed = with_status(summary, "stage_failed").drop_duplicates(["recipe", "error"])
    return [f"{row.recipe}: {row.steps}: {row.error}" for row in failed.itertuples()]


def budgets_missed(summary: Path) -> list[str]:
    """One line per recipe and format outside its quality budget, with both numbers."""
    missed = with_status(summary, BUDGET_MISSED).drop_duplicates(["recipe", "format"])
    return [f"{row.recipe} ({row.format}): {row.error}" for row in missed.itertuples()]


def with_status(summary: Path, status: str) -> pd.DataFrame:
    """The summary's rows of one status (none when nothing was recorded)."""
    table = pd.read_parquet(summary)
    return table[table["status"] == status] if "status" in table else table.iloc[0:0]


def fastest(table: pd.DataFrame) -> pd.DataFrame:
    """Per recipe, format and device, the thread count and option set with the lowest median latency.

    ``speedup_vs_default`` compares it with the fastest thread count under the ``default`` set.
    """
    if "latency_median_ms" not in table:  # nothing was measured
        return pd.DataFrame(columns=FASTEST_COLUMNS)
    measured = device_figures(table)
    measured = measured[measured["status"] != BUDGET_MISSED]
    best = measured.loc[measured.groupby(FASTEST_KEY)["latency_median_ms"].idxmin()]
    default = measured[measured["option_set"] == DEFAULT].groupby(FASTEST_KEY)["latency_median_ms"].min()
    best = best.join(default.rename("default_median_ms"), on=FASTEST_KEY)
    best["speedup_vs_default"] = best["default_median_ms"] / best["latency_median_ms"]
    # Other rows' gaps made these columns float in the full table; every measured row has them.
    best = best.astype({"threads": int, "size_bytes": int})
    return best[FASTEST_COLUMNS].sort_values(FASTEST_KEY).reset_index(drop=True)


def pareto_front(points: pd.DataFrame, x: str, y: str, higher_y_is_better: bool) -> pd.DataFrame:
    """The points that no other point beats on both axes (a lower ``x`` is better), in order of ``x``."""
    ordered = points.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, not higher_y_is_better])
    cost = -ordered[y] if higher_y_is_better else ordered[y]
    return ordered[cost < cost.cummin().shift(fill_value=np.inf)]


def step_deltas(table: pd.DataFrame, read: ReadSidecar = read_sidecar) -> pd.DataFrame:
    """What each step of a recipe bought: size, gzip'd size and accuracy before and after it, and its latency ratio
    (the geometric mean over the devices, option sets and thread counts where both artifacts were measured).

    Recipes that share a prefix share its artifacts, so each step is listed once, under the first recipe whose
    chain has it. The first step of a chain has no delta.
    """
    measured = device_figures(table)
    latency = measured.drop_duplicates(["artifact", "device", "option_set", "threads"]).set_index(
        ["artifact", "device", "option_set", "threads"])["latency_median_ms"]
    timed = {folder: group.droplevel(0) for folder, group in latency.groupby(level=0)}
    seen, out = set(), []
    for recipe, folder in table.dropna(subset=["artifact"])[["recipe", "artifact"]].drop_duplicates().itertuples(
            index=False):
        lineage = read(Path(folder) / SIDECAR).lineage
        for parent, step in zip([None, *lineage], lineage):
            if step.artifact is None:
                raise ArtifactError(f"{folder}/{SIDECAR}: a lineage step does not name its artifact's folder")
            if step.artifact not in seen:
                seen.add(step.artifact)
                out.append(step_row(recipe, parent, step, read, timed))
    return pd.DataFrame(out, columns=["recipe", "step", "format", "size_bytes", "size_ratio", "gzip_ratio", "accuracy",
                                      "accuracy_delta_pt", "latency_ratio", "latency_settings", "artifact"])


def step_row(recipe: str, parent: Step | None, step: Step, read: ReadSidecar, timed: dict) -> dict:
    after = read(Path(step.artifact) / SIDECAR)
    row = {"recipe": recipe, "step": step.describe(), "format": after.format, "artifact": step.artifact,
           "size_bytes": after.size.bytes, "accuracy": after.accuracy["test"] if after.accuracy else None}
    if parent is None:
        return row
    before = read(Path(parent.artifact) / SIDECAR)
    child, parent_timed = timed.get(step.artifact), timed.get(parent.artifact)
    ratios = (child / parent_timed).dropna() if child is not None and parent_timed is not None else ()
    return {**row, "size_ratio": after.size.bytes / before.size.bytes,
            "gzip_ratio": after.size.gzip_bytes / before.size.gzip_bytes,
            "accuracy_delta_pt": 100 * (after.accuracy["test"] - before.accuracy["test"])
            if after.accuracy and before.accuracy else None,
            "latency_ratio": float(np.exp(np.log(ratios).mean())) if len(ratios) else None,
            "latency_settings": len(ratios)}
