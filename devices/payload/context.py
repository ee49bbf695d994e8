"""The run context, read on the device from its own sysfs and /proc.

Thermal zones, battery temperature and charging state, each CPU's frequency and
governor, read right before and right after the timed runs, while the CPUs are
still under load (read from the host after the payload exits, frequencies would
show the idle clock and hide throttling). Containers and laptops lack many of
these files: one that is absent or unreadable reads as None and is named in
``unavailable`` with the reason, never as 0. Also: pinning to CPUs, waiting for
the device to cool down, and the process's memory.
"""

import os
import platform
import re
import resource
import sys
import time
from pathlib import Path

from slimlab_payload.runtime import PayloadError


def _cpuinfo() -> dict[str, str]:
    """/proc/cpuinfo's fields as the first processor block gives them ({} without the file)."""
    cpuinfo = Path("/proc/cpuinfo")
    fields = {}
    for line in cpuinfo.read_text(errors="replace").splitlines() if cpuinfo.is_file() else []:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (x86: model name; ARM boards: Hardware), else the platform's."""
    fields = _cpuinfo()
    return fields.get("model name") or fields.get("Hardware") or platform.processor() or platform.machine()


def cpu() -> dict:
    """Which CPU ran the payload: the machine, an ARM core's implementer, part and features (ARM cpuinfo names no
    model), and the core qemu-user emulates, where the payload runs under it (QEMU_CPU)."""
    fields = _cpuinfo()
    return {"machine": platform.machine(), "implementer": fields.get("CPU implementer"),
            "part": fields.get("CPU part"), "features": fields["Features"].split() if "Features" in fields else None,
            "qemu_cpu": os.environ.get("QEMU_CPU")}


THERMAL = "sys/class/thermal"
CPUS = "sys/devices/system/cpu"
BATTERY = "sys/class/power_supply/battery"


class Sysfs:
    """The run-context files under ``root`` (``/``, or a test's tree).

    Containers and laptops lack many of them: a file that is absent or unreadable
    reads as None and is named in ``unavailable`` with the reason, never as 0.
    """

    def __init__(self, root: str):
        self.root = Path(root)

    def text(self, path: str, unavailable: dict) -> str | None:
        try:
            return (self.root / path).read_text().strip()
        except OSError as exc:  # recorded, not hidden: the record says which files were missing and why
            unavailable[path] = exc.strerror or type(exc).__name__
            return None

    def number(self, path: str, per_unit: float, unavailable: dict) -> float | None:
        """A single-number file in units of 1/``per_unit`` (m°C: 1000)."""
        text = self.text(path, unavailable)
        if text is None:
            return None
        try:
            return float(text) / per_unit
        except ValueError:
            unavailable[path] = f"not a number: {text!r}"
            return None

    def numbered(self, folder: str, prefix: str) -> list[str]:
        """``<prefix><n>`` entries of ``folder``, by n; none if the folder is absent."""
        directory = self.root / folder
        if not directory.is_dir():
            return []
        names = [entry.name for entry in directory.iterdir()]
        numbers = sorted(int(name[len(prefix):]) for name in names if re.fullmatch(re.escape(prefix) + r"\d+", name))
        return [f"{prefix}{n}" for n in numbers]


def thermal_zones(sysfs: Sysfs, unavailable: dict) -> dict:
    zones = {zone: {"type": sysfs.text(f"{THERMAL}/{zone}/type", unavailable),
                    "temp_c": sysfs.number(f"{THERMAL}/{zone}/temp", 1000, unavailable)}
             for zone in sysfs.numbered(THERMAL, "thermal_zone")}
    if not zones:
        unavailable[f"{THERMAL}/thermal_zone*"] = "absent"
    return zones


def machine_cpu_s() -> tuple[float, float] | None:
    """Seconds all CPUs have been busy, and stolen by a hypervisor, since boot (proc/stat); None where unreadable."""
    try:
        with open("/proc/stat") as stat:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (float(v) for v in stat.readline().split()[1:9])
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hz, steal / hz


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


