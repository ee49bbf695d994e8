"""Structured pruning of MobileNetV2 (issue 11): run config/mobilenet.yaml, print its tables and the issue's targets.

    python bench/mobilenet.py             # runs the experiment first (the command below), then prints
    python bench/mobilenet.py --no-run    # only reads the last run's results/report/deployables.json

Every number comes from the run's typed sidecars and bench records (slimlab.report, slimlab.records):
one snakemake run times every artifact on this host at 1 thread, one record after another. MAC
ratios, speed-ups and accuracy drops are against the unpruned int8 model (the drop against the
fp32 baseline has its own column). While snakemake runs, the host's load average is sampled, so
the CVs can be read against it.
"""

import argparse
import os
import platform
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from slimlab.artifacts import SIDECAR, read_sidecar
from slimlab.config import load_yaml
from slimlab.option_sets import DEFAULT
from slimlab.records import BenchRecord, load
from slimlab.report import read_deployables, rows

CONFIG = "config/mobilenet.yaml"
COMMAND = ["snakemake", "--profile", "lab", "--configfile", CONFIG, "--replace-workflow-config"]
REFERENCE, FP32 = "int8", "baseline"   # speed-ups are against the unpruned int8 model
CV_TARGET = 5.0  # %


def measured(deployables: list[dict]) -> pd.DataFrame:
    """One row per format × recipe: the default option set at 1 thread."""
    table = rows(deployables)
    ok = table[(table["status"] == "ok") & (table["threads"] == 1) & (table["option_set"] == DEFAULT)]
    return ok.set_index(["format", "recipe"])


def tflite_table(table: pd.DataFrame) -> pd.DataFrame:
    tflite = table.loc["tflite"]
    reference, fp32 = tflite.loc[REFERENCE], tflite.loc[FP32]
    out = pd.DataFrame({
        "MMACs": tflite["macs"] / 1e6,
        "MAC ratio": reference["macs"] / tflite["macs"],
        "median ms": tflite["latency_median_ms"],
        "speed-up": reference["latency_median_ms"] / tflite["latency_median_ms"],
        "CV %": 100 * tflite["latency_cv"],
        "accuracy %": 100 * tflite["accuracy"],
        "drop pt vs int8": 100 * (reference["accuracy"] - tflite["accuracy"]),
        "drop pt vs fp32": 100 * (fp32["accuracy"] - tflite["accuracy"]),
        "size bytes": tflite["size_bytes"],
    })
    out.insert(4, "speed-up / MAC ratio", out["speed-up"] / out["MAC ratio"])
    return out


def other_formats(table: pd.DataFrame) -> pd.DataFrame:
    """The float models in every format: each pruned one's speed-up over the baseline in its own runtime."""
    found = []
    for (fmt, recipe), row in table.iterrows():
        if fmt == "tflite" or (fmt, FP32) not in table.index:
            continue
        base = table.loc[(fmt, FP32)]
        found.append({"format": fmt, "recipe": recipe, "median ms": row["latency_median_ms"],
                      "speed-up vs its baseline": base["latency_median_ms"] / row["latency_median_ms"],
                      "CV %": 100 * row["latency_cv"], "accuracy %": 100 * row["accuracy"]})
    return pd.DataFrame(found)


def noise(deployables: list[dict]) -> pd.DataFrame:
    """Each fp32 baseline record's CV, and the CV of its fastest 95 %: how much the slowest 5 % add."""
    found = []
    for item in deployables:
        if item["recipe"] != FP32:
            continue
        for path in item.get("records", []):
            if not Path(path).is_file():
                continue
            record = load(BenchRecord, path, "bench record")
            if record.threads != 1 or record.option_set != DEFAULT:
                continue
            latencies = np.asarray(record.latencies_ms)
            fastest = latencies[latencies <= np.percentile(latencies, 95)]
            found.append({"format": record.format, "runs": len(latencies), "median ms": np.median(latencies),
                          "CV %": 100 * record.latency.cv, "CV % of fastest 95 %": 100 * fastest.std() / fastest.mean(),
                          "p95 / median": np.percentile(latencies, 95) / np.median(latencies),
                          "max / median": latencies.max() / np.median(latencies), "flags": ",".join(record.flags)})
    return pd.DataFrame(found)


