"""One benchmark record: an artifact, on one device, at one thread count.

A failed benchmark fails its job, so that the next run retries it, and writes
no record: the report can never read a dead board as a slow model. Instead a
failure note ``threads-<n>.failed.json`` is written atomically beside where
the record would be, with the failure's tag (``offline``, ``timeout`` or
``tool_error``) and reason; a later success removes it.

A record carries the run context the runner read on the device (``context``,
see :mod:`slimlab.lab.context`) and ``flags``, its warnings: ``noisy``,
``throttled``, ``cooldown_timed_out``.
"""

import datetime as dt
import platform
import time
from pathlib import Path

from slimlab import __version__, registry
from slimlab.artifacts import Artifact, failure
from slimlab.atomic import write_json
from slimlab.errors import DeviceError
from slimlab.lab import context, energy
from slimlab.lab.lock import device_lock, lock_dir
from slimlab.lab.stats import summarize
from slimlab.lab.transport import failure_tag

SETTINGS = ("warmup", "runs", "min_seconds", "timeout_s")
# How long a job waits for another run's benchmark on the same device.
LOCK_WAIT_S = 3600.0


class BenchFailed(DeviceError):
    """A benchmark job failed; ``tag`` says whether the device was offline, timed out or a tool failed."""

    def __init__(self, message: str, tag: str):
        super().__init__(message)
        self.tag = tag


def measurement_settings(device: dict, defaults: dict) -> dict:
    """The config's ``bench`` block, overridden key by key by the device's own entry.

    ``options`` holds the runtime options per format (XNNPACK, ncnn fp16, MNN precision, ...).
    ``noisy_cv`` is the latency CV above which a record is flagged ``noisy``.
    """
    return {
        **{key: device.get(key, defaults[key]) for key in (*SETTINGS, "threads")},
        "noisy_cv": device.get("noisy_cv", defaults.get("noisy_cv", context.NOISY_CV)),
        "options": defaults.get("options", {}),
    }


def failure_path(output: Path) -> Path:
    """Where a failed job leaves its note: ``threads-1.json`` -> ``threads-1.failed.json``."""
    output = Path(output)
    return output.with_name(f"{output.stem}.failed.json")


def _measure(device: dict, artifact: Artifact, threads: int, settings: dict) -> tuple[dict, dict]:
    """The runner's raw result and the energy used, sampled beside it and net of an idle baseline."""
    make_transport = registry.lookup(registry.transports(), device["transport"], "transport")
    probe_name = (device.get("energy") or {}).get("probe", "none")
    probe_class = registry.lookup(registry.energy_probes(), probe_name, "energy probe")
    # The probe reads while the runner runs: each gets its own connection.
    transport, probe_transport = make_transport(device), make_transport(device)
    try:
        runner = registry.lookup(registry.runners(), device["runner"], "runner")(device, transport)
        raw, used = energy.measure(probe_class(device, probe_transport),
                                   lambda: runner.measure(artifact, threads, settings))
        return raw, used.as_record()
    finally:
        transport.close()
        probe_transport.close()


def run(device: dict, artifact_sidecar: Path, threads: int, defaults: dict, output: Path,
        locks: Path | None = None, lock_wait_s: float = LOCK_WAIT_S) -> dict:
    conversion_error = failure(artifact_sidecar)
    if conversion_error is not None:
        # Nothing to measure; the report shows the conversion's own failure for this row.
        record = {"device": device["name"], "status": "skipped", "error": f"conversion failed: {conversion_error}"}
        write_json(output, record)
        return record
    artifact = Artifact.load(artifact_sidecar)
    settings = measurement_settings(device, defaults)
    started = dt.datetime.now(dt.timezone.utc)
    about = {
        "slimlab_version": __version__,
        "device": device["name"],
        "transport": device["transport"],
        "runner": device["runner"],
        "host": platform.node(),
        "started": started.isoformat(timespec="seconds"),
        "artifact": str(artifact.dir),
        "artifact_sha256": artifact.sha256,
        "format": artifact.meta["format"],
        "settings": {**{k: settings[k] for k in SETTINGS}, "threads": threads, "noisy_cv": settings["noisy_cv"],
                     "options": settings["options"].get(artifact.kind, {})},
    }
    try:
        with device_lock(device["name"], locks or lock_dir(), lock_wait_s):
            began = time.perf_counter()
            raw, used = _measure(device, artifact, threads, settings)
            wall_ms = (time.perf_counter() - began) * 1e3
    except DeviceError as exc:
        tag = failure_tag(exc)
        write_json(failure_path(output), {**about, "status": "failed", "tag": tag, "reason": str(exc)})
        raise BenchFailed(f"bench of {artifact.dir} on device {device['name']!r} failed ({tag}): {exc}", tag) from None
    # Push, run and pull, without waiting for the lock: what the device cost beyond the payload's timings.
    # Native tools report only a summary; the python runner keeps every latency.
    latency = summarize(raw["latencies_ms"]) if raw.get("latencies_ms") else raw["summary"]
    # The payload's context moves up beside the latency it explains; native tools read none.
    run_context = raw.pop("context", None)
    record = {**about, "status": "ok", "wall_ms": wall_ms, "latency": latency,
              "flags": context.flags(latency, run_context, settings["noisy_cv"]), "context": run_context,
              "energy": used, "raw": raw}
    write_json(output, record)
    failure_path(output).unlink(missing_ok=True)
    return record
