"""The run context the payload reads on the device, the cooldown before measuring, and the record's flags."""

import os
import threading
import time

import pytest

from slimlab.lab import bench, context
from slimlab_payload import context as payload
from tests.support import bench_block, local_device, validated_bench
from tests.sysfs import write

# A huge noisy_cv: these tests check the context, and a busy host's latency CV must not flag them.
SETTINGS = bench_block(warmup=1, runs=5, noisy_cv=100.0)


def thermal_zone(root, n, kind, temp_c):
    """/sys/class/thermal/thermal_zoneN/{type, temp}, temp in m°C."""
    write(root / f"sys/class/thermal/thermal_zone{n}/type", f"{kind}\n")
    set_temp(root, n, temp_c)


def set_temp(root, n, temp_c):
    write(root / f"sys/class/thermal/thermal_zone{n}/temp", f"{round(temp_c * 1000)}\n")


def cpufreq(root, n, freq_khz, governor):
    write(root / f"sys/devices/system/cpu/cpu{n}/cpufreq/scaling_cur_freq", f"{freq_khz}\n")
    write(root / f"sys/devices/system/cpu/cpu{n}/cpufreq/scaling_governor", f"{governor}\n")


def battery(root, temp_c, status):
    """/sys/class/power_supply/battery/{temp, status}, temp in deci-°C."""
    write(root / "sys/class/power_supply/battery/temp", f"{round(temp_c * 10)}\n")
    write(root / "sys/class/power_supply/battery/status", f"{status}\n")


@pytest.fixture
def sysfs(tmp_path):
    root = tmp_path / "sysfs"
    root.mkdir()
    return root


@pytest.fixture
def bench_run(tmp_path, sysfs, tiny_artifacts):
    """Bench the tiny fp32 model here, with the python runner's settings (``python:`` block) given."""

    def run(**python):
        device = local_device(tmp_path / "device", python={"context_root": str(sysfs), **python})
        return bench.run(device, tiny_artifacts["fp32"].sidecar, 1, SETTINGS, tmp_path / "record.json",
                         locks=tmp_path / "locks")

    return run


def test_record_carries_thermal_battery_and_cpus_before_and_after(bench_run, sysfs):
    thermal_zone(sysfs, 0, "x86_pkg_temp", 41.5)
    thermal_zone(sysfs, 10, "acpitz", 27.8)
    battery(sysfs, 31.2, "Charging")
    cpufreq(sysfs, 0, 1_800_000, "schedutil")
    cpufreq(sysfs, 1, 2_400_000, "performance")
    record = bench_run()
    expected = {
        "thermal": {"thermal_zone0": {"type": "x86_pkg_temp", "temp_c": 41.5},
                    "thermal_zone10": {"type": "acpitz", "temp_c": 27.8}},
        "battery": {"temp_c": 31.2, "status": "Charging"},
        "cpus": {"cpu0": {"freq_khz": 1_800_000, "governor": "schedutil"},
                 "cpu1": {"freq_khz": 2_400_000, "governor": "performance"}},
        "unavailable": {},
    }
    assert record.context["before"] == expected and record.context["after"] == expected
    assert record.context["cooldown"] is None and record.flags == []
    assert record.context["process_threads"] >= 1 and "context" not in record.raw


def test_affinity_pins_the_payload_and_is_recorded(bench_run):
    if sorted(os.sched_getaffinity(0)) == [0]:
        pytest.skip("this process runs on CPU 0 only: pinning to it would change nothing")
    record = bench_run(affinity=[0])
    assert record.context["affinity"] == [0]  # read back from the kernel by the payload, not echoed


def test_missing_files_are_recorded_as_unavailable_not_zero(bench_run, sysfs):
    write(sysfs / "sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")  # a zone without its temp
    (sysfs / "sys/devices/system/cpu/cpu0").mkdir(parents=True)  # a CPU without cpufreq, as in a container
    record = bench_run(cooldown={"max_temp_c": 45})
    before = record.context["before"]
    assert before["thermal"] == {"thermal_zone0": {"type": "cpu-thermal", "temp_c": None}}
    assert before["battery"] == {"temp_c": None, "status": None}
    assert before["cpus"] == {"cpu0": {"freq_khz": None, "governor": None}}
    assert before["unavailable"] == dict.fromkeys([
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
        "sys/class/thermal/thermal_zone0/temp",
        "sys/class/power_supply/battery/temp", "sys/class/power_supply/battery/status",
    ], "No such file or directory")
    # No readable zone: no wait, and no flag.
    cooldown = record.context["cooldown"]
    assert cooldown["skipped"] == "no readable thermal zone" and cooldown["waited_s"] < 1
    assert record.flags == []


