"""python: push slimlab's payload and the model's files, run the payload with the device's Python.

One payload (``devices/payload/bench.py``) times every runtime it knows
(tflite, ncnn, mnn, onnx) with the same loop; the artifact's kind picks the
runtime, and the config's ``bench.options.<kind>`` goes along as its options.
The inventory's ``affinity``, ``cooldown`` and ``context_root`` go along too: the
payload pins itself, cools down and reads the run context on the device.
"""

import json
import sys
from importlib import resources

from slimlab import hookimpl
from slimlab.errors import DeviceError
from slimlab.lab.context import cooldown_settings
from slimlab.payload.bench import RESULT_PREFIX, RUNTIMES

PAYLOAD = "bench.py"


def ncnn_input_shape(artifact) -> list[int]:
    """An ncnn param file carries no input shape: the sidecar's NHWC shape, channel-first as convert.ncnn made it."""
    batch, *sample = artifact.meta["input_shape"]
    if len(sample) == 3:
        height, width, channels = sample
        return [batch, channels, height, width]
    return [batch, *sample]


def context_args(device: dict) -> list[str]:
    """The payload's arguments for pinning, cooling down and reading the run context."""
    args = ["--context-root", device.get("context_root", "/")]
    if device.get("affinity"):
        args += ["--affinity", ",".join(map(str, device["affinity"]))]
    cooldown = cooldown_settings(device)
    if cooldown:
        args += ["--cooldown-max-temp-c", str(cooldown["max_temp_c"]), "--cooldown-timeout-s",
                 str(cooldown["timeout_s"]), "--cooldown-poll-s", str(cooldown["poll_s"])]
    return args


class PythonRunner:
    def __init__(self, device: dict, transport):
        self.device = device
        self.transport = transport

    def fail(self, message: str) -> DeviceError:
        return DeviceError(f"device {self.device['name']!r}: {message}")

    def measure(self, artifact, threads: int, settings: dict) -> dict:
        kind = artifact.kind
        if kind not in RUNTIMES:
            raise self.fail(f"the python runner cannot run {kind} models (it runs {', '.join(RUNTIMES)})")
        if kind not in self.device["runtimes"]:
            raise self.fail(f"has no {kind} runtime (its inventory entry lists runtimes: {', '.join(self.device['runtimes'])})")
        with resources.as_file(resources.files("slimlab.payload") / PAYLOAD) as local_script:
            remote_script = self.transport.push(local_script)
        # Each file is pushed under its own sha256 name, so they are passed in order, main first.
        remote_files = [self.transport.push(path) for path in artifact.paths]
        # A remote device has its own Python; only a local one can share slimlab's.
        python = self.device.get("python") or (sys.executable if self.device["transport"] == "local" else "python3")
        # No options for this kind means the runtime's defaults (the payload echoes what they were).
        options = settings.get("options", {}).get(kind, {})
        argv = [
            python, remote_script, "--runtime", kind, "--model", *remote_files, "--threads", str(threads),
            "--options", json.dumps(options), "--warmup", str(settings["warmup"]), "--runs", str(settings["runs"]),
            "--min-seconds", str(settings["min_seconds"]), *context_args(self.device),
        ]
        if kind == "ncnn":
            argv += ["--input-shape", ",".join(map(str, ncnn_input_shape(artifact)))]
        # A cooldown may use up its whole timeout before the measurement's own time starts.
        cooldown = cooldown_settings(self.device)
        timeout = settings["timeout_s"] + (cooldown["timeout_s"] if cooldown else 0)
        result = self.transport.run(argv, timeout=timeout)
        if result.returncode != 0:
            tail = result.stderr.strip().splitlines()[-1:] or ["no output"]
            raise self.fail(f"payload exited {result.returncode}: {tail[0]}")
        lines = [line for line in result.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
        if not lines:
            raise self.fail("payload printed no result line")
        return json.loads(lines[-1].removeprefix(RESULT_PREFIX))


@hookimpl
def register_runners(register):
    register("python", PythonRunner)
