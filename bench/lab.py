"""The device lab's closing figures, measured on real peers on this host.

    sudo .venv/bin/python bench/lab.py            # needs root for the SSH boards' network namespaces

1. Bench throughput, in records per minute: one SSH board vs two in parallel
   (one `slimlab bench` process per record, as the workflow runs them).
2. Latency stability: the CV of the median latency over 5 repeated records on
   localhost, beside the mean within-record CV.
3. Transport overhead per record: the record's wall time (push + run + close)
   minus the payload's own measured time (init, first inference, timed runs,
   and warm-up estimated at the median), for local, ssh and adb; plus the bare
   round trip of one no-op command.

The boards (slimlab.lab.virtual) and the adb device (labpeers) run on this host, so (1) shares this
host's cores between boards: it measures the lab's concurrency, not the speed
of two real boards.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# The emulated adb device is a lab peer (labpeers/, at the checkout's root), not part of the slimlab package.
sys.path.insert(1, str(REPO))

from labpeers.adb_device import AdbPeer  # noqa: E402
from slimlab import config  # noqa: E402
from slimlab.lab import bench  # noqa: E402
from slimlab.lab.devices import Device, device  # noqa: E402
from slimlab.lab.virtual.boards import boards  # noqa: E402
from slimlab.records import BenchRecord  # noqa: E402
from slimlab.registry import transports  # noqa: E402

# The config's bench block for the `default` option set, as the workflow hands it to `slimlab bench`.
BENCH = {"threads": [1], "warmup": 20, "runs": 200, "min_seconds": 1.0, "max_samples": 100_000, "timeout_s": 120,
         "noisy_cv": 0.1, "options": {}, "option_set": "default"}
RECORDS_PER_BOARD = 4


def tiny_artifact(root: Path):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from slimlab.stages import run_step

    digits = {"name": "digits", "seed": 7, "val_fraction": 0.1, "test_fraction": 0.2}
    keras = run_step({"stage": "train", "params": {"epochs": 3, "model_params": {"width": 8, "dense": 32}},
                      "dataset": digits}, None, root / "train" / "artifact.json")
    return run_step({"stage": "quantize.int8", "params": {"representative_samples": 50}, "dataset": digits},
                    keras.sidecar, root / "int8" / "artifact.json")


def lab_device(name: str, entry: dict) -> Device:
    """A typed device from an inventory entry, checked as ``load_inventory`` checks it."""
    config.validate({"devices": {name: entry}}, "devices.schema.yaml", "bench/lab.py")
    return device(name, entry, "bench/lab.py")


def ssh_entry(board, workdir: Path) -> dict:
    return {"transport": "ssh", "runner": "python", "runtimes": ["tflite"], "workdir": str(workdir),
            "python": {"interpreter": sys.executable}, "ssh": board.ssh_config_entry()}


def local_device(workdir: Path) -> Device:
    return lab_device("localhost", {"transport": "local", "runner": "python", "runtimes": ["tflite"],
                                    "workdir": str(workdir)})


def cli_records(lab: Path, device: str, artifact, outdir: Path, count: int, locks: Path) -> None:
    for i in range(count):
        subprocess.run(
            [sys.executable, "-m", "slimlab.cli", "bench", "--inventory", str(lab), "--device", device,
             "--artifact", str(artifact.sidecar), "--threads", "1", "--settings", json.dumps(BENCH),
             "--output", str(outdir / device / f"r{i}" / "threads-1.json")],
            cwd=REPO, env={**os.environ, "SLIMLAB_LOCK_DIR": str(locks)}, check=True, capture_output=True,
            timeout=300,
        )


def throughput(tmp: Path, artifact) -> dict:
    import yaml

    with boards(2, tmp / "boards") as made:
        lab = tmp / "lab.yaml"
        lab.write_text(yaml.safe_dump({"devices": {b.name: ssh_entry(b, tmp / f"{b.name} work") for b in made}}))
        cli_records(lab, made[0].name, artifact, tmp / "warm", 1, tmp / "locks")  # first upload, not timed
        cli_records(lab, made[1].name, artifact, tmp / "warm", 1, tmp / "locks")
        figures = {}
        for used in (made[:1], made):
            began = time.monotonic()
            with ThreadPoolExecutor(len(used)) as pool:
                jobs = [pool.submit(cli_records, lab, b.name, artifact, tmp / f"n{len(used)}", RECORDS_PER_BOARD,
                                    tmp / "locks") for b in used]
                for job in jobs:
                    job.result()
            minutes = (time.monotonic() - began) / 60
            figures[f"{len(used)} board(s)"] = round(RECORDS_PER_BOARD * len(used) / minutes, 1)
        return figures


def payload_ms(record: BenchRecord) -> float:
    return (record.init_ms + record.first_inference_ms + sum(record.latencies_ms)
            + record.raw["warmup"] * record.latency.median_ms)


def overhead(device: Device, artifact, tmp: Path, repeats: int = 3) -> dict:
    """Median over ``repeats`` records (after one that uploads): wall minus payload, and a no-op's round trip."""
    bench.run(device, artifact.sidecar, 1, BENCH, tmp / device.name / "warm.json", locks=tmp / "locks")
    extra = []
    for i in range(repeats):
        record = bench.run(device, artifact.sidecar, 1, BENCH, tmp / device.name / f"{i}.json", locks=tmp / "locks")
        extra.append(record.wall_ms - payload_ms(record))
    transport = transports()[device.transport](device)
    began = time.perf_counter()
    transport.run(["true"], timeout=30)
    first = (time.perf_counter() - began) * 1e3  # includes connecting
    began = time.perf_counter()
    transport.run(["true"], timeout=30)
    again = (time.perf_counter() - began) * 1e3
    transport.close()
    return {"overhead_ms_median": round(float(np.median(extra)), 1),
            "noop_first_ms": round(first, 1), "noop_reused_ms": round(again, 1)}


