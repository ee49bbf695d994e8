"""The per-device lab lock, held by separate processes as concurrent snakemake runs would."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from slimlab.lab.lock import device_lock, lock_file
from slimlab.lab.transport import DeviceTimeout

pytestmark = pytest.mark.timeout(60)

# A process that takes the lock, reports when it got it, holds it, then reports its release.
HOLDER = """
import json, sys, time
from pathlib import Path
from slimlab.lab.lock import device_lock, lock_file
folder, hold_s = Path(sys.argv[1]), float(sys.argv[2])
with device_lock("board-1", folder, wait_s=30):
    print(json.dumps({"got": time.time()}), flush=True)
    time.sleep(hold_s)
    released = time.time()
print(json.dumps({"released": released}), flush=True)
"""


def holder(folder, hold_s):
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(hold_s)],
                            stdout=subprocess.PIPE, text=True)


def test_two_processes_take_turns(tmp_path):
    first = holder(tmp_path, 0.8)
    assert "got" in json.loads(first.stdout.readline())  # the first one surely holds it now
    second = holder(tmp_path, 0.0)
    out_first, _ = first.communicate(timeout=20)
    out_second = second.stdout.readline()
    second.communicate(timeout=20)
    released = json.loads(out_first)["released"]
    got_second = json.loads(out_second)["got"]
    assert got_second >= released, "the second process measured while the first still held the device"


def test_waiting_too_long_is_a_timeout_naming_the_holder(tmp_path):
    busy = holder(tmp_path, 5)
    try:
        busy.stdout.readline()
        started = time.monotonic()
        expected = rf"device board-1: still busy after waiting 0.3s for pid {busy.pid} on "
        with pytest.raises(DeviceTimeout, match=expected):
            with device_lock("board-1", tmp_path, wait_s=0.3):
                pass
        assert time.monotonic() - started < 2
    finally:
        busy.kill()
        busy.wait()


def test_a_killed_holder_never_leaves_a_stale_lock(tmp_path):
    busy = holder(tmp_path, 30)
    busy.stdout.readline()
    os.kill(busy.pid, signal.SIGKILL)
    busy.wait()
    started = time.monotonic()
    with device_lock("board-1", tmp_path, wait_s=5) as path:
        assert f"pid {os.getpid()} " in path.read_text()
    assert time.monotonic() - started < 1
    assert path.read_text() == ""  # released: nobody is named as holder


def test_devices_lock_independently(tmp_path):
    with device_lock("board-1", tmp_path, wait_s=1), device_lock("board-2", tmp_path, wait_s=1):
        held = [lock_file(tmp_path, "board-1"), lock_file(tmp_path, "board-2")]
        assert held[0] != held[1] and sorted(tmp_path.iterdir()) == sorted(held)
        assert held[0].name.startswith("board-1-")  # readable, with a hash that keeps odd names apart
