"""The report at scale (issue 12's target: 10,000 records in under 10 s).

    python bench/report.py                  # 10,000 records, timed in this process and through the CLI
    python bench/report.py --records 2000 --keep /tmp/report-bench

Synthesises typed sidecars (a shared train step, one compress step per recipe, a
conversion per format) and bench records (200 latencies each, memory, energy on
the phones, a few failure notes and unsupported formats) in a temporary folder,
then times ``slimlab.report.write`` on them (wall and CPU time: on a shared
machine the CPU time is the steadier figure) and ``slimlab report build`` as the
workflow runs it. Prints one markdown table row.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from slimlab import report
from slimlab.lab.stats import summarize
from slimlab.records import (BenchFailure, BenchRecord, Energy, Latency, Options, ParamCount, Sidecar, Size, Step,
                             failure_note_path)

DEVICES = {"board-a": 1.0, "board-b": 1.6, "phone-a": 0.7, "phone-b": 1.2}  # relative speed
THREADS = [1, 2, 3, 4]
# Each format's base latency (ms) and the option set swept beside `default`.
FORMATS = {"tflite": (1.0, "no-xnnpack"), "ncnn": (0.8, "ncnn-fp32"), "mnn": (0.9, "mnn-low")}
RUNS = 200
DATASET = {"name": "synthetic", "seed": 0, "val_fraction": 0.1, "test_fraction": 0.2}
SETTINGS = {"warmup": 20, "runs": RUNS, "min_seconds": 1.0, "max_samples": 100_000, "timeout_s": 600, "noisy_cv": 0.1}


def sidecar(folder: Path, fmt: str, lineage: list[Step], size: int, macs: int, accuracy: float) -> None:
    Sidecar(format=fmt, lineage=lineage, dataset=DATASET, input_shape=[1, 28, 28, 1],
            size=Size(bytes=size, gzip_bytes=int(size * 0.8)), params=ParamCount(count=size // 4, nonzero=size // 5),
            zero_fraction=0.2, macs={"total": macs}, accuracy={"val": accuracy, "test": accuracy},
            metrics={"parity": {"agreement": 1.0, "max_abs_diff_rel": 1e-6, "passed": True}}
            if fmt != "keras" else {}).save(folder / "artifact.json")


def step(stage: str, folder: Path, **params) -> Step:
    return Step(stage=stage, params=params, changed=params, artifact=str(folder))


def record(rng, path: Path, folder: Path, fmt: str, device: str, option_set: str, threads: int, mean_ms: float):
    target = dict(device=device, transport="ssh", runner="python", host="bench", artifact=str(folder), format=fmt,
                  option_set=option_set, threads=threads, settings=SETTINGS)
    if rng.random() < 0.01:  # a board that dropped off mid-run
        BenchFailure(**target, tag="offline", reason=f"device {device!r} is unreachable").save(failure_note_path(path))
        return
    latencies = (mean_ms * rng.lognormal(0, rng.choice([0.03, 0.2]), RUNS)).tolist()
    latency = Latency(**summarize(latencies))
    phone = device.startswith("phone")
    energy = Energy(probe="android_battery", joules_per_inference=mean_ms * 2e-3, avg_power_w=2.1, idle_power_w=0.4,
                    window_s=1.0, inferences=RUNS, samples=10) if phone else \
        Energy(probe="none", reason="no energy probe is configured for this device")
    memory = {"peak_rss_kib": int(50_000 + mean_ms * 1000), "load_growth_kib": int(mean_ms * 800),
              **({"runtime_mb": mean_ms} if fmt == "mnn" else {})}
    BenchRecord(**target, runtime=f"{fmt} 1.0", options=Options(requested={}, reported={"threads": threads},
                                                                  honoured=[]),
                init_ms=5.0, first_inference_ms=mean_ms * 3, latency=latency, latencies_ms=latencies,
                flags=["noisy"] if latency.cv > SETTINGS["noisy_cv"] else [], energy=energy, memory=memory).save(path)


def synthesise(root: Path, records: int) -> list[dict]:
    """``records`` bench records (or their failure notes) over as many recipes as it takes, and their deployables."""
    rng = np.random.default_rng(0)
    deployables, made, recipe = [], 0, 0
    while made < records:
        train_dir = root / f"train-{recipe // 8}"
        train = step("train", train_dir, width=8 + recipe // 8)
        if not (train_dir / "artifact.json").exists():
            train_dir.mkdir(parents=True)
            sidecar(train_dir, "keras", [train], 400_000, 2_000_000, 0.96)
        fraction = float(rng.uniform(0.1, 0.9))
        pruned_dir = train_dir / f"prune-{recipe}"
        pruned_dir.mkdir()
        pruned = step("prune.structured", pruned_dir, fraction=round(fraction, 3))
        sidecar(pruned_dir, "keras", [train, pruned], int(400_000 * (1 - fraction)), int(2e6 * (1 - fraction)),
                0.96 - fraction * 0.02)
        name = "baseline" if recipe == 0 else f"recipe_{recipe:03d}"
        for fmt, (base_ms, option_set) in FORMATS.items():
            if recipe % 25 == 24 and fmt == "ncnn":
                deployables.append({"recipe": name, "format": fmt, "unsupported": "convert.ncnn does not take it"})
                continue
            folder = pruned_dir / f"convert.{fmt}"
            folder.mkdir()
            sidecar(folder, fmt, [train, pruned, step(f"convert.{fmt}", folder)], int(400_000 * (1 - fraction)),
                    int(2e6 * (1 - fraction)), 0.96 - fraction * 0.02)
            paths = []
            for device, speed in DEVICES.items():
                for option in ("default", option_set):
                    for threads in THREADS:
                        if made == records:
                            break
                        path = root / "bench" / device / folder.relative_to(root) / option / f"threads-{threads}.json"
                        path.parent.mkdir(parents=True, exist_ok=True)
                        slower = 1.3 if option != "default" else 1
                        record(rng, path, folder, fmt, device, option, threads,
                               base_ms * speed * (1 - 0.6 * fraction) / threads ** 0.5 * slower)
                        paths.append(str(path))
                        made += 1
            deployables.append({"recipe": name, "format": fmt, "sidecar": str(folder / "artifact.json"),
                                "records": paths})
        recipe += 1
    return deployables


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="synthesise here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="slimlab-report-bench-") as tmp:
        root = args.keep or Path(tmp)
        began = time.perf_counter()
        deployables = synthesise(root / "lab", args.records)
        plan = root / "deployables.json"
        plan.write_text(json.dumps({"inventory": "synthetic", "bench": {}, "deployables": deployables}))
        synthesised = time.perf_counter() - began
        began, cpu = time.perf_counter(), time.process_time()
        table = report.write(deployables, root / "report")
        in_process, cpu = time.perf_counter() - began, time.process_time() - cpu
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "slimlab.cli", "report", "build", "--deployables", str(plan),
                        "--outdir", str(root / "report-cli")], check=True, capture_output=True)
        cli = time.perf_counter() - began
        html_mb = os.path.getsize(root / "report" / "summary.html") / 1e6
        recipes = len({item["recipe"] for item in deployables})
    print(f"| {args.records:,} records ({recipes} recipes × {len(FORMATS)} formats × {len(DEVICES)} devices × "
          f"2 option sets × {len(THREADS)} thread counts, {RUNS} latencies each; {len(table):,} rows) | "
          f"`report.write` {in_process:.1f} s ({cpu:.1f} s CPU) | `slimlab report build` {cli:.1f} s (with imports) | "
          f"summary.html {html_mb:.1f} MB | load average {os.getloadavg()[0]:.1f} | "
          f"synthesised in {synthesised:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
