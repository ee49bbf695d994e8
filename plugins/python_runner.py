"""python: push slimlab's payload script and the model, run the payload with the device's Python."""

import json
import sys
from importlib import resources

from slimlab import hookimpl
from slimlab.errors import DeviceError

PAYLOADS = {"tflite": "bench_tflite.py"}


class PythonRunner:
    def __init__(self, device: dict, transport):
        self.device = device
        self.transport = transport

    def measure(self, artifact, threads: int, settings: dict) -> dict:
        script = PAYLOADS.get(artifact.kind)
        if script is None:
            raise DeviceError(f"device {self.device['name']!r}: the python runner cannot run {artifact.kind} models")
        with resources.as_file(resources.files("slimlab.payload") / script) as local_script:
            remote_script = self.transport.push(local_script)
        remote_model = self.transport.push(artifact.path)
        python = self.device.get("python") or sys.executable
        argv = [
            python, remote_script, "--model", remote_model, "--threads", str(threads),
            "--warmup", str(settings["warmup"]), "--runs", str(settings["runs"]),
            "--min-seconds", str(settings["min_seconds"]),
        ]
        result = self.transport.run(argv, timeout=settings["timeout_s"])
        if result.returncode != 0:
            tail = result.stderr.strip().splitlines()[-1:] or ["no output"]
            raise DeviceError(f"device {self.device['name']!r}: payload exited {result.returncode}: {tail[0]}")
        try:
            return json.loads(result.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            raise DeviceError(f"device {self.device['name']!r}: payload printed no JSON result") from None


@hookimpl
def register_runners(register):
    register("python", PythonRunner)
