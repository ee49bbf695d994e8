"""The run context around a benchmark, and the flags that warn a reader off a record.

The python runner's payload reads the context on the device itself (thermal
zones, battery, CPU frequencies and governors, before and after the timed runs;
the affinity mask; the cooldown wait): see ``slimlab_payload.context``. This
module holds what the host decides from it, the record's ``flags``:

* ``noisy``: the latency CV exceeds ``noisy_cv``, or the CPUs were throttled;
* ``throttled``: the fastest CPU the payload could run on slowed down by more
  than :data:`THROTTLE_DROP` between the start and the end of the timed runs;
* ``cooldown_timed_out``: the device was still hot when the cooldown gave up.
"""

THROTTLE_DROP = 0.10


def fastest_cpu_khz(snapshot: dict, affinity: list[int] | None) -> float | None:
    """The highest current frequency among the CPUs the payload was pinned to (all, without a mask).

    The busy cores run fastest, so a throttled run shows as a drop of this
    maximum, while idle cores clocking down do not.
    """
    cpus = snapshot["cpus"]
    names = [f"cpu{n}" for n in affinity] if affinity else list(cpus)
    freqs = [cpus[name]["freq_khz"] for name in names if cpus.get(name, {}).get("freq_khz") is not None]
    return max(freqs, default=None)


def throttled(context: dict) -> bool:
    before = fastest_cpu_khz(context["before"], context["affinity"])
    after = fastest_cpu_khz(context["after"], context["affinity"])
    return before is not None and after is not None and after < before * (1 - THROTTLE_DROP)


def flags(latency: dict, context: dict | None, noisy_cv: float) -> list[str]:
    """The record's warnings; ``context`` is None for runners that read none (native tools).

    A CV the tool does not report (benchncnn, MNN) cannot make a record noisy.
    """
    cv = latency.get("cv")
    was_throttled = context is not None and throttled(context)
    found = []
    if was_throttled or (cv is not None and cv > noisy_cv):
        found.append("noisy")
    if was_throttled:
        found.append("throttled")
    if context is not None and (context["cooldown"] or {}).get("timed_out"):
        found.append("cooldown_timed_out")
    return found
