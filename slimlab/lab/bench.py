"""One benchmark record: an artifact, on one device, at one thread count."""

import datetime as dt
import platform
from pathlib import Path

from slimlab import __version__, registry
from slimlab.artifacts import Artifact
from slimlab.atomic import write_json
from slimlab.lab.stats import summarize

SETTINGS = ("warmup", "runs", "min_seconds", "timeout_s")


def measurement_settings(device: dict, defaults: dict) -> dict:
    """The config's ``bench`` block, overridden key by key by the device's own entry."""
    return {key: device.get(key, defaults[key]) for key in (*SETTINGS, "threads")}


def run(device: dict, artifact_sidecar: Path, threads: int, defaults: dict, output: Path) -> dict:
    artifact = Artifact.load(artifact_sidecar)
    settings = measurement_settings(device, defaults)
    transport = registry.lookup(registry.transports(), device["transport"], "transport")(device)
    try:
        runner = registry.lookup(registry.runners(), device["runner"], "runner")(device, transport)
        started = dt.datetime.now(dt.timezone.utc)
        raw = runner.measure(artifact, threads, settings)
    finally:
        transport.close()
    record = {
        "slimlab_version": __version__,
        "status": "ok",
        "device": device["name"],
        "transport": device["transport"],
        "runner": device["runner"],
        "host": platform.node(),
        "started": started.isoformat(timespec="seconds"),
        "artifact": str(artifact.dir),
        "artifact_sha256": artifact.sha256,
        "format": artifact.meta["format"],
        "settings": {**{k: settings[k] for k in SETTINGS}, "threads": threads},
        "latency": summarize(raw["latencies_ms"]),
        "raw": raw,
    }
    write_json(output, record)
    return record
