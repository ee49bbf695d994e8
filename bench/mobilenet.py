"""Structured pruning of MobileNetV2 (issue 11): run config/mobilenet.yaml, print its table and the issue's targets.

    python bench/mobilenet.py             # runs the experiment first (the command below), then prints
    python bench/mobilenet.py --no-run    # only reads the last run's results/report/deployables.json

Every number comes from the run's typed sidecars and bench records (slimlab.report.rows): one
snakemake run times every artifact on this host, one after another, at 1 thread. The MAC ratio and
speed-up are against the unpruned int8 model; the accuracy drop is against it too (and against the
fp32 baseline in its own column).
"""

import argparse
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd

from slimlab.config import load_yaml
from slimlab.option_sets import DEFAULT
from slimlab.report import read_deployables, rows

CONFIG = "config/mobilenet.yaml"
COMMAND = ["snakemake", "--profile", "lab", "--configfile", CONFIG, "--replace-workflow-config"]
REFERENCE = "int8"    # the unpruned int8 model every speed-up is measured against
FP32 = "baseline"
CV_TARGET = 0.05


def measured(deployables: list[dict]) -> pd.DataFrame:
    """One row per recipe × format: the default option set at 1 thread."""
    table = rows(deployables)
    ok = table[(table["status"] == "ok") & (table["threads"] == 1) & (table["option_set"] == DEFAULT)]
    return ok.set_index(["format", "recipe"])


def with_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """MAC ratio, speed-up and their quotient against the int8 model; accuracy drops in points."""
    reference, fp32 = table.loc[("tflite", REFERENCE)], table.loc[("tflite", FP32)]
    out = pd.DataFrame({
        "steps": table["steps"],
        "MMACs": table["macs"] / 1e6,
        "MAC ratio": reference["macs"] / table["macs"],
        "median ms": table["latency_median_ms"],
        "speed-up": reference["latency_median_ms"] / table["latency_median_ms"],
        "CV %": 100 * table["latency_cv"],
        "accuracy %": 100 * table["accuracy"],
        "drop pt (vs int8)": 100 * (reference["accuracy"] - table["accuracy"]),
        "drop pt (vs fp32)": 100 * (fp32["accuracy"] - table["accuracy"]),
        "flags": table["flags"],
    })
    out["speed-up / MAC ratio"] = out["speed-up"] / out["MAC ratio"]
    return out


def targets(table: pd.DataFrame) -> pd.DataFrame:
    """The issue's targets, per structured recipe (TFLite int8, 1 thread) and per fp32 record."""
    found = []
    tflite = table.loc["tflite"]
    for recipe, row in tflite[tflite.index.str.startswith("structured")].iterrows():
        removed = 1 - 1 / row["MAC ratio"]
        if removed >= 0.4:
            found.append((recipe, "≥ 1.5× faster than int8, ≤ 1.0 pt drop (≥ 40 % MACs removed)",
                          f"{row['speed-up']:.2f}×, {row['drop pt (vs int8)']:.1f} pt ({removed:.0%} removed)",
                          row["speed-up"] >= 1.5 and row["drop pt (vs int8)"] <= 1.0))
        found.append((recipe, "speed-up ≥ 0.75 × MAC ratio",
                      f"{row['speed-up']:.2f}× / {row['MAC ratio']:.2f} = {row['speed-up / MAC ratio']:.2f}",
                      row["speed-up / MAC ratio"] >= 0.75))
    for fmt, row in table.xs(FP32, level="recipe").iterrows():
        found.append((f"{FP32} ({fmt}, fp32)", "per-record latency CV ≤ 5 %", f"{row['CV %']:.1f} %",
                      row["CV %"] <= 100 * CV_TARGET))
    return pd.DataFrame(found, columns=["recipe", "target", "measured", "met"]).replace({True: "yes", False: "no"})


def machine() -> str:
    from slimlab_payload.context import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-run", action="store_true", help="only read results/report/deployables.json")
    parser.add_argument("--directory", default=".", help="the workflow checkout to run in")
    args = parser.parse_args()
    os.chdir(args.directory)  # the deployables' sidecar paths are relative to the checkout
    if not args.no_run and subprocess.run([sys.executable, "-m", *COMMAND]).returncode != 0:
        print("bench: snakemake failed; the table below covers what finished", file=sys.stderr)
    deployables = read_deployables(Path("results/report/deployables.json"))
    recipes = set(load_yaml(CONFIG, "config")["recipes"])
    if {item["recipe"] for item in deployables} != recipes:
        print(f"bench: results/report is not from {CONFIG}; run without --no-run", file=sys.stderr)
        return 1
    table = with_ratios(measured(deployables))
    print(f"Machine: {machine()}\n\nReproduce: `{shlex.join(COMMAND)}` (or `python bench/mobilenet.py`)\n")
    for fmt, part in table.groupby(level="format", sort=False):
        print(f"### {fmt}, 1 thread\n")
        print(part.droplevel("format").to_markdown(floatfmt=".3g") + "\n")
    print(targets(table).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