def targets(tflite: pd.DataFrame, fp32_noise: pd.DataFrame) -> pd.DataFrame:
    """The issue's targets: per structured recipe (TFLite int8, 1 thread), and per fp32 record."""
    found = []
    for recipe, row in tflite[tflite.index.str.startswith("structured") & tflite.index.str.endswith("int8")].iterrows():
        removed = 1 - 1 / row["MAC ratio"]
        if removed >= 0.4:
            found.append((recipe, f"≥ 40 % MACs removed ({removed:.0%}): ≥ 1.5× faster than int8, ≤ 1.0 pt drop",
                          f"{row['speed-up']:.2f}×, {row['drop pt vs int8']:+.1f} pt",
                          row["speed-up"] >= 1.5 and row["drop pt vs int8"] <= 1.0))
        found.append((recipe, "speed-up ≥ 0.75 × MAC ratio",
                      f"{row['speed-up']:.2f} / {row['MAC ratio']:.2f} = {row['speed-up / MAC ratio']:.2f}",
                      row["speed-up / MAC ratio"] >= 0.75))
    for _, row in fp32_noise.iterrows():
        found.append((f"{FP32} ({row['format']})", "latency CV ≤ 5 % (fp32, per record)", f"{row['CV %']:.1f} %",
                      row["CV %"] <= CV_TARGET))
    return pd.DataFrame(found, columns=["recipe", "target", "measured", "met"]).replace({True: "yes", False: "no"})


def step_seconds(deployables: list[dict], recipe: str) -> list[str]:
    """``stage: seconds`` of the work of every step of a recipe's TFLite artifact, from its lineage's sidecars."""
    item = next(item for item in deployables if item["recipe"] == recipe and item["format"] == "tflite")
    steps = read_sidecar(Path(item["sidecar"])).lineage
    timings = [(read_sidecar(Path(step.artifact) / SIDECAR).timing or {}).get("work_s") for step in steps]
    return [f"{step.stage} {seconds:.0f} s" for step, seconds in zip(steps, timings) if seconds is not None]


def run_sampling_load() -> list[float]:
    """Run the experiment; the 1-minute load average every 10 s while it runs."""
    samples, done = [], threading.Event()

    def sample():
        while not done.wait(10):
            samples.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if subprocess.run([sys.executable, "-m", *COMMAND]).returncode != 0:
        print("bench: snakemake failed; the tables below cover what finished", file=sys.stderr)
    done.set()
    return samples


def machine() -> str:
    from slimlab_payload.context import cpu_model

    return (f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-run", action="store_true", help="only read results/report/deployables.json")
    parser.add_argument("--directory", default=".", help="the workflow checkout to run in")
    args = parser.parse_args()
    os.chdir(args.directory)  # the deployables' sidecar and record paths are relative to the checkout
    load_samples = [] if args.no_run else run_sampling_load()
    deployables = read_deployables(Path("results/report/deployables.json"))
    if {item["recipe"] for item in deployables} != set(load_yaml(CONFIG, "config")["recipes"]):
        print(f"bench: results/report is not from {CONFIG}; run without --no-run", file=sys.stderr)
        return 1
    table = measured(deployables)
    tflite, fp32_noise = tflite_table(table), noise(deployables)
    print(f"Machine: {machine()}\n\nReproduce: `{shlex.join(COMMAND)}`, then `python bench/mobilenet.py --no-run`")
    if load_samples:
        print(f"(1-minute load average during the run: median {np.median(load_samples):.1f}, "
              f"max {max(load_samples):.1f}, on {os.cpu_count()} cores)")
    for recipe in (FP32, "structured50_int8"):
        print(f"{recipe}: {', '.join(step_seconds(deployables, recipe))} (each step's work, on this host)")
    print("\n### TFLite, 1 thread (speed-ups and MAC ratios against the unpruned int8 model)\n")
    print(tflite.to_markdown(floatfmt=".3g"))
    print("\n### Float models in every format, 1 thread\n")
    print(other_formats(table).to_markdown(index=False, floatfmt=".3g"))
    print("\n### Latency noise of the fp32 baseline records\n")
    print(fp32_noise.to_markdown(index=False, floatfmt=".3g"))
    print("\n### The issue's targets\n")
    print(targets(tflite, fp32_noise).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