def test_a_device_without_sysfs_records_absence_and_is_not_waited_for(tmp_path):
    sysfs = payload.Sysfs(str(tmp_path))
    assert payload.snapshot(sysfs)["unavailable"] == {
        "sys/devices/system/cpu/cpu*": "absent", "sys/class/thermal/thermal_zone*": "absent",
        "sys/class/power_supply/battery/temp": "No such file or directory",
        "sys/class/power_supply/battery/status": "No such file or directory",
    }
    assert payload.cool_down(sysfs, max_temp_c=45, timeout_s=30, poll_s=1) == {
        "max_temp_c": 45, "waited_s": 0.0, "hottest_c": None, "timed_out": False, "skipped": "no readable thermal zone"}


def test_cooldown_waits_until_the_hottest_zone_is_below_the_threshold(sysfs, monkeypatch):
    thermal_zone(sysfs, 0, "cpu-thermal", 38.0)
    thermal_zone(sysfs, 1, "gpu-thermal", 60.0)  # the hottest zone decides
    polled, cooled = threading.Event(), {}
    read_hottest = payload.hottest_c

    def hottest_c_telling_the_cooler(root):
        polled.set()
        return read_hottest(root)

    monkeypatch.setattr(payload, "hottest_c", hottest_c_telling_the_cooler)

    def cool_once_polled():
        polled.wait(10)
        started = time.monotonic()
        time.sleep(0.5)
        cooled["took_s"] = time.monotonic() - started
        set_temp(sysfs, 1, 40.0)

    cooler = threading.Thread(target=cool_once_polled)
    cooler.start()
    result = payload.cool_down(payload.Sysfs(str(sysfs)), max_temp_c=45, timeout_s=30, poll_s=0.02)
    cooler.join()
    assert round(cooled["took_s"], 3) <= result["waited_s"] < cooled["took_s"] + 1
    assert (result["hottest_c"], result["timed_out"]) == (40.0, False)


def test_cooldown_that_never_cools_times_out_measures_anyway_and_flags(bench_run, sysfs):
    thermal_zone(sysfs, 0, "cpu-thermal", 60.0)
    record = bench_run(cooldown={"max_temp_c": 45, "timeout_s": 0.5, "poll_s": 0.1})
    assert record.status == "ok" and record.latency.n >= SETTINGS["runs"]
    cooldown = record.context["cooldown"]
    assert (cooldown["timed_out"], cooldown["hottest_c"]) == (True, 60.0) and cooldown["waited_s"] >= 0.5
    assert record.flags == ["cooldown_timed_out"]


def run_context(before_khz, after_khz, affinity=None):
    def snapshot(freqs):
        return {"cpus": {f"cpu{n}": {"freq_khz": khz, "governor": "schedutil"} for n, khz in enumerate(freqs)}}

    return {"affinity": affinity, "cooldown": None, "before": snapshot(before_khz), "after": snapshot(after_khz)}


@pytest.mark.parametrize("cv, before_khz, after_khz, affinity, expected", [
    (0.05, [2.4e6, 2.4e6], [2.4e6, 2.4e6], None, []),
    (0.15, [2.4e6, 2.4e6], [2.4e6, 2.4e6], None, ["noisy"]),
    (0.05, [2.4e6, 1.0e6], [2.0e6, 1.0e6], None, ["noisy", "throttled"]),  # the fastest CPU lost 17%
    (0.05, [2.4e6, 2.4e6], [2.3e6, 0.6e6], None, []),  # an idle core clocked down; the busy one held
    (0.05, [2.4e6, 2.4e6], [2.4e6, 1.2e6], [1], ["noisy", "throttled"]),  # the one CPU it was pinned to
    (None, [None], [None], None, []),  # no CV (benchncnn) and no cpufreq: nothing to judge by
])
def test_flags_noisy_for_a_high_cv_or_a_frequency_drop(cv, before_khz, after_khz, affinity, expected):
    assert context.flags({"cv": cv}, run_context(before_khz, after_khz, affinity), noisy_cv=0.1) == expected


def test_noisy_cv_comes_from_the_device_then_the_config_then_the_default(tmp_path):
    strict, plain = local_device(tmp_path, noisy_cv=0.05), local_device(tmp_path)
    assert bench.measurement_settings(strict, bench_block(noisy_cv=0.2))["noisy_cv"] == 0.05
    assert bench.measurement_settings(plain, bench_block(noisy_cv=0.2))["noisy_cv"] == 0.2
    assert bench.measurement_settings(plain, validated_bench())["noisy_cv"] == 0.1  # the config schema's default
    assert context.flags({"cv": 0.3}, None, noisy_cv=0.1) == ["noisy"]  # a native tool's record: CV only
