"""The nightly regression's false alarms and sensitivity, measured on this host (issue 12's targets).

    python bench/nightly.py                        # 20 A/A nights, 20 trials at +5% and at +10%
    python bench/nightly.py --nights 3 --trials 3  # a quick look

In a scratch folder it builds the default config's `baseline` and `int8` recipes (TFLite,
one thread, this host), accepts them as the nightly baseline, then runs `slimlab nightly
run` over and over:

- A/A: unchanged artifacts on a plain device; every `regression` is a false alarm;
- sensitivity: the same, on a device whose Python makes every inference of the candidate
  (never the baseline) a set fraction slower (bench/slowdown/sitecustomize.py): a
  calibrated regression made outside the code under test; every `regression` is a catch.

It prints one markdown row per condition: series × nights, regressions, unsure, and the
median measured ratio.
"""

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SLOWDOWN = REPO / "bench" / "slowdown"


def device(root: Path, name: str, fraction: float) -> dict:
    entry = {"transport": "local", "runner": "python", "runtimes": ["tflite"], "workdir": str(root / "device")}
    if fraction:
        wrapper = root / f"python-slowed-{name}"
        wrapper.write_text(f"#!/bin/sh\nSLIMLAB_SLOWDOWN={fraction} PYTHONPATH={shlex.quote(str(SLOWDOWN))} "
                           f"exec {shlex.quote(sys.executable)} \"$@\"\n")
        wrapper.chmod(0o755)
        entry["python"] = {"interpreter": str(wrapper)}
    return entry


def prepare(root: Path, conditions: dict[str, float]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "profiles"):
        if not (root / name).exists():
            (root / name).symlink_to(REPO / name)
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config = {**default, "recipes": {name: default["recipes"][name] for name in ("baseline", "int8")},
              "formats": ["tflite"], "lab": {"inventory": "devices.yaml", "devices": list(conditions)},
              "bench": {"threads": [1], "runs": 200, "min_seconds": 1.0}}
    (root / "config").mkdir(exist_ok=True)
    (root / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (root / "devices.yaml").write_text(yaml.safe_dump(
        {"devices": {name: device(root, name, fraction) for name, fraction in conditions.items()}}))


def nightly(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "slimlab.cli", "nightly", *args], cwd=root, env=env,
                          capture_output=True, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=REPO / "results/nightly-bench")
    parser.add_argument("--nights", type=int, default=20, help="A/A nights")
    parser.add_argument("--trials", type=int, default=20, help="nights per injected slowdown")
    parser.add_argument("--slowdowns", type=float, nargs="+", default=[0.05, 0.10])
    args = parser.parse_args()
    conditions = {"aa": 0.0, **{f"slowed-{round(f * 100)}pct": f for f in args.slowdowns}}
    prepare(args.dir, conditions)
    first = nightly(args.dir, "run")  # builds everything and times it once
    if first.returncode not in (0,):
        print(first.stdout, first.stderr, file=sys.stderr)
        return 1
    nightly(args.dir, "accept", "--reason", "bench/nightly.py baseline")
    rows = ["| condition | series × nights | regressions | unsure | median ratio |", "|---|---:|---:|---:|---:|"]
    for name, fraction in conditions.items():
        # One device at a time: the config lists all, the nightly compares the devices it measured.
        config = yaml.safe_load((args.dir / "config/config.yaml").read_text())
        config["lab"]["devices"] = [name]
        (args.dir / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        statuses, ratios = [], []
        for _ in range(args.nights if fraction == 0 else args.trials):
            nightly(args.dir, "run")
            verdict = json.loads(sorted((args.dir / "results/nightly/runs").glob("*/verdict.json"))[-1].read_text())
            statuses += [row["status"] for row in verdict["series"]]
            ratios += [row["latency_ratio"] for row in verdict["series"] if row.get("latency_ratio")]
        label = "A/A (unchanged)" if fraction == 0 else f"+{fraction:.0%} slower candidate"
        rows.append(f"| {label} | {len(statuses)} | {statuses.count('regression')} | {statuses.count('unsure')} | "
                    f"{sorted(ratios)[len(ratios) // 2]:.3f} |")
    print(f"`python bench/nightly.py --nights {args.nights} --trials {args.trials}` on {platform.node()} "
          f"({os.cpu_count()} CPUs), default config's baseline and int8 TFLite models, 1 thread\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
