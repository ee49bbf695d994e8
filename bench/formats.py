"""Every deployment format of the `baseline` and `int8` recipes, timed side by side on this host.

    python bench/formats.py                       # after `snakemake --profile lab`, or builds what is missing
    python bench/formats.py --min-seconds 1 --rounds 3

Rows (sources are the config's `baseline` Keras model and `int8` full-int8 TFLite model):
  baseline → tflite, onnx, ncnn (pnnx, fp32 weights), mnn (from ONNX, fp32)
  int8     → tflite (int8 kernels)
  mnn w8   → MNN from the fp32 TFLite with `weight_quant_bits: 8`. Only the stored
             weights are int8; in its default session mode MNN dequantises them at load and
             computes in float (its latency matches mnn fp32), so this row is MNN's size
             reduction, not int8 inference. (MNN 3.6.1 imports the full-int8 TFLite
             model with NaN scales, so that route is not offered; see the README.)

Artifacts are reused from results/artifacts when the workflow made them, otherwise built
once with the real stages under --build-dir. Each format × thread count is timed through
slimlab's python runner and local transport; the cells are interleaved (--rounds rounds,
each cell timed for min_seconds / rounds per round, the order rotated each round) so a
drift in the machine's load hits every cell alike. Accuracy is each artifact's own: the
test split run in that format's runtime when the artifact was made.
"""

import argparse
import os
import shlex
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tfmot needs Keras 2; set before TensorFlow loads
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from slimlab.artifacts import SIDECAR, Artifact  # noqa: E402
from slimlab.config import load_yaml, validate  # noqa: E402
from slimlab.lab.devices import device  # noqa: E402
from slimlab.lab.lock import device_lock, lock_dir  # noqa: E402
from slimlab.lab.stats import summarize  # noqa: E402
from slimlab.recipes import build_plan  # noqa: E402
from slimlab.registry import runners, transports  # noqa: E402
from slimlab.stages import run_step  # noqa: E402

THREADS = (1, 2)
RUNTIMES = ["tflite", "onnx", "ncnn", "mnn"]


def plan_rows(config: dict) -> tuple[dict[str, tuple[dict, str | None]], list[tuple[str, str]]]:
    """Every step the table needs (path -> (step, parent path)) and its rows (label, artifact path).

    The workflow's own plan lays them out, so the paths and steps are the ones `snakemake` builds: the
    `baseline` and `int8` recipes in every format, and one more recipe for MNN's weight-only int8.
    """
    recipes = config["recipes"]
    plan = build_plan({**config, "formats": RUNTIMES, "recipes": {
        "baseline": recipes["baseline"], "int8": recipes["int8"],
        "mnn_w8": [*recipes["baseline"], "convert.tflite", {"convert.mnn": {"weight_quant_bits": 8}}],
    }})
    steps = {}
    for chain in plan.recipes.values():
        steps.update({path: (plan.steps[path], parent) for parent, path in zip([None, *chain], chain)})
    deployed = {}
    for item in plan.deployables:
        if item.artifact is not None:
            deployed[item.recipe, item.format] = item.artifact
            if item.artifact not in steps:  # a convert.<format> step appended to the recipe
                steps[item.artifact] = (plan.steps[item.artifact], plan.recipes[item.recipe][-1])
    rows = [
        ("tflite fp32", deployed["baseline", "tflite"]),
        ("onnx fp32", deployed["baseline", "onnx"]),
        ("ncnn fp32", deployed["baseline", "ncnn"]),
        ("mnn fp32", deployed["baseline", "mnn"]),
        ("tflite int8", deployed["int8", "tflite"]),
        ("mnn w8 (weights only)", plan.recipes["mnn_w8"][-1]),
    ]
    return steps, rows


def ensure(path: str, steps: dict, artifacts: Path, build_dir: Path) -> Path:
    """The sidecar of ``path``: the workflow's if it exists, else built (with its parents) under build_dir."""
    for root in (artifacts, build_dir):
        if (root / path / SIDECAR).is_file():
            return root / path / SIDECAR
    step, parent = steps[path]
    parent_sidecar = None if parent is None else ensure(parent, steps, artifacts, build_dir)
    print(f"building {path}", file=sys.stderr)
    return run_step(step, parent_sidecar, build_dir / path / SIDECAR).sidecar


def measure_interleaved(models: list[tuple[str, Artifact]], args) -> dict[tuple[str, int], dict]:
    """Pooled raw latencies per (row, threads), measured round-robin over every cell."""
    localhost = device("localhost", {"transport": "local", "runner": "python", "runtimes": RUNTIMES,
                                     "workdir": args.workdir}, "bench/formats.py")
    transport = transports()["local"](localhost)
    runner = runners()["python"](localhost, transport)
    settings = {"warmup": args.warmup, "runs": max(1, args.runs // args.rounds),
                "min_seconds": args.min_seconds / args.rounds, "max_samples": 10_000_000, "timeout_s": 600,
                "options": {}}
    cells = [(label, artifact, threads) for label, artifact in models for threads in THREADS]
    pooled: dict[tuple[str, int], dict] = {}
    # This host's device lock: a snakemake bench job on this host never runs beside these timings.
    with device_lock(transport.physical_id, lock_dir(), wait_s=3600):
        for round_index in range(args.rounds):
            shift = round_index % len(cells)
            for label, artifact, threads in cells[shift:] + cells[:shift]:
                raw = runner.measure(artifact, threads, settings)
                cell = pooled.setdefault((label, threads), {"latencies_ms": [], "raw": raw})
                cell["latencies_ms"] += raw["latencies_ms"]
    return pooled


def markdown(models: list[tuple[str, Artifact]], pooled: dict) -> str:
    header = ("| format | median ms @1 | median ms @2 | CV @1 | CV @2 | size bytes | test accuracy % "
              "| parity | runtime |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for label, artifact in models:
        stats = {t: summarize(pooled[label, t]["latencies_ms"]) for t in THREADS}
        parity = artifact.info.metrics.get("parity")
        parity_text = "—" if parity is None else (
            f"{'ok' if parity['passed'] else 'FAILED'} ({100 * parity['agreement']:.1f} % agree)")
        lines.append(
            f"| {label} | {stats[1]['median_ms']:.4f} | {stats[2]['median_ms']:.4f} | {stats[1]['cv']:.2f} "
            f"| {stats[2]['cv']:.2f} | {artifact.info.size.bytes:,} | {100 * artifact.info.accuracy['test']:.1f} "
            f"| {parity_text} | {pooled[label, 1]['raw']['runtime']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--artifacts", type=Path, default=Path("results/artifacts"), help="the workflow's artifacts")
    parser.add_argument("--build-dir", type=Path, default=Path("results/formats-bench/artifacts"),
                        help="where missing artifacts are built")
    parser.add_argument("--workdir", default="results/formats-bench/device", help="the local device's work dir")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="timed seconds per cell, over all rounds")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per cell at least, over all rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()

    config = load_yaml(args.config, "config")
    validate(config, "config.schema.yaml", args.config)
    steps, rows = plan_rows(config)
    models = [(label, Artifact.load(ensure(path, steps, args.artifacts, args.build_dir))) for label, path in rows]
    pooled = measure_interleaved(models, args)
    any_raw = next(iter(pooled.values()))["raw"]
    print(f"`{shlex.join(['python', *sys.argv])}` on {any_raw['cpu']} ({os.cpu_count()} logical CPUs), "
          f"batch 1, {config['dataset']['name']} test split for accuracy\n")
    print(markdown(models, pooled))


if __name__ == "__main__":
    main()
