"""Run the transformer track (config/transformer.yaml) and print its tables, with issue 13's targets.

    python bench/transformer.py               # the seed study (seeds 43, 44), then the full seed-42 run
    python bench/transformer.py --no-run      # only re-read what earlier runs left
    python bench/transformer.py --seeds 42    # the full run alone: no run-to-run spread

The full run is `snakemake --profile lab --configfile config/transformer.yaml --replace-workflow-config`.
The seed study runs the recipes of SEED_STUDY again with dataset.seed 43 and 44 (another split
and other initial weights), from a copy of the config with only those recipes, in TFLite, timed
as usual. Each run's list of deployables is kept as results/transformer/deployables-seed-<n>.json;
results/report is the last run's, the full one. Every fact comes from the typed sidecars and
records those lists name.
"""

import argparse
import csv
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd
import yaml

from compression import machine
from slimlab.artifacts import SIDECAR, Artifact, read_sidecar
from slimlab.config import load_yaml
from slimlab.kit import transformer
from slimlab.records import BenchRecord, Sidecar, load
from slimlab.report import read_deployables

CONFIG = Path("config/transformer.yaml")
KEPT = Path("results/transformer")
SEED_STUDY = ("baseline", "student_hard", "tinybert")
TEACHER, PRUNED, STUDENT, HARD, ALBERT = "baseline", "heads_pruned", "tinybert", "student_hard", "albert"
TABLE7 = ("tinybert", "tinybert_top", "tinybert_bottom")
TABLE6 = ("tinybert", "tinybert_no_embedding", "tinybert_no_attention", "tinybert_no_hidden", "tinybert_no_prediction")


@dataclass
class Deployable:
    """One recipe in one format: its sidecar, its bench record, and its nearest Keras ancestor."""

    recipe: str
    format: str
    info: Sidecar
    records: list[str]

    @cached_property
    def keras(self) -> Artifact:
        folder = next(Path(step.artifact) for step in reversed(self.info.lineage)
                      if read_sidecar(Path(step.artifact) / SIDECAR).format == "keras")
        return Artifact.load(folder / SIDECAR)

    @property
    def accuracy(self) -> float:
        return 100 * self.info.accuracy["test"]

    @property
    def latency_ms(self) -> float | None:
        found = [load(BenchRecord, path, "bench record") for path in self.records if Path(path).is_file()]
        ok = [record.latency.median_ms for record in found if record.status == "ok" and record.threads == 1]
        return ok[0] if ok else None

    @property
    def macs(self) -> int | None:
        """The Keras model's count (Dense and Conv kernels) plus the attention products it leaves out.

        Not the TFLite file's count: its Dense layers on token sequences keep a free batch
        dimension, so their tensors' static shapes do not hold the sizes.
        """
        counted = self.keras.info.macs
        return counted["total"] + transformer.attention_macs(self.keras.model) if counted else None


def deployables(path: Path) -> dict[tuple[str, str], Deployable]:
    found = {}
    for item in read_deployables(path):
        if item.get("sidecar") and (info := read_sidecar(item["sidecar"])).status == "ok":
            found[item["recipe"], item["format"]] = Deployable(item["recipe"], item["format"], info, item["records"])
    return found


def run(seed: int, base: dict) -> None:
    """One snakemake run; the seed-study runs use a copy of the config with only SEED_STUDY, in TFLite."""
    KEPT.mkdir(parents=True, exist_ok=True)
    configfile = CONFIG
    if seed != base["dataset"]["seed"]:
        derived = {**base, "dataset": {**base["dataset"], "seed": seed}, "formats": ["tflite"],
                   "recipes": {name: base["recipes"][name] for name in SEED_STUDY}}
        configfile = KEPT / f"config-seed-{seed}.yaml"
        configfile.write_text(yaml.safe_dump(derived, sort_keys=False))
    command = ["snakemake", "--profile", "lab", "--configfile", str(configfile), "--replace-workflow-config"]
    if subprocess.run([sys.executable, "-m", *command]).returncode != 0:
        print(f"bench: snakemake failed for seed {seed}; the tables cover what finished", file=sys.stderr)
    if Path("results/report/deployables.json").is_file():
        shutil.copyfile("results/report/deployables.json", KEPT / f"deployables-seed-{seed}.json")


