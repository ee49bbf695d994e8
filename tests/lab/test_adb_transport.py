"""The adb transport against a device speaking the real ADB protocol, through Debian's adb client and server."""

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from slimlab.lab import bench
from slimlab.lab.transport import DeviceOffline, DeviceTimeout
from slimlab.records import BenchRecord, load
from slimlab.registry import transports
from tests.lab.entries import bench_block, lab_device

pytestmark = [pytest.mark.lab, pytest.mark.timeout(60)]

HOSTILE = "it's a \"dir\"; touch PWNED; $(touch PWNED2)"
BENCH = bench_block(warmup=2, runs=20, min_seconds=0.0, timeout_s=60)


@pytest.fixture
def phone(adb_server, adb_peer, monkeypatch):
    """An adb device for the peer; the transport finds the private adb server through the environment."""
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", adb_server.env["ANDROID_ADB_SERVER_PORT"])
    # The peer runs shell commands on this host in its sandbox, so device paths (the work dir, the payload's
    # device lock) are the sandbox's own: the host has no /data/local/tmp.
    tmp = adb_peer.sandbox / "data/local/tmp"
    return lab_device("phone", {"transport": "adb", "runner": "python", "runtimes": ["tflite"],
                                "workdir": str(tmp / HOSTILE),
                                "python": {"interpreter": sys.executable, "lock": str(tmp / "slimlab-device.lock")},
                                "adb": {"serial": adb_peer.serial, "connect_timeout_s": 5}})


def no_injection(root):
    return not list(root.rglob("PWNED*"))


def test_push_run_pull_round_trip(phone, adb_peer, tmp_path):
    transport = transports()["adb"](phone)
    local = tmp_path / "model.tflite"
    local.write_bytes(os.urandom(300_000))
    remote = transport.push(local)
    assert remote.startswith(phone.workdir + "/blobs/")
    first = os.stat(remote).st_mtime_ns
    assert transport.push(local) == remote and os.stat(remote).st_mtime_ns == first  # pushed once
    back = tmp_path / "back.bin"
    transport.pull(remote, back)
    assert back.read_bytes() == local.read_bytes()
    echoed = transport.run([sys.executable, "-c", "import os, sys; print(sys.argv[1]); print(os.getcwd())", HOSTILE],
                           timeout=20)
    assert (echoed.returncode, echoed.stdout.splitlines()) == (0, [HOSTILE, phone.workdir])
    failed = transport.run(["sh", "-c", "echo oops >&2; exit 5"], timeout=20)
    assert (failed.returncode, failed.stdout, failed.stderr) == (5, "", "oops\n")
    assert no_injection(adb_peer.sandbox) and no_injection(tmp_path)


def test_connects_a_tcp_serial_itself(phone, adb_server, adb_peer):
    adb_server.run("disconnect", adb_peer.serial, timeout=10)
    transport = transports()["adb"](phone)
    assert transport.run(["echo", "hello"], timeout=20).stdout == "hello\n"
    assert adb_server.state(adb_peer.serial) == "device"


def test_timeout_is_not_offline(phone):
    transport = transports()["adb"](phone)
    with pytest.raises(DeviceTimeout, match="device 'phone': command timed out after 1s"):
        transport.run(["sleep", "30"], timeout=1)
    assert transport.run(["echo", "fine"], timeout=20).stdout == "fine\n"


def test_device_dropping_mid_command_is_offline_then_recovers(phone, adb_peer):
    transport = transports()["adb"](phone)
    transport.run(["true"], timeout=20)
    threading.Timer(1.0, adb_peer.stop).start()
    started = time.monotonic()
    # adb itself exits 0 here; only the missing end marker shows the command never finished.
    with pytest.raises(DeviceOffline, match="device 'phone': adb shell on .* broke off"):
        transport.run(["sh", "-c", "sleep 5; echo finished"], timeout=30)
    assert time.monotonic() - started < 5
    with pytest.raises(DeviceOffline, match="after reconnecting"):
        transport.run(["true"], timeout=20)
    adb_peer.start()
    assert transport.run(["echo", "back"], timeout=20).stdout == "back\n"


def test_bench_record_on_the_adb_device(phone, tiny_artifacts, tmp_path):
    out = tmp_path / "rec" / "threads-1.json"
    record = bench.run(phone, tiny_artifacts["fp32"].sidecar, 1, BENCH, out, locks=tmp_path / "locks")
    assert out.is_file() and record.status == "ok" and record.transport == "adb"
    assert record.device == "phone" and record.option_set == "default"
    assert record.latency.n >= 20 and record.latency.median_ms > 0
    assert record.artifact_sha256 == tiny_artifacts["fp32"].sha256
    assert load(BenchRecord, out, "bench record") == record  # what was written is what was returned
    assert Path(phone.runner_settings.lock).is_file()  # the payload flocked the device lock the inventory names
