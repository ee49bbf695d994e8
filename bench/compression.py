"""Run every recipe of the config and print the compression table, with the issue's targets.

    python bench/compression.py                                  # snakemake --profile lab (the real numbers)
    python bench/compression.py --workflow-profile profiles/ci   # tiny epochs: checks the script, not the targets
    python bench/compression.py -- --config 'formats=[tflite]'   # anything after -- goes to snakemake
    python bench/compression.py --no-run                         # only re-read results/report

Every row is measured in one run on one device, so the ratios compare like with like.
Sizes are the deployed file (what ships) and its gzip'd size (the tfmot tutorials' yardstick).
"""

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path

import pandas as pd

from slimlab.artifacts import SIDECAR, Artifact, read_sidecar
from slimlab.errors import ArtifactError
from slimlab.option_sets import DEFAULT
from slimlab.records import Sidecar


def lineage_dirs(artifact_dir: str) -> list[Path]:
    """An artifact's folder and those of every step above it, nearest first, as its sidecar's lineage names them."""
    info = read_sidecar(Path(artifact_dir) / SIDECAR)
    folders = [step.artifact for step in reversed(info.lineage)]
    if None in folders:
        raise ArtifactError(f"{artifact_dir}/{SIDECAR}: a lineage step does not name its artifact's folder")
    return [Path(folder) for folder in folders]


def sidecar_chain(artifact_dir: str) -> list[Sidecar]:
    return [read_sidecar(folder / SIDECAR) for folder in lineage_dirs(artifact_dir)]


def step_metric(artifact_dir: str, key: str):
    """A stage metric recorded anywhere in the artifact's lineage (e.g. cluster's codebook sizes)."""
    return next((info.metrics[key] for info in sidecar_chain(artifact_dir) if key in info.metrics), None)


def dense_params(artifact_dir: str) -> int:
    """Parameters in Dense layers of the nearest Keras ancestor."""
    from slimlab.kit.training import keras

    for folder in lineage_dirs(artifact_dir):
        if read_sidecar(folder / SIDECAR).format == "keras":
            model = Artifact.load(folder / SIDECAR).model
            return sum(layer.count_params() for layer in model.layers if isinstance(layer, keras().layers.Dense))
    raise ArtifactError(f"{artifact_dir}: no Keras model in its lineage")


def compression_table(summary: pd.DataFrame) -> pd.DataFrame:
    # What compression buys under the runtime's default options; fastest.csv has the option sweep.
    rows = summary[(summary["status"] == "ok") & (summary["format"] == "tflite") & (summary["option_set"] == DEFAULT)]
    rows = rows[rows["threads"] == rows["threads"].min()]
    rows = rows.drop_duplicates("recipe").set_index("recipe")
    fp32, int8 = rows.loc["baseline"], rows.loc["int8"]
    table = pd.DataFrame({
        "deployed bytes": rows["size_bytes"],
        "gzip bytes": rows["gzip_bytes"],
        "gzip × smaller": fp32["gzip_bytes"] / rows["gzip_bytes"],
        "params": rows["params"],
        "params × fewer (vs int8)": int8["params"] / rows["params"],
        "zero fraction": rows["zero_fraction"],
        "accuracy %": 100 * rows["accuracy"],
        "drop pt": 100 * (fp32["accuracy"] - rows["accuracy"]),
        "median ms": rows["latency_median_ms"],
        "speed-up (vs int8)": int8["latency_median_ms"] / rows["latency_median_ms"],
        "huffman bytes": [(step_metric(a, "clustering") or {}).get("huffman_bytes") for a in rows["artifact"]],
    })
    return table


TARGETS = {
    "pruned_int8": ("≥12× gzip, ≤0.5 pt", lambda r, t: r["gzip × smaller"] >= 12 and r["drop pt"] <= 0.5),
    "pruned_clustered_int8": ("≥25× gzip, ≤1.0 pt", lambda r, t: r["gzip × smaller"] >= 25 and r["drop pt"] <= 1.0),
    "structured_int8": ("≥2× fewer params, ≥1.5× faster, ≤1.0 pt",
                        lambda r, t: r["params × fewer (vs int8)"] >= 2 and r["speed-up (vs int8)"] >= 1.5 and r["drop pt"] <= 1.0),
    "distilled": ("≥98% of teacher, beats student_scratch",
                  lambda r, t: r["accuracy %"] >= 0.98 * t.loc["baseline", "accuracy %"]
                  and r["accuracy %"] > t.loc["student_scratch", "accuracy %"]),
    "lowrank_int8": ("≥4× fewer dense params, ≤1.0 pt",
                     lambda r, t: r["dense params × fewer"] >= 4 and r["drop pt"] <= 1.0),
}


def with_targets(table: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    artifacts = summary.dropna(subset=["artifact"]).drop_duplicates("recipe").set_index("recipe")["artifact"]
    table["dense params × fewer"] = dense_params(artifacts["baseline"]) / pd.Series(
        {recipe: dense_params(artifacts[recipe]) for recipe in table.index})
    table["target"] = [TARGETS.get(recipe, ("", None))[0] for recipe in table.index]
    table["met"] = [
        ("yes" if TARGETS[recipe][1](row, table) else "no") if recipe in TARGETS else ""
        for recipe, row in table.iterrows()
    ]
    return table


def machine() -> str:
    from slimlab_payload.context import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflow-profile", help="e.g. profiles/ci; default: --profile lab")
    parser.add_argument("--no-run", action="store_true", help="only read results/report/summary.parquet")
    parser.add_argument("--directory", default=".", help="the workflow checkout to run in")
    parser.add_argument("snakemake_args", nargs="*", help="passed on to snakemake, e.g. --config formats=[tflite]")
    args = parser.parse_args()
    root = Path(args.directory)
    if not args.no_run:
        profile = ["--workflow-profile", args.workflow_profile] if args.workflow_profile else ["--profile", "lab"]
        done = subprocess.run([sys.executable, "-m", "snakemake", *profile, *args.snakemake_args], cwd=root)
        if done.returncode != 0:
            print("bench: snakemake failed; the table below covers what finished", file=sys.stderr)
    os.chdir(root)  # the summary's artifact paths are relative to the checkout
    summary = pd.read_parquet("results/report/summary.parquet")
    table = with_targets(compression_table(summary), summary)
    print(f"Machine: {machine()}\n")
    print(table.to_markdown(floatfmt=".3g"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
