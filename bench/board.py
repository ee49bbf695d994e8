"""The emulated arm64 board (issue 15): what the ARM builds of the runtimes compute, against this host.

    sudo python bench/board.py                                  # cortex-a72, max,sme=off and max
    sudo python bench/board.py --cpus cortex-a76 --evaluate 200

It times the build (cached after the first) and each board's start, runs the default
config's `baseline` and `int8` recipes (MNIST, the default CNN) in TFLite, ncnn and MNN, with
ncnn's default and fp32 option sets, on this host and on one board per core, with every
device evaluating the test split. Then it prints, per board and artifact, the host's and the
board's accuracy, their top-1 agreement and the largest logit difference, and how much slower
the emulated inference is than this host's: never a device figure.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from compression import machine
from slimlab.lab.virtual import arm64, rootfs
from slimlab.records import BenchRecord, load

REPO = Path(__file__).resolve().parents[1]
FP32 = {"use_fp16_storage": False, "use_fp16_packed": False, "use_fp16_arithmetic": False}


def experiment(root: Path, boards: list[str], evaluate: int) -> None:
    for name in ("Snakefile", "workflow", "profiles"):
        (root / name).symlink_to(REPO / name)
    (root / "devices").mkdir()
    host = yaml.safe_load((REPO / "devices/lab.yaml").read_text())
    host["devices"]["localhost"].setdefault("python", {})["evaluate"] = evaluate
    (root / "devices/lab.yaml").write_text(yaml.safe_dump(host))
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config = {**default, "recipes": {name: default["recipes"][name] for name in ("baseline", "int8")},
              "lab": {"inventory": "devices", "devices": ["localhost", *boards]},
              "bench": {**default["bench"], "threads": [1], "runs": 50, "min_seconds": 0.5,
                        "option_sets": {"default": {}, "ncnn-fp32": {"ncnn": FP32}}}}
    (root / "config").mkdir()
    (root / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def table(root: Path) -> pd.DataFrame:
    records = [load(BenchRecord, path, "bench record") for path in (root / "results/bench").rglob("threads-*.json")]
    ok = [r for r in records if r.status == "ok" and r.device_eval]
    host = {(r.artifact, r.option_set): r for r in ok if r.device == "localhost"}
    rows = []
    for record in sorted((r for r in ok if r.device != "localhost"), key=lambda r: (r.device, r.artifact)):
        found, here = record.device_eval, host[record.artifact, record.option_set]
        rows.append({"core": record.emulated.qemu_cpu, "artifact": record.artifact.split("/", 1)[1],
                     "option set": record.option_set, "host accuracy %": 100 * found.host_accuracy,
                     "board accuracy %": 100 * found.accuracy, "agreement %": 100 * found.agreement,
                     "max abs diff / range": found.max_abs_diff_rel, "passed": found.passed,
                     "fp16 arithmetic (asimdhp)": "asimdhp" in (record.context["cpu"]["features"] or []),
                     "emulated ÷ host latency": record.latency.median_ms / here.latency.median_ms})
    return pd.DataFrame(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpus", nargs="+", default=["cortex-a72", "max,sme=off", "max"])
    parser.add_argument("--evaluate", type=int, default=1000, help="test samples each device runs (1000: all)")
    args = parser.parse_args()
    rootfs.require()
    cache = arm64.default_cache()
    began = time.monotonic()
    rootfs.build(cache)
    print(f"build: {time.monotonic() - began:.1f} s (0 when cached)")
    names = [f"bench-{i}" for i in range(len(args.cpus))]
    with tempfile.TemporaryDirectory(prefix="slimlab-board-bench-") as folder:
        root = Path(folder)
        experiment(root, names, args.evaluate)
        try:
            for name, cpu in zip(names, args.cpus):
                began = time.monotonic()
                arm64.up(name, cpu, root / "devices", cache, args.evaluate)
                print(f"up {name} ({cpu}): {time.monotonic() - began:.1f} s")
            began = time.monotonic()
            done = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "lab"], cwd=root,
                                  capture_output=True, text=True)
            print(f"workflow: {time.monotonic() - began:.0f} s" + ("" if done.returncode == 0 else
                  f", failed; the table covers what finished:\n{done.stderr[-2000:]}"))
            found = table(root)
        finally:
            for name in names:
                arm64.down(name, cache)
    print(f"\n{machine()}\n")
    print(found.to_markdown(index=False, floatfmt=".3g"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
