"""Issue 9 on this host as the device: locks across checkouts, orphaned payloads, concurrent uploads, work folders.

Every test says which behaviour of the old code (commit 82ee2fe) it catches.
"""

import os
import platform
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from slimlab.lab import bench, payload
from slimlab.lab.bench import BenchFailed
from slimlab.lab.lock import device_lock
from slimlab.lab.transport import DeviceToolError
from slimlab.records import BenchFailure, failure_note_path, load
from slimlab.registry import transports
from tests.support import (UNSAFE_WORKDIRS, bench_block, bench_job, local_device, payload_pids, unsafe_workdir,
                           wait_for_payload)
from tests.sysfs import write

pytestmark = pytest.mark.timeout(90)


def checkout(root: Path, device: str, device_lock_file: Path, **python) -> Path:
    """A folder standing for a clone of slimlab, whose inventory calls this host ``device``; its inventory.
    ``python`` adds keys to the runner's block."""
    root.mkdir()
    inventory = root / "lab.yaml"
    inventory.write_text(yaml.safe_dump({"devices": {device: {
        "transport": "local", "runner": "python", "workdir": str(root / "device"),
        # Not the default /tmp/slimlab-device.lock: other test runs on this host must not make these wait.
        "python": {"lock": str(device_lock_file), **python}}}}))
    return inventory