class OtherWork:
    """How many cores' worth of other processes' work, and of a hypervisor's steal, ran beside this measurement."""

    def __init__(self):
        self.wall, self.machine, self.own = time.perf_counter(), machine_cpu_s(), own_cpu_s()

    def since(self) -> dict | None:
        machine = machine_cpu_s()
        if self.machine is None or machine is None:
            return None
        wall = time.perf_counter() - self.wall
        others = (machine[0] - self.machine[0]) - (own_cpu_s() - self.own)
        return {"others_cores": round(max(0.0, others) / wall, 3),
                "steal_cores": round((machine[1] - self.machine[1]) / wall, 3), "wall_s": round(wall, 3)}


def snapshot(sysfs: Sysfs) -> dict:
    """Temperatures (°C), charging state, and each CPU's frequency (kHz) and governor, as they are now."""
    unavailable = {}
    cpus = {cpu: {"freq_khz": sysfs.number(f"{CPUS}/{cpu}/cpufreq/scaling_cur_freq", 1, unavailable),
                  "governor": sysfs.text(f"{CPUS}/{cpu}/cpufreq/scaling_governor", unavailable)}
            for cpu in sysfs.numbered(CPUS, "cpu")}
    if not cpus:
        unavailable[f"{CPUS}/cpu*"] = "absent"
    return {
        "thermal": thermal_zones(sysfs, unavailable),
        "battery": {"temp_c": sysfs.number(f"{BATTERY}/temp", 10, unavailable),  # deci-°C
                    "status": sysfs.text(f"{BATTERY}/status", unavailable)},
        "cpus": cpus,
        "unavailable": unavailable,
    }


def hottest_c(sysfs: Sysfs) -> float | None:
    temps = [zone["temp_c"] for zone in thermal_zones(sysfs, {}).values() if zone["temp_c"] is not None]
    return max(temps, default=None)


def cool_down(sysfs: Sysfs, max_temp_c: float, timeout_s: float, poll_s: float) -> dict:
    """Wait until the hottest thermal zone is below ``max_temp_c``, for at most ``timeout_s``.

    A device still hot at the deadline is measured anyway; the record says so
    (``timed_out``). One without a readable thermal zone is not waited for.
    """
    began = time.monotonic()
    while True:
        hottest = hottest_c(sysfs)
        waited_s = time.monotonic() - began
        if hottest is None or hottest < max_temp_c or waited_s >= timeout_s:
            break
        time.sleep(min(poll_s, timeout_s - waited_s))
    result = {"max_temp_c": max_temp_c, "waited_s": round(waited_s, 3), "hottest_c": hottest,
              "timed_out": hottest is not None and hottest >= max_temp_c}
    if hottest is None:
        result["skipped"] = "no readable thermal zone"
    return result


def pin(cpus: list[int] | None) -> list[int] | None:
    """Pin this process to ``cpus`` (the runtime's threads, started later, inherit it); the mask in force.

    None where the platform has no affinity calls (macOS).
    """
    if not hasattr(os, "sched_setaffinity"):
        if cpus:
            raise PayloadError("--affinity: this platform cannot pin a process to CPUs")
        return None
    if cpus:
        try:
            os.sched_setaffinity(0, cpus)
        except OSError as exc:
            raise PayloadError(f"--affinity {','.join(map(str, cpus))}: {exc.strerror}") from None
    return sorted(os.sched_getaffinity(0))


def process_threads() -> int | None:
    """How many OS threads this process runs (the runtime's pool included); None without /proc."""
    tasks = Path("/proc/self/task")
    return len(list(tasks.iterdir())) if tasks.is_dir() else None


def rss_kib() -> int | None:
    """This process's resident set size now (KiB), from /proc; None without it."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
    except OSError:
        return None
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_rss_kib() -> int:
    """The most this process has held resident (KiB; macOS reports bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak
