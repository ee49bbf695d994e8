"""Lab faults end to end: a board cut mid-run, a phone dropping mid-bench, hostile inventory names.

The ssh jobs run as the workflow runs them: one `slimlab bench` process per job, in parallel.
"""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from slimlab.errors import ConfigError
from slimlab.lab import bench
from slimlab.lab.bench import BenchFailed
from slimlab.lab.devices import load_inventory
from slimlab.records import BenchFailure, BenchRecord, failure_note_path, load
from tests.lab.entries import bench_block, lab_device
from tests.support import bench_job, wait_for_payload

pytestmark = [pytest.mark.lab, pytest.mark.timeout(90)]

# Long enough (3 s of timed runs) to cut a board mid-measurement; a short command deadline so the cut shows fast.
BENCH = bench_block(warmup=2, runs=20, min_seconds=3.0, timeout_s=8)


def inventory(tmp_path, boards) -> Path:
    devices = {
        board.name: {"transport": "ssh", "runner": "python", "workdir": str(tmp_path / f"{board.name} work"),
                     "python": {"interpreter": sys.executable},
                     "ssh": {**board.ssh_config_entry(), "connect_timeout_s": 2, "attempts": 2}}
        for board in boards
    }
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump({"devices": devices}))
    return path


def start_bench(lab: Path, device: str, artifact, out: Path, locks: Path) -> subprocess.Popen:
    return bench_job(lab, device, artifact, out, BENCH, env={**os.environ, "SLIMLAB_LOCK_DIR": str(locks)})


def test_cut_board_fails_its_job_the_other_finishes_and_a_rerun_fills_the_gap(ssh_boards, tiny_artifacts, tmp_path):
    cut, healthy = ssh_boards
    lab, locks = inventory(tmp_path, ssh_boards), tmp_path / "locks"
    outs = {b.name: tmp_path / "bench" / b.name / "threads-1.json" for b in ssh_boards}
    jobs = {b.name: start_bench(lab, b.name, tiny_artifacts["int8"], outs[b.name], locks) for b in ssh_boards}
    wait_for_payload(tmp_path / f"{cut.name} work")
    cut.cut()
    results = {name: (job.wait(timeout=60), *job.communicate()) for name, job in jobs.items()}

    code, _, err = results[healthy.name]
    assert code == 0, err
    assert load(BenchRecord, outs[healthy.name], "bench record").status == "ok"

    code, _, err = results[cut.name]
    assert code != 0 and not outs[cut.name].exists()
    error_line = err.strip().splitlines()[-1]
    expected = f"slimlab: error: bench of {tiny_artifacts['int8'].sidecar} on device '{cut.name}' failed ("
    assert error_line.startswith(expected), error_line
    note = load(BenchFailure, failure_note_path(outs[cut.name]), "bench failure note")
    assert note.status == "failed" and note.device == cut.name and note.option_set == "default"
    assert note.tag in ("offline", "timeout") and f"({note.tag})" in error_line

    cut.restore()
    rerun = start_bench(lab, cut.name, tiny_artifacts["int8"], outs[cut.name], locks)
    assert rerun.wait(timeout=60) == 0, rerun.communicate()[1]
    assert load(BenchRecord, outs[cut.name], "bench record").status == "ok"
    assert not failure_note_path(outs[cut.name]).exists()  # the gap is filled, the note gone


def test_same_board_jobs_from_two_runs_take_turns(ssh_board, tiny_artifacts, tmp_path):
    lab, locks = inventory(tmp_path, [ssh_board]), tmp_path / "locks"
    outs = [tmp_path / f"run{i}" / "threads-1.json" for i in range(2)]
    jobs = [start_bench(lab, ssh_board.name, tiny_artifacts["int8"], out, locks) for out in outs]
    began = time.monotonic()
    for job in jobs:
        assert job.wait(timeout=60) == 0, job.communicate()[1]
    elapsed = time.monotonic() - began
    walls = [load(BenchRecord, out, "bench record").wall_ms / 1e3 for out in outs]
    # Serialised by the device lock: the two measurements cannot have overlapped.
    assert elapsed >= sum(walls), (elapsed, walls)


def test_adb_device_dropping_mid_bench_fails_cleanly_then_recovers(adb_server, adb_peer, tiny_artifacts, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", adb_server.env["ANDROID_ADB_SERVER_PORT"])
    # Device paths are the sandbox's own: the peer runs shell commands on this host, which has no /data/local/tmp.
    tmp = adb_peer.sandbox / "data/local/tmp"
    phone = lab_device("phone", {"transport": "adb", "runner": "python", "runtimes": ["tflite"],
                                 "workdir": str(tmp / "slimlab"),
                                 "python": {"interpreter": sys.executable, "lock": str(tmp / "slimlab-device.lock")},
                                 "adb": {"serial": adb_peer.serial, "connect_timeout_s": 3}})
    out = tmp_path / "rec" / "threads-1.json"
    dropper = threading.Thread(target=lambda: (wait_for_payload(Path(phone.workdir)), adb_peer.stop()))
    dropper.start()
    with pytest.raises(BenchFailed, match=r"on device 'phone' failed \(offline\): .*broke off") as failed:
        bench.run(phone, tiny_artifacts["fp32"].sidecar, 1, BENCH, out, locks=tmp_path / "locks")
    dropper.join(timeout=30)
    assert failed.value.tag == "offline" and not out.exists()
    assert load(BenchFailure, failure_note_path(out), "bench failure note").tag == "offline"

    adb_peer.start()
    record = bench.run(phone, tiny_artifacts["fp32"].sidecar, 1, {**BENCH, "min_seconds": 0.0}, out,
                       locks=tmp_path / "locks")
    assert record.status == "ok" and out.is_file() and not failure_note_path(out).exists()


@pytest.mark.parametrize("name", ["a b", "x;touch PWNED", "$(touch PWNED)", "it's", "../up"])
def test_hostile_device_names_are_refused_by_the_inventory(name, tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump({"devices": {name: {"transport": "local", "runner": "python", "workdir": "w"}}}))
    with pytest.raises(ConfigError, match=rf"^{path}: devices: .* does not match"):
        load_inventory(path)
    assert not list(tmp_path.rglob("PWNED"))
