"""Energy probes on sysfs trees with the kernel's formats, advanced in real time by a load model."""

import dataclasses
import time

import numpy as np
import pytest

from slimlab.errors import ConfigError, DeviceError
from slimlab.lab import energy
from slimlab.lab.devices import load_inventory
from slimlab.plugins.lab.energy_android_battery import BatteryProbe, suggest_calibration
from slimlab.plugins.lab.energy_hwmon import HwmonProbe
from slimlab.plugins.lab.energy_none import NoEnergyProbe
from slimlab.plugins.lab.energy_odpm import OdpmProbe
from slimlab.plugins.lab.energy_rapl import RaplProbe
from slimlab.plugins.lab.local_transport import LocalTransport
from slimlab.registry import energy_probes
from tests.support import local_device
from tests.sysfs import Battery, HwmonChannel, OdpmMonitor, PowerModel, RaplZone, expected_joules_per_inference, write

IDLE_W, BUSY_W = 3.0, 9.0
SECONDS, INFERENCES = 1.0, 50
# Loose enough for read-time jitter on a busy shared 2-core box (cat's start-up is part of every read),
# tight enough to catch a missing baseline (+50%), a wrong share or a unit slip. A counter integrates on the
# meter; a power meter is sampled, and each edge of the timed window (busy to idle) is placed only as precisely
# as one read's timing: on a shared 2-core host a read can take a tenth of the window, at both edges.
TOLERANCE = {energy.COUNTER: 0.15, energy.POWER: 0.3}
# A gap between two reads of the meter longer than this is a stall (reads are every 0.02 s, each a `cat`).
STALL_S, ATTEMPTS = 0.1, 5
SECOND_MONITOR_RAILS = ["VSYS_PWR_DISPLAY", "S2S_VDD_G3D", "L2S_VDD_AOC_RET", "S9S_VDD_AOC", "S5S_VDDQ_MEM",
                        "S10S_VDD2L", "S4S_VDD2H_MEM", "S6S_VDD_G3D_L2"]


def device(tmp_path, probe, **settings):
    """Device "board" whose ``energy`` block names ``probe``; a sysfs probe reads the tree under tmp_path/sysfs."""
    sysfs = {"root": str(tmp_path / "sysfs")} if issubclass(probe.Settings, energy.SysfsSettings) else {}
    return local_device(tmp_path / "work", name="board", energy={
        "probe": probe.name, **sysfs, "interval_s": 0.02, "settle_s": 0.1, **settings})


def probe_for(cls, tmp_path, **settings):
    dev = device(tmp_path, cls, **settings)
    return cls(dev, LocalTransport(dev))


def measure(probe, model, share=1.0):
    """Measure as the lab does and check against the model's known power. A measurement during which the probe's
    reads stalled (the shared host was too busy to sample every interval, so a busy/idle edge fell in a gap) says
    nothing about the code under test: it is taken again, and the least stalled one is judged."""
    attempts = []
    for _ in range(ATTEMPTS):
        read, times, work = probe.read, [], model.workload(SECONDS, INFERENCES)
        probe.read = lambda: (times.append(time.monotonic()), read())[1]
        try:
            raw, result = energy.measure(probe, lambda: (work(), times.append(None))[0])  # None: the work ended
        finally:
            probe.read = read
        # After the work: one last read of the active phase, the pause before the idle baseline (settle_s, no stall),
        # then the idle reads.
        cut = times.index(None)
        gaps = [*np.diff(times[:cut]), *np.diff(times[cut + 2:])]
        attempts.append((float(max(gaps)), raw, result))
        if attempts[-1][0] <= STALL_S:
            break
    _, raw, result = min(attempts, key=lambda attempt: attempt[0])
    assert len(raw["latencies_ms"]) == INFERENCES
    expected = expected_joules_per_inference(model, share, SECONDS, INFERENCES)
    tolerance = TOLERANCE[probe.kind]
    assert result.joules_per_inference == pytest.approx(expected, rel=tolerance)
    assert result.idle_power_w == pytest.approx(IDLE_W * share, rel=tolerance)
    assert result.avg_power_w == pytest.approx(BUSY_W * share, rel=tolerance)
    assert result.window_s == pytest.approx(SECONDS) and result.inferences == INFERENCES
    return result


