"""One benchmark record: an artifact, on one device, with one option set, at one thread count.

A failed benchmark fails its job, so that the next run retries it, and writes
no record: the report can never read a dead board as a slow model. Instead a
failure note ``threads-<n>.failed.json`` (:class:`slimlab.records.BenchFailure`)
is written atomically beside where the record would be, with the failure's tag
(``offline``, ``timeout`` or ``tool_error``) and reason; a later success removes it.

A record (:class:`slimlab.records.BenchRecord`) carries the latency statistics and
every raw latency, the options asked for, reported back and honoured, the run
context the runner read on the device, memory, energy, the device's own evaluation
(``device_eval``, where the runner was asked for one), and ``flags``: ``noisy``,
``throttled``, ``cooldown_timed_out``, ``sample_cap_reached``, ``emulated`` for a
device the inventory declares an emulator (``emulated``, also a field of the record), and
``software_gpu`` where the runtime ran on a software GPU driver (the adapter's ``gpu``).
"""

import platform
import time
import traceback
from pathlib import Path

from slimlab import registry
from slimlab.artifacts import Artifact, read_sidecar
from slimlab.errors import DeviceError, SlimlabError
from slimlab.lab import context, energy
from slimlab.lab.devices import Device
from slimlab.lab.lock import device_lock, lock_dir
from slimlab.lab.stats import summarize
from slimlab.lab.transport import failure_tag
from slimlab.parity_bounds import is_quantized, judge, reduced_precision_options
from slimlab.records import (RECORD_SETTINGS, BenchFailure, BenchRecord, DeviceEval, Latency, Options,
                             failure_note_path)

# How long a job waits for another run's benchmark on the same device.
LOCK_WAIT_S = 3600.0


class BenchFailed(DeviceError):
    """A benchmark job failed; ``tag`` says whether the device was offline, timed out or a tool failed."""

    def __init__(self, message: str, tag: str):
        super().__init__(message)
        self.tag = tag


def measurement_settings(device: Device, bench: dict) -> dict:
    """The config's ``bench`` block (one option set's options), overridden key by key by the device's entry."""
    return {**{key: device.measurement.get(key, bench[key]) for key in RECORD_SETTINGS}, "options": bench["options"]}


def _measure(device: Device, artifact: Artifact, threads: int, settings: dict, lock_wait_s: float,
             locks: Path) -> tuple[dict, object, float]:
    """The runner's raw result, the energy used (sampled beside it, net of an idle baseline) and the wall time."""
    transport_class = registry.transports()[device.transport]
    # The probe reads while the runner runs: each gets its own connection.
    transport, probe_transport = transport_class(device), transport_class(device)
    try:
        with device_lock(transport.physical_id, locks, lock_wait_s):
            began = time.perf_counter()
            runner = registry.runners()[device.runner](device, transport)
            probe = registry.energy_probes()[device.probe](device, probe_transport)
            raw, used = energy.measure(probe, lambda: runner.measure(artifact, threads, settings))
            return raw, used, (time.perf_counter() - began) * 1e3
    finally:
        transport.close()
        probe_transport.close()


def device_eval(found: dict, lineage, options: dict | None = None) -> DeviceEval:
    """The device's evaluation against the parity bounds of the artifact's kind (float or quantized, or runtime
    ``options`` that reduce precision, like fp16 on a GPU): its agreement with the host (a classifier's top-1, else
    the outputs' least cosine), and a classifier's accuracy, at most the agreement bound's slack below the host's
    on the same samples. Output differences are reported, not judged: a device's kernels may differ."""
    verdict = judge(found["outputs"], found.get("agreement"), is_quantized(lineage, reduced_precision_options(
        options or {})))
    slack = 1.0 - verdict["bounds"]["min_agreement"]
    passed = verdict["agreement"] >= verdict["bounds"]["min_agreement"] and (
        found.get("accuracy") is None or found["accuracy"] >= found["host_accuracy"] - slack)
    return DeviceEval(**{**found, "agreement": verdict["agreement"]}, max_abs_diff_rel=verdict["max_abs_diff_rel"],
                      bounds=verdict["bounds"], passed=passed)


def _record(target: dict, device: Device, artifact: Artifact, settings: dict, raw: dict, used, wall_ms: float
            ) -> BenchRecord:
    """The record of what the runner measured; a result it cannot be made from is the runner's fault."""
    try:
        # The settings the runner says it ran with (a runner may change the warm-up, say) are the record's.
        ran = {key: raw.pop(key) for key in target["settings"] if key in raw}
        target = {**target, "settings": {**target["settings"], **ran}}
        latencies = raw.pop("latencies_ms", None)
        latency = Latency(**(summarize(latencies) if latencies else raw.pop("summary")))
        run_context = raw.pop("context", None)
        flags = context.flags(latency.model_dump(), run_context, settings["noisy_cv"])
        flags += ["sample_cap_reached"] * bool(raw.get("sample_cap_reached")) + ["emulated"] * bool(device.emulated)
        flags += ["partially_delegated"] * bool(raw.get("partially_delegated"))
        # A software rasteriser (lavapipe) the adapter observed is a CPU: its latencies are no GPU's.
        flags += ["software_gpu"] * bool((raw.get("gpu") or {}).get("software"))
        evaluation = raw.pop("evaluation", None)
        options = Options(requested=settings["options"].get(artifact.kind, {}), reported=raw.pop("options", {}),
                          honoured=raw.pop("honoured", []))
        return BenchRecord(
            **{**target, "artifact_sha256": artifact.sha256},
            runtime=raw.pop("runtime"),
            options=options,
            payload_sha256=raw.pop("payload_sha256", None),
            wall_ms=wall_ms, init_ms=raw.pop("init_ms", None), first_inference_ms=raw.pop("first_inference_ms", None),
            latency=latency, latencies_ms=latencies, flags=flags, context=run_context, energy=used,
            memory=raw.pop("memory", None), raw=raw,
            device_eval=device_eval(evaluation, artifact.lineage, {**options.requested, **options.reported})
            if evaluation else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # pydantic's ValidationError is a ValueError
        raise DeviceError(f"device {device.name!r}: runner {device.runner!r} returned a malformed result "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def run(device: Device, artifact_sidecar: Path, threads: int, bench: dict, output: Path,
        locks: Path | None = None, lock_wait_s: float = LOCK_WAIT_S) -> BenchRecord:
    """Measure and write one record; ``bench`` is the config's bench block with one option set's ``options``
    and its name as ``option_set``."""
    settings = measurement_settings(device, bench)
    target = dict(device=device.name, transport=device.transport, runner=device.runner, host=platform.node(),
                  artifact=str(Path(artifact_sidecar).parent), format="unknown",
                  option_set=bench["option_set"], threads=threads,
                  settings={key: settings[key] for key in RECORD_SETTINGS}, emulated=device.emulated)
    try:
        sidecar = read_sidecar(artifact_sidecar)
        target["format"] = sidecar.format
        if sidecar.status != "ok":
            # Nothing to measure; the report shows the step's own failure (or known limit) for this row.
            record = BenchRecord(**target, status="skipped", error=f"the artifact is {sidecar.status}: {sidecar.error}")
            record.save(output)
            return record
        artifact = Artifact.load(artifact_sidecar)
        raw, used, wall_ms = _measure(device, artifact, threads, settings, lock_wait_s, locks or lock_dir())
        record = _record(target, device, artifact, settings, raw, used, wall_ms)
    except Exception as exc:  # a device's fault, or a plugin's bug: either way the note names the cause
        tag = failure_tag(exc) if isinstance(exc, DeviceError) else "tool_error"
        if not isinstance(exc, (SlimlabError, OSError)):
            traceback.print_exc()  # into the job's log, for the plugin's author
        reason = str(exc) if isinstance(exc, SlimlabError) else f"{type(exc).__name__}: {exc}"
        BenchFailure(**target, tag=tag, reason=reason).save(failure_note_path(output))
        raise BenchFailed(f"bench of {artifact_sidecar} on device {device.name!r} failed ({tag}): {reason}",
                          tag) from None
    record.save(output)
    failure_note_path(output).unlink(missing_ok=True)
    return record