def stability(tmp: Path, artifact) -> dict:
    local = local_device(tmp / "local")
    records = [bench.run(local, artifact.sidecar, 1, BENCH, tmp / "cv" / f"{i}.json", locks=tmp / "locks")
               for i in range(5)]
    medians = np.array([r.latency.median_ms for r in records])
    return {"median_ms": [round(m, 4) for m in medians],
            "cv_of_medians": round(float(medians.std(ddof=1) / medians.mean()), 4),
            "mean_within_record_cv": round(float(np.mean([r.latency.cv for r in records])), 4)}


def adb_device(tmp: Path):
    """A started adb peer, a private adb server, and the device entry for it."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        os.environ["ANDROID_ADB_SERVER_PORT"] = str(sock.getsockname()[1])
    os.environ["ANDROID_SDK_HOME"] = str(tmp)  # adb's key, kept out of the user's home
    subprocess.run(["adb", "start-server"], check=True, capture_output=True, timeout=30)
    peer = AdbPeer(tmp / "phone").start()
    # The peer runs shell commands on this host, so its device paths (work dir, the payload's device lock)
    # are inside its sandbox: the host has no /data/local/tmp.
    device_tmp = peer.sandbox / "data/local/tmp"
    return peer, lab_device("phone", {
        "transport": "adb", "runner": "python", "runtimes": ["tflite"], "workdir": str(device_tmp / "slimlab"),
        "python": {"interpreter": sys.executable, "lock": str(device_tmp / "slimlab-device.lock")},
        "adb": {"serial": peer.serial}})


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        artifact = tiny_artifact(tmp / "artifacts")
        figures = {"throughput_records_per_minute": throughput(tmp / "tp", artifact),
                   "localhost_latency_over_5_runs": stability(tmp, artifact)}
        figures["transport_overhead_per_record"] = {"local": overhead(local_device(tmp / "local"), artifact, tmp)}
        with boards(1, tmp / "oh") as (board,):
            ssh = lab_device(board.name, ssh_entry(board, tmp / "oh-w"))
            figures["transport_overhead_per_record"]["ssh"] = overhead(ssh, artifact, tmp)
        peer, phone = adb_device(tmp)
        try:
            figures["transport_overhead_per_record"]["adb"] = overhead(phone, artifact, tmp)
        finally:
            peer.stop()
            subprocess.run(["adb", "kill-server"], capture_output=True, timeout=30)  # our private server only
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