def rapl_tree(root, **package):
    return [RaplZone(root, "intel-rapl:0", "package-0", share=0.8, **package),
            RaplZone(root, "intel-rapl:0:0", "core", share=0.6),
            RaplZone(root, "intel-rapl:0:2", "dram", share=0.1),
            RaplZone(root, "intel-rapl:1", "psys", share=1.0)]


def test_every_probe_is_registered():
    assert energy_probes() == {"rapl": RaplProbe, "hwmon": HwmonProbe, "android_battery": BatteryProbe,
                     "odpm": OdpmProbe, "none": NoEnergyProbe}


def test_rapl_counts_package_zones_and_subtracts_the_idle_baseline(tmp_path):
    with PowerModel(rapl_tree(tmp_path / "sysfs"), IDLE_W, BUSY_W) as model:
        probe = probe_for(RaplProbe, tmp_path)
        assert list(probe.read()) == ["intel-rapl:0 (package-0)"]  # psys would count the package twice
        measure(probe, model, share=0.8)


def test_rapl_domains_are_chosen_by_name(tmp_path):
    with PowerModel(rapl_tree(tmp_path / "sysfs"), IDLE_W, BUSY_W) as model:
        probe = probe_for(RaplProbe, tmp_path, domains=["package-0", "dram"])
        assert sorted(probe.read()) == ["intel-rapl:0 (package-0)", "intel-rapl:0:2 (dram)"]
        measure(probe, model, share=0.9)
    with pytest.raises(ConfigError, match=r"device 'board': energy.domains: \['gpu'\] not among \[.*'package-0'.*\] on this rapl meter"):
        probe_for(RaplProbe, tmp_path, domains=["gpu"])


def test_rapl_counter_wrapping_mid_window_is_unwrapped(tmp_path):
    # 3 J range starting 0.1 J short of it: 6 J of busy time wraps the counter twice.
    zones = rapl_tree(tmp_path / "sysfs", max_range_uj=3_000_000, start_uj=2_900_000)
    with PowerModel(zones, IDLE_W, BUSY_W) as model:
        probe = probe_for(RaplProbe, tmp_path)
        assert probe.wrap_uj == {"intel-rapl:0 (package-0)": 3_000_000}
        measure(probe, model, share=0.8)


def test_a_counter_going_backwards_without_a_wrap_range_is_an_error(tmp_path):
    HwmonChannel(tmp_path / "sysfs", "hwmon0", "ina228", 1, ("energy",), share=1.0)
    probe = probe_for(HwmonProbe, tmp_path, chip="ina228")
    first = energy.Reading(0.0, {"hwmon0/energy1": 5e6})
    reset = energy.Reading(1.0, {"hwmon0/energy1": 1e6})
    with pytest.raises(DeviceError, match="counter hwmon0/energy1 went backwards"):
        energy.cumulative_joules([first, reset], probe)


@pytest.mark.parametrize("chip, signals, kind", [
    ("ina228", ("energy", "power"), energy.COUNTER),  # the counter wins over sampled power
    ("ina219", ("power", "curr"), energy.POWER),
    ("ina3221", ("curr",), energy.POWER),  # bus mV x mA
])
def test_hwmon_uses_the_best_signal_the_chip_has(tmp_path, chip, signals, kind):
    root = tmp_path / "sysfs"
    HwmonChannel(root, "hwmon0", "coretemp", 1, ("power",), share=0.0)  # another chip, not chosen
    meters = [HwmonChannel(root, "hwmon3", chip, 1, signals, share=0.5),
              HwmonChannel(root, "hwmon3", chip, 2, signals, share=0.25)]
    with PowerModel(meters, IDLE_W, BUSY_W) as model:
        probe = probe_for(HwmonProbe, tmp_path, chip=chip)
        assert probe.kind == kind and len(probe.read()) == 2
        measure(probe, model, share=0.75)
        probe = probe_for(HwmonProbe, tmp_path, chip=chip, channels=[2])
        measure(probe, model, share=0.25)


