"""Real pretrained models (issue 22): run `make real`, then print a table per model from its report.

    python bench/real.py                        # make real (this host), then the tables
    python bench/real.py --board cortex-a72     # the same on this host and an emulated arm64 board (root)
    python bench/real.py --no-run               # only read results/real/<model>/results/report/
    python bench/real.py -- -o .venv/.installed # anything after -- goes to make

Each model's experiment (config/real/<model>.yaml) runs in its own folder, results/real/<model>/. One
row per recipe x format that was measured: its precision, size, fidelity to the imported TFLite file
(SNR per output, on the 48 test images, in the format's own runtime), the detector's COCO mAP against
the hand-made labels, and the median latency per device and thread count. A board's latencies are
qemu's, not a device's (flagged emulated); its column "max diff" is the largest difference between the
board's outputs and this host's for the same file, relative to the output's range.
"""

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from compression import machine

MODELS = ("face_detection", "face_landmark")
BOARD = "real-arm64"
INVENTORY = Path("results/real/devices")  # both experiments' inventory: a link to devices/lab.yaml, the board's entry


def precision(steps: str) -> str:
    if "→" not in steps:
        return "as shipped"
    if "quantize.onnx" in steps:
        return "int8 (static, QDQ)"
    if "weight_quant_bits=8" in steps:
        return "int8 weights"
    return "fp16 weights" if "fp16" in steps else "float32"


def table(summary: pd.DataFrame) -> pd.DataFrame:
    ok = summary[summary["status"] == "ok"].copy()
    ok["precision"] = ok["steps"].map(precision)
    ok["where"] = [f"{device}{' (emulated)' if isinstance(emulated, str) else ''} {threads:.0f}t ms"
                   for device, emulated, threads in zip(ok["device"], ok["emulated"], ok["threads"])]
    keys = ["recipe", "format"]
    out = ok.groupby(keys, sort=False).first()
    columns = {"precision": out["precision"], "size KB": (out["size_bytes"] / 1e3).round().astype(int)}
    for column in sorted(c for c in ok.columns if c.startswith("snr_db:")):
        columns[f"SNR dB {column.split(':', 1)[1]}"] = out[column]
    for metric in ("test_map50", "test_map50_95"):
        if metric in ok and ok[metric].notna().any():
            columns[metric.removeprefix("test_")] = out[metric]
    latency = ok.pivot_table(index=keys, columns="where", values="latency_median_ms", sort=False)
    found = pd.DataFrame(columns).join(latency)
    emulated = ok[ok["emulated"].notna()]
    if len(emulated):
        found = found.join(emulated.groupby(keys)["device_max_abs_diff_rel"].max().rename("board max diff"))
    return found.reset_index()


def not_measured(summary: pd.DataFrame) -> pd.DataFrame:
    """Every pair not measured, but those of a recipe that ends in one format by design (``convert.mnn: {fp16:
    true}`` is an MNN model: no converter takes it on to the other formats)."""
    rest = summary[summary["status"] != "ok"].drop_duplicates(["recipe", "format"])
    by_design = rest["error"].str.fullmatch(r"convert\.\w+ does not take a (mnn|ncnn) model", na=False)
    return rest.loc[~by_design, ["recipe", "format", "status", "error"]]


def board(cpu: str) -> None:
    """Start the emulated board (the cached tree, else a 4-7 min build), its entry in INVENTORY."""
    from slimlab.lab.virtual import arm64, rootfs

    rootfs.require()
    INVENTORY.mkdir(parents=True, exist_ok=True)
    (link := INVENTORY / "lab.yaml").unlink(missing_ok=True)
    link.symlink_to(Path("../../../devices/lab.yaml"))
    cache = arm64.default_cache()
    rootfs.build(cache)
    arm64.up(BOARD, cpu, INVENTORY, cache, 200)
    # qemu runs the models 20-650x slower than this host: fewer timed runs, which time nothing real anyway.
    # The first line stays: `board down` deletes only an entry that still starts with it.
    header, _ = (text := (path := INVENTORY / f"{BOARD}.yaml").read_text()).split("\n", 1)
    entry = yaml.safe_load(text)
    entry["devices"][BOARD].update(warmup=5, runs=30, min_seconds=0.5)
    path.write_text(f"{header}\n{yaml.safe_dump(entry, sort_keys=False)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-run", action="store_true", help="only read the last run's reports")
    parser.add_argument("--board", metavar="CPU", help="also run on an emulated arm64 board with this core")
    parser.add_argument("make", nargs="*", help="more arguments for make (after --)")
    args = parser.parse_args()
    run = ["make", "--no-print-directory", "real", *args.make]
    if args.board:
        board(args.board)
        run.append(f"REAL_DEVICES=localhost,{BOARD}")
    try:
        if not args.no_run and subprocess.run(run).returncode != 0:
            print("bench: make real failed; the tables below cover what finished", file=sys.stderr)
    finally:
        if args.board:
            from slimlab.lab.virtual import arm64

            arm64.down(BOARD, arm64.default_cache())
    print(f"Machine: {machine()}")
    for model in MODELS:
        path = Path(f"results/real/{model}/results/report/summary.parquet")
        if not path.is_file():
            print(f"\nbench: no {path}; run without --no-run", file=sys.stderr)
            continue
        summary = pd.read_parquet(path)
        print(f"\n### {model}\n")
        print(table(summary).to_markdown(index=False, floatfmt=".3g"))
        print(f"\nNot measured ({model}):\n")
        print(not_measured(summary).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