def models_table(found: dict) -> pd.DataFrame:
    teacher = found[TEACHER, "tflite"]
    rows = {}
    for (recipe, fmt), item in found.items():
        if fmt != "tflite":
            continue
        model = item.keras.model
        rows[recipe] = {
            "blocks": transformer.depth(model),
            "heads": sum(map(len, transformer.heads(model).values())),
            "params (Keras)": model.count_params(),
            "params × teacher": model.count_params() / teacher.keras.model.count_params(),
            "MACs": item.macs,
            "accuracy %": item.accuracy,
            "% of teacher": 100 * item.accuracy / teacher.accuracy,
            "median ms (1 thread)": item.latency_ms,
            "speed-up": teacher.latency_ms / item.latency_ms if item.latency_ms else None,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def formats_table(found: dict) -> pd.DataFrame:
    """Test accuracy in each runtime, and whether the conversion kept parity with the Keras model."""
    cells = {}
    for (recipe, fmt), item in found.items():
        parity = item.info.metrics.get("parity", {})
        cells.setdefault(recipe, {})[fmt] = f"{item.accuracy:.1f}" + ("" if parity.get("passed") else " (parity failed)")
    return pd.DataFrame.from_dict(cells, orient="index")


def sixteen_heads(found: dict) -> tuple[pd.DataFrame, Sidecar]:
    """The paper's experiment as heads.csv holds it: per layer, accuracy with one head removed and with the best alone."""
    pruned = found[PRUNED, "tflite"].keras
    rows = list(csv.DictReader((pruned.dir / pruned.info.metrics["report"]).open()))
    table = {}
    for block in sorted({int(row["block"]) for row in rows}):
        mine = [row for row in rows if int(row["block"]) == block]
        without = [100 * float(row["test_accuracy_without"]) for row in mine]
        table[f"block {block + 1}"] = {
            "one head removed: min %": min(without), "max %": max(without),
            "best head alone %": 100 * max(float(row["test_accuracy_alone_in_layer"]) for row in mine),
            "heads left": len(pruned.info.metrics["heads_left"][f"block{block}"]),
        }
    return pd.DataFrame.from_dict(table, orient="index"), pruned.info


def seeds_table(runs: dict[int, dict]) -> pd.DataFrame:
    table = pd.DataFrame({seed: {recipe: found[recipe, "tflite"].accuracy for recipe in SEED_STUDY
                                 if (recipe, "tflite") in found} for seed, found in runs.items()})
    spread = table.max(axis=1) - table.min(axis=1)
    return table.assign(mean=table.mean(axis=1), spread=spread, std=table.std(axis=1, ddof=1))


def targets(found: dict, seeds: pd.DataFrame, runs: int) -> pd.DataFrame:
    teacher, pruned, student, albert = (found[r, "tflite"] for r in (TEACHER, PRUNED, STUDENT, ALBERT))
    metrics = pruned.keras.info.metrics
    removed = 1 - metrics["heads_after"] / metrics["heads_before"]
    drop = teacher.accuracy - pruned.accuracy
    speedup = teacher.latency_ms / pruned.latency_ms
    mac_ratio = teacher.macs / pruned.macs if teacher.macs and pruned.macs else float("nan")
    t_model, s_model = teacher.keras.model, student.keras.model
    layers = transformer.depth(s_model) / transformer.depth(t_model)
    params = s_model.count_params() / t_model.count_params()
    share = 100 * student.accuracy / teacher.accuracy
    found_rows = [
        ("heads: ≥ 50 % removed at ≤ 1.0 pt drop", f"{removed:.0%} removed, {drop:.1f} pt drop",
         removed >= 0.5 and drop <= 1.0),
        ("heads: TFLite latency, teacher → pruned",
         f"{teacher.latency_ms * 1000:.0f} → {pruned.latency_ms * 1000:.0f} µs ({speedup:.2f}×)", None),
        ("heads: speed-up follows the removed MACs", f"{speedup:.2f}× for {mac_ratio:.2f}× fewer MACs", None),
        ("student: ≤ 1/4 of the layers and params", f"{layers:.2f} of the layers, {params:.3f} of the params",
         layers <= 0.25 and params <= 0.25),
        ("student: ≥ 96 % of the teacher's accuracy", f"{share:.1f} % ({student.accuracy:.1f} vs {teacher.accuracy:.1f})",
         share >= 96),
    ]
    if {STUDENT, HARD} <= set(seeds.index) and runs >= 3:
        gain = seeds.loc[STUDENT, "mean"] - seeds.loc[HARD, "mean"]
        spread = max(seeds.loc[STUDENT, "spread"], seeds.loc[HARD, "spread"])
        found_rows.append(("student: beats hard labels by more than the spread",
                           f"+{gain:.1f} pt (means over {runs} seeds), spread ≤ {spread:.1f} pt",
                           gain > spread))
    ratio = albert.keras.model.count_params() / t_model.count_params()
    found_rows.append(("ALBERT sharing + factorized embedding: params vs unshared",
                       f"{ratio:.3f} ({1 / ratio:.1f}× fewer), {albert.accuracy:.1f} % vs {teacher.accuracy:.1f} %", None))
    return pd.DataFrame(found_rows, columns=["target", "measured", "met"]).replace({True: "yes", False: "no", None: ""})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-run", action="store_true", help="only read results/transformer/deployables-seed-*.json")
    parser.add_argument("--seeds", type=int, nargs="+", default=[43, 44, 42], help="dataset seeds; the config's runs last")
    parser.add_argument("--directory", default=".", help="the workflow checkout to run in")
    args = parser.parse_args()
    os.chdir(args.directory)  # the deployables' sidecar paths are relative to the checkout
    base = load_yaml(CONFIG, "config")
    seeds = sorted(args.seeds, key=lambda seed: seed == base["dataset"]["seed"])
    if not args.no_run:
        for seed in seeds:
            run(seed, base)
    runs = {seed: deployables(KEPT / f"deployables-seed-{seed}.json") for seed in seeds
            if (KEPT / f"deployables-seed-{seed}.json").is_file()}
    found = runs[base["dataset"]["seed"]]
    print(f"Machine: {machine()}\n")
    models = models_table(found)
    print("### Every recipe, TFLite on localhost\n")
    print(models.to_markdown(floatfmt=".3g") + "\n")
    print("### Test accuracy % in each format's own runtime\n")
    print(formats_table(found).to_markdown() + "\n")
    heads, pruned = sixteen_heads(found)
    print(f"### Sixteen Heads (teacher {100 * pruned.metrics['test_accuracy_before']:.1f} %, heads.csv of {PRUNED})\n")
    print(heads.to_markdown(floatfmt=".1f") + "\n")
    table = seeds_table(runs)
    print("### Seeds (TFLite test accuracy %)\n")
    print(table.to_markdown(floatfmt=".1f") + "\n")
    print("### TinyBERT's Table 7 and Table 6 shapes (test accuracy %)\n")
    print(models.loc[[r for r in (*TABLE7, *TABLE6[1:]) if r in models.index], ["accuracy %", "% of teacher"]]
          .to_markdown(floatfmt=".1f") + "\n")
    print(targets(found, table, len(runs)).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