def test_hwmon_unknown_chip_names_the_chips_there(tmp_path):
    HwmonChannel(tmp_path / "sysfs", "hwmon0", "ina219", 1, ("power",), share=1.0)
    with pytest.raises(ConfigError, match=r"energy.chip: \['ina3221'\] not among \['ina219'\] on this hwmon meter"):
        probe_for(HwmonProbe, tmp_path, chip="ina3221")


@pytest.mark.parametrize("discharge_sign, unit", [(-1, "uA"), (1, "mA")])
def test_android_battery_calibration_then_measurement(tmp_path, discharge_sign, unit):
    with PowerModel([Battery(tmp_path / "sysfs", discharge_sign, unit)], IDLE_W, BUSY_W) as model:
        # An uncalibrated phone: its energy block has the sysfs keys, not yet current_sign and current_unit.
        dev = dataclasses.replace(device(tmp_path, NoEnergyProbe),
                                  energy=energy.SysfsSettings(root=str(tmp_path / "sysfs")))
        suggested = suggest_calibration(dev, LocalTransport(dev), samples=5, interval_s=0.02)
        assert suggested["current_sign"] == discharge_sign and suggested["current_unit"] == unit
        assert suggested["idle_power_w"] == pytest.approx(IDLE_W, rel=0.01)
        probe = probe_for(BatteryProbe, tmp_path, current_sign=discharge_sign, current_unit=unit)
        measure(probe, model)


def test_android_battery_refuses_to_measure_while_charging(tmp_path):
    Battery(tmp_path / "sysfs", -1, "uA", status="Charging")
    with pytest.raises(DeviceError, match="device 'board': energy probe .*battery status is 'Charging'"):
        probe_for(BatteryProbe, tmp_path, current_sign=-1, current_unit="uA")


def test_android_battery_without_calibration_says_how_to_get_it(tmp_path):
    Battery(tmp_path / "sysfs", -1, "uA")
    # Refused when the inventory is checked, before anything is measured.
    with pytest.raises(ConfigError, match=r"devices\.board\.energy\W+current_sign\b.*suggest_calibration"):
        probe_for(BatteryProbe, tmp_path, current_unit="uA")


def test_odpm_reads_the_real_format_and_selects_rails_by_name(tmp_path):
    cpu = {"S4M_VDD_CPUCL0": 0.2, "S3M_VDD_CPUCL1": 0.3, "S2M_VDD_CPUCL2": 0.4}
    # An idle second monitor with its own rails, beside the sample's monitor carrying the load.
    write(tmp_path / "sysfs/sys/bus/iio/devices/iio:device0/energy_value", "t=349894\n" + "".join(
        f"CH{i}(T=349894)[{rail}], {1000 * i}\n" for i, rail in enumerate(SECOND_MONITOR_RAILS)))
    with PowerModel([OdpmMonitor(tmp_path / "sysfs", "iio:device1", cpu)], IDLE_W, BUSY_W) as model:
        everything = probe_for(OdpmProbe, tmp_path)
        assert len(everything.read()) == 16
        assert everything.read()["S5M_VDD_INT"] == 10771876
        probe = probe_for(OdpmProbe, tmp_path, rails=["S4M_VDD_CPUCL0", "S3M_VDD_CPUCL1"])
        assert sorted(probe.read()) == ["S3M_VDD_CPUCL1", "S4M_VDD_CPUCL0"]
        measure(probe, model, share=0.5)
    with pytest.raises(ConfigError, match=r"energy.rails: \['S9M_VDD_NPU'\] not among \[.*\] on this odpm meter"):
        probe_for(OdpmProbe, tmp_path, rails=["S9M_VDD_NPU"])


def test_odpm_rail_named_twice_is_an_error(tmp_path):
    OdpmMonitor(tmp_path / "sysfs", "iio:device0", {})
    OdpmMonitor(tmp_path / "sysfs", "iio:device1", {})
    with pytest.raises(DeviceError, match="energy probe 'odpm': rails S10M_VDD_TPU, .* appear in more than one"):
        probe_for(OdpmProbe, tmp_path)


def test_none_gives_empty_energy_with_a_reason_and_still_runs_the_work(tmp_path):
    probe = probe_for(NoEnergyProbe, tmp_path, reason="bench board has no meter")
    raw, result = energy.measure(probe, lambda: {"latencies_ms": [1.0]})
    assert raw == {"latencies_ms": [1.0]}
    record = result.model_dump()
    assert record.pop("probe") == "none" and record.pop("reason") == "bench board has no meter"
    assert set(record.values()) == {None}
    with pytest.raises(DeviceError, match="nothing to read: bench board has no meter"):
        probe.read()