def hot_device(root: Path) -> str:
    """A sysfs tree whose thermal zone reads 90 °C: a payload told to cool down first waits, holding the device."""
    write(root / "sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
    write(root / "sys/class/thermal/thermal_zone0/temp", "90000\n")
    return str(root)


def lock_holders(path: Path) -> set[int]:
    """The pids that hold ``path`` with flock, from /proc/locks (lines like ``1: FLOCK ADVISORY WRITE <pid>
    <major>:<minor>:<inode> 0 EOF``; a waiter's line has ``->`` in second place)."""
    inode = path.stat().st_ino if path.exists() else None
    return {int(fields[4]) for fields in map(str.split, Path("/proc/locks").read_text().splitlines())
            if fields[1] == "FLOCK" and int(fields[5].rsplit(":", 1)[1]) == inode}


def wait_until_held(path: Path, pid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while pid not in lock_holders(path):
        assert time.monotonic() < deadline, f"pid {pid} never locked {path}"
        time.sleep(0.05)


def test_two_checkouts_take_turns_on_one_device(tiny_artifacts, tmp_path):
    # Old: the lock was <working dir>/results/lab/locks/<device name>.lock, so two clones, or two names for one
    # device, each took a lock of their own and timed on the device at the same time.
    env = {key: value for key, value in os.environ.items() if key != "SLIMLAB_LOCK_DIR"}
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "run")  # the per-user lock folder both checkouts share
    settings = bench_block(warmup=2, runs=20, min_seconds=1.0, timeout_s=60)
    jobs = {}
    for name in ("here", "this-box"):
        inventory = checkout(tmp_path / f"clone of {name}", name, tmp_path / "device.lock")
        out = inventory.parent / "results" / "threads-1.json"
        jobs[inventory.parent / "device"] = bench_job(inventory, name, tiny_artifacts["fp32"], out, settings,
                                                      cwd=inventory.parent, env=env)
    seen: dict[Path, list[float]] = {workdir: [] for workdir in jobs}  # when each clone's payload was running
    while any(job.poll() is None for job in jobs.values()):
        for workdir, times in seen.items():
            if payload_pids(workdir):
                times.append(time.monotonic())
        time.sleep(0.02)
    for job in jobs.values():
        assert job.returncode == 0, job.communicate()[1]
    (first, last), (other_first, other_last) = [(min(times), max(times)) for times in seen.values()]
    assert last < other_first or other_last < first, "the two checkouts' payloads ran at the same time"
    assert list((tmp_path / "run" / "slimlab" / "locks").glob("local_*.lock"))
    assert not list(tmp_path.glob("*/results/lab/locks"))


def test_a_killed_bench_job_takes_its_payload_down(tiny_artifacts, tmp_path):
    # Old: the payload ran under subprocess.run, with no process group of its own and no parent-death signal:
    # killing the job left it measuring for its full minute while the lock, freed by the kernel, let the next
    # job start beside it.
    device_lock_file = tmp_path / "device.lock"
    # The payload waits for a minute (the device is "hot") holding the device: a measurement in progress.
    inventory = checkout(tmp_path / "clone", "here", device_lock_file, context_root=hot_device(tmp_path / "sysfs"),
                         cooldown={"max_temp_c": 40, "timeout_s": 60, "poll_s": 0.2})
    job = bench_job(inventory, "here", tiny_artifacts["fp32"], tmp_path / "threads-1.json",
                    bench_block(warmup=0, runs=1, timeout_s=120), cwd=inventory.parent,
                    env={**os.environ, "SLIMLAB_LOCK_DIR": str(tmp_path / "locks")})
    (pid,) = wait_for_payload(inventory.parent / "device")
    assert os.getpgid(pid) == pid  # a process group of its own, which a timeout kills whole
    wait_until_held(device_lock_file, pid)  # it holds the device now
    job.kill()
    job.wait()
    deadline = time.monotonic() + 5
    while pid in payload_pids(inventory.parent / "device") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pid not in payload_pids(inventory.parent / "device"), "the payload outlived its killed job"
    # The next job finds the device free on both sides: at once on the device; on the host once the killed job's
    # process is gone too (the job and its payload die one after the other; the payload's measurement was a minute).
    assert lock_holders(device_lock_file) == set()
    with device_lock(f"local:{platform.node()}", tmp_path / "locks", wait_s=5):
        pass


def test_the_device_side_lock_makes_a_second_payload_wait(tiny_artifacts, tmp_path):
    # Old: the payload took no --lock (argparse exits 2 on it): two jobs that missed each other's host lock
    # (two hosts sharing a board, or a job of an older checkout) timed on the device at the same time.
    script, _ = payload.payload()
    lock = tmp_path / "device.lock"

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, str(script), "--runtime", "tflite", "--model", str(tiny_artifacts["fp32"].path),
             "--warmup", "0", "--runs", "1", "--min-seconds", "0", "--lock", str(lock), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    # The first holds the device for 2 s, cooling down a "hot" device before it measures.
    first = start("--context-root", hot_device(tmp_path / "sysfs"), "--cooldown-max-temp-c", "40",
                  "--cooldown-timeout-s", "2", "--cooldown-poll-s", "0.1")
    wait_until_held(lock, first.pid)
    second = start()  # alone it would be done in about a second, before the first lets go
    while first.pid in lock_holders(lock):
        assert second.poll() is None, "the second payload measured while the first held the device"
        time.sleep(0.02)
    assert second.wait(timeout=30) == 0, second.communicate()[1]
    assert first.wait(timeout=30) == 0, first.communicate()[1]


def test_80_concurrent_pushes_of_one_blob_all_succeed(tmp_path):
    # Old: every upload of a blob copied to the one name `<blob>.part`, then renamed it: a push whose .part
    # another push had just renamed away failed with FileNotFoundError (27 of 80 in the trial).
    device = local_device(tmp_path / "device")
    blob = tmp_path / "model.bin"
    blob.write_bytes(os.urandom(1 << 20))
    start = threading.Barrier(80)

    def push(_) -> str:
        transport = transports()["local"](device)  # a job's own transport
        start.wait()
        return transport.push(blob)

    with ThreadPoolExecutor(80) as pool:
        remotes = set(pool.map(push, range(80)))
    (remote,) = remotes
    assert Path(remote).read_bytes() == blob.read_bytes()
    assert os.listdir(Path(remote).parent) == [Path(remote).name]  # no temporary file left behind


def test_an_oserror_while_uploading_fails_the_job_with_a_note(tiny_artifacts, tmp_path):
    # Old: upload() let the OSError (here FileExistsError: `blobs` is a file) escape and bench.run caught only
    # DeviceError: a traceback, and no failure note for the report.
    device = local_device(tmp_path / "device")
    (tmp_path / "device").mkdir(mode=0o700)
    (tmp_path / "device" / "blobs").write_text("a file where the blob folder goes")
    out = tmp_path / "record" / "threads-1.json"
    with pytest.raises(BenchFailed, match=r" failed \(tool_error\): device 'here': cannot store \S+ in \S+/blobs: "):
        bench.run(device, tiny_artifacts["fp32"].sidecar, 1, bench_block(), out, locks=tmp_path / "locks")
    note = load(BenchFailure, failure_note_path(out), "bench failure note")
    assert note.tag == "tool_error" and note.reason.startswith("device 'here': cannot store ")
    assert not out.exists()


@pytest.mark.parametrize("result_line, expected", [
    ("slimlab-result: {\"latencies_ms\": [1.0", "payload printed a result line that is not JSON"),
    ("slimlab-result: [1, 2]", "payload printed a result line that is not a JSON object"),
    ("slimlab-result: {\"latencies_ms\": [1.0, 2.0]}", "runner 'python' returned a malformed result (KeyError"),
    ("slimlab-result: {\"latencies_ms\": [1.0], \"runtime\": {}, \"memory\": \"lots\"}",
     "runner 'python' returned a malformed result (ValidationError"),
])
def test_a_malformed_result_fails_the_job_with_a_note(tiny_artifacts, tmp_path, result_line, expected):
    # Old: json.loads of the result line and the record's construction ran outside bench.run's handling: a
    # traceback and no failure note (a device whose Python or payload prints something else).
    interpreter = tmp_path / "python"
    interpreter.write_text(f"#!/bin/sh\necho '{result_line}'\n")
    interpreter.chmod(0o755)
    device = local_device(tmp_path / "device", python={"interpreter": str(interpreter)})
    out = tmp_path / "record" / "threads-1.json"
    with pytest.raises(BenchFailed, match=r"\(tool_error\)"):
        bench.run(device, tiny_artifacts["fp32"].sidecar, 1, bench_block(), out, locks=tmp_path / "locks")
    note = load(BenchFailure, failure_note_path(out), "bench failure note")
    assert note.tag == "tool_error" and expected in note.reason and "\n" not in note.reason
    assert not out.exists()


@pytest.mark.parametrize("unsafe", UNSAFE_WORKDIRS)
def test_an_unsafe_local_workdir_is_refused(tmp_path, unsafe):
    # Old: any workdir was used as it was: others could swap the payload that this host then runs.
    workdir = unsafe_workdir(tmp_path / "shared", unsafe)
    transport = transports()["local"](local_device(workdir))
    blob = tmp_path / "payload.pyz"
    blob.write_bytes(b"print('PWNED')")
    refusal = (rf"^device 'here': workdir {workdir} is not owned by this user, or others may write to it; "
               "set `workdir` to a folder of your own$")
    with pytest.raises(DeviceToolError, match=refusal):
        transport.push(blob)
    with pytest.raises(DeviceToolError, match=refusal):
        transport.run(["touch", "PWNED"], timeout=10)
    assert os.listdir(workdir) == []


def test_a_long_or_odd_device_identity_gets_a_short_lock_file(tmp_path):
    # Old: the lock file was named `<device name>.lock` as it was: a 300-character name failed with
    # ENAMETOOLONG, and `..` or a `/` put the lock outside the lock folder.
    for physical_id in (f"ssh:{'a' * 300}:22", "adb:../../escape", "local:a/b"):
        with device_lock(physical_id, tmp_path, wait_s=0) as path:
            assert path.parent == tmp_path and len(path.name) < 100
