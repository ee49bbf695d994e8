"""The local transport and the python runner, on this host."""

import json
import os
import sys

import pytest

from slimlab.errors import DeviceError
from slimlab.lab import bench
from slimlab.registry import runners, transports
from tests.support import bench_block, local_device

SETTINGS = bench_block(warmup=2, runs=25)


@pytest.fixture
def device(tmp_path):
    return local_device(tmp_path / "device")


def test_push_is_content_addressed_and_happens_once(device, tmp_path):
    local = tmp_path / "weights file.bin"
    local.write_bytes(os.urandom(4096))
    transport = transports()["local"](device)
    remote = transport.push(local)
    assert remote.startswith(str(tmp_path / "device" / "blobs")) and remote.endswith(".bin")
    first_mtime = os.stat(remote).st_mtime_ns
    assert transport.push(local) == remote
    assert os.stat(remote).st_mtime_ns == first_mtime
    with open(remote, "r+b") as f:  # a damaged copy on the device is replaced, not trusted
        f.write(b"\0\0\0\0")
    transport.push(local)
    assert open(remote, "rb").read() == local.read_bytes()


def test_run_passes_arguments_verbatim_and_times_out(device):
    transport = transports()["local"](device)
    hostile = "x; touch pwned && echo $HOME 'quoted'"
    result = transport.run([sys.executable, "-c", "import sys; print(sys.argv[1])", hostile], timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == hostile
    assert not (transport.workdir / "pwned").exists()
    with pytest.raises(DeviceError, match="device 'here': .* timed out after 0.5s"):
        transport.run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.5)


def test_bench_record_has_raw_latencies_and_summary(device, tiny_artifacts, tmp_path):
    out = tmp_path / "record.json"
    record = bench.run(device, tiny_artifacts["int8"].sidecar, 1, SETTINGS, out)
    assert json.loads(out.read_text()) == record.model_dump(mode="json")
    assert record.status == "ok" and record.device == "here"
    assert len(record.latencies_ms) == record.latency.n >= 25
    assert record.latency.median_ms > 0
    assert record.latency.min_ms <= record.latency.median_ms <= record.latency.p90_ms
    assert record.runtime.startswith("ai_edge_litert")
    assert record.artifact_sha256 == tiny_artifacts["int8"].sha256
    assert record.threads == 1


def test_minimum_duration_extends_the_run(device, tiny_artifacts, tmp_path):
    record = bench.run(device, tiny_artifacts["fp32"].sidecar, 1, bench_block(runs=1, min_seconds=0.3),
                       tmp_path / "r.json")
    # One run was asked for, but the loop must also fill 0.3 s.
    assert record.latency.n > 10


def test_a_sample_cap_before_the_time_floor_is_flagged(device, tiny_artifacts, tmp_path):
    capped = bench.run(device, tiny_artifacts["fp32"].sidecar, 1,
                       bench_block(runs=10, min_seconds=3.0, max_samples=40), tmp_path / "capped.json")
    assert capped.latency.n == 40 and "sample_cap_reached" in capped.flags
    assert capped.raw["timed_s"] < 3.0 and capped.settings["max_samples"] == 40
    # The same cap, reached after the time floor was met, is no reason to distrust the record.
    filled = bench.run(device, tiny_artifacts["fp32"].sidecar, 1,
                       bench_block(runs=100, min_seconds=0.0, max_samples=40), tmp_path / "filled.json")
    assert filled.latency.n == 40 and "sample_cap_reached" not in filled.flags


def test_payload_failure_is_a_device_error(tiny_artifacts, tmp_path):
    broken = local_device(tmp_path / "device", python={"interpreter": str(tmp_path / "no-such-python")})
    runner = runners()["python"](broken, transports()["local"](broken))
    with pytest.raises(DeviceError, match="device 'here': cannot run .*no-such-python"):
        runner.measure(tiny_artifacts["fp32"], 1, SETTINGS)


def test_bench_record_carries_energy_from_the_devices_probe(device, tiny_artifacts, tmp_path):
    """The probe samples through its own transport while the real payload runs, then an idle baseline."""
    from tests.sysfs import PowerModel, RaplZone

    sysfs = tmp_path / "sysfs"
    with PowerModel([RaplZone(sysfs, "intel-rapl:0", "package-0", share=1.0)], idle_w=4.0, busy_w=4.0):
        rapl = local_device(tmp_path / "device",
                            energy={"probe": "rapl", "root": str(sysfs), "interval_s": 0.02, "settle_s": 0.0})
        record = bench.run(rapl, tiny_artifacts["fp32"].sidecar, 1, bench_block(min_seconds=0.5), tmp_path / "r.json")
    used = record.energy
    assert used.probe == "rapl" and used.reason is None
    # The window is the timed loop's wall time, placed before the evaluation that followed it.
    assert used.window_s == record.raw["timed_s"] >= sum(record.latencies_ms) / 1000
    assert record.raw["after_timed_s"] > 0
    assert used.inferences == record.latency.n
    # The meter drew a constant 4 W: that is the idle baseline, the average, and nothing is left per inference.
    assert used.idle_power_w == pytest.approx(4.0, rel=0.15)
    assert used.avg_power_w == pytest.approx(4.0, rel=0.15)
    assert abs(used.joules_per_inference) < 0.15 * 4.0 * used.window_s / used.inferences


def test_device_without_a_probe_says_why_energy_is_empty(device, tiny_artifacts, tmp_path):
    record = bench.run(device, tiny_artifacts["fp32"].sidecar, 1, SETTINGS, tmp_path / "r.json")
    assert record.energy.probe == "none" and record.energy.joules_per_inference is None
    assert record.energy.reason