def test_a_missing_file_names_its_path_and_never_reads_as_zero(tmp_path):
    with PowerModel(rapl_tree(tmp_path / "sysfs"), IDLE_W, BUSY_W):
        probe = probe_for(RaplProbe, tmp_path)
        (tmp_path / "sysfs/sys/class/powercap/intel-rapl:0/max_energy_range_uj").unlink()
        with pytest.raises(DeviceError, match=r"device 'board': energy probe .*intel-rapl:0/max_energy_range_uj"):
            probe_for(RaplProbe, tmp_path)
    battery = tmp_path / "sysfs/sys/class/power_supply/battery"
    Battery(tmp_path / "sysfs", -1, "uA")
    (battery / "voltage_now").unlink()
    probe = probe_for(BatteryProbe, tmp_path, current_sign=-1, current_unit="uA")
    with pytest.raises(DeviceError, match=f"{battery}/voltage_now"):
        probe.read()


def test_a_value_that_is_not_a_number_names_its_path(tmp_path):
    Battery(tmp_path / "sysfs", -1, "uA")
    current = tmp_path / "sysfs/sys/class/power_supply/battery/current_now"
    write(current, "N/A\n")
    probe = probe_for(BatteryProbe, tmp_path, current_sign=-1, current_unit="uA")
    with pytest.raises(DeviceError, match=f"{current} holds 'N/A', not a number"):
        probe.read()


def test_a_sampled_probe_needs_several_samples_inside_the_window(tmp_path):
    with PowerModel([Battery(tmp_path / "sysfs", -1, "uA")], IDLE_W, BUSY_W) as model:
        probe = probe_for(BatteryProbe, tmp_path, current_sign=-1, current_unit="uA", interval_s=1.0)
        with pytest.raises(DeviceError, match=r"only \d power samples fell in the 0.050 s timed window"):
            energy.measure(probe, model.workload(0.05, 5))


def test_native_summaries_give_the_timed_window():
    assert energy.timed_window({"latencies_ms": [2.0, 3.0]}) == (0.005, 2, 0.0)
    assert energy.timed_window({"latencies_ms": [], "summary": {"n": 50, "mean_ms": 20.0}}) == (1.0, 50, 0.0)
    payload = {"latencies_ms": [2.0, 3.0], "timed_s": 0.006, "after_timed_s": 0.4}
    assert energy.timed_window(payload) == (0.006, 2, 0.4)


def test_the_window_ends_where_the_timed_runs_ended_not_when_the_payload_returned(tmp_path):
    """The payload evaluates the model after timing it: that idle tail is not the timed runs' energy."""
    with PowerModel(rapl_tree(tmp_path / "sysfs"), IDLE_W, BUSY_W) as model:
        probe = probe_for(RaplProbe, tmp_path)
        timed = model.workload(SECONDS, INFERENCES)

        def timed_then_evaluated():
            raw = timed()
            time.sleep(0.5)  # the evaluation, at idle power
            return {**raw, "timed_s": SECONDS, "after_timed_s": 0.5}

        _, result = energy.measure(probe, timed_then_evaluated)
    expected = expected_joules_per_inference(model, 0.8, SECONDS, INFERENCES)
    assert result.joules_per_inference == pytest.approx(expected, rel=TOLERANCE[energy.COUNTER])


def test_inventory_schema_requires_the_battery_calibration(tmp_path):
    entry = "devices:\n  pixel:\n    transport: local\n    runner: native\n    workdir: w\n" \
            "    native: {tools: {tflite: /x}}\n    energy: {probe: android_battery, current_sign: -1%s}\n"
    (tmp_path / "ok.yaml").write_text(entry % ", current_unit: uA")
    assert load_inventory(tmp_path / "ok.yaml")["pixel"].energy.current_unit == "uA"
    (tmp_path / "bad.yaml").write_text(entry % "")
    with pytest.raises(ConfigError, match="current_unit"):
        load_inventory(tmp_path / "bad.yaml")
