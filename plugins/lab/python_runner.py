"""python: push slimlab's payload and the model's files, run the payload with the device's Python.

The payload (:mod:`slimlab.lab.payload`, one ``.pyz``) times every format that has a
runtime adapter with the same loop; the artifact's format picks the adapter, and the
option set's options for that format go along. The runner's block also pins the
payload to CPUs (``affinity``), cools the device down first (``cooldown``), points
the run context at a sysfs tree (``context_root``), names the device-side lock, and
with ``evaluate: N`` has the device run the first N test samples after timing, to
compare its outputs (and a classifier's accuracy) with the host's run of the same file.
"""

import hashlib
import json
import sys
from pathlib import Path

from pydantic import Field

from slimlab import data, formats, hookimpl, registry, tasks
from slimlab.atomic import npz_bytes, write_bytes
from slimlab.lab import payload
from slimlab.lab.devices import Settings
from slimlab.lab.runner import Runner
from slimlab.tasks import output_specs
from slimlab_payload.evaluate import INPUT_PREFIX, OUTPUT_PREFIX
from slimlab_payload.main import RESULT_PREFIX


class Cooldown(Settings):
    max_temp_c: float = Field(ge=-50, le=150)
    timeout_s: float = Field(120.0, ge=0, le=86400, description="then measure anyway, flagged cooldown_timed_out")
    poll_s: float = Field(2.0, gt=0, le=600)


class PythonSettings(Settings):
    interpreter: str | None = Field(None, min_length=1, description="the device's Python; default: slimlab's own "
                                    "on a local device, python3 on a remote one")
    affinity: list[int] | None = Field(None, min_length=1, description="CPU ids the payload and the runtime's "
                                       "threads are pinned to, e.g. the big cores; default: not pinned")
    cooldown: Cooldown | None = Field(None, description="before measuring, wait until the hottest thermal zone "
                                      "is below max_temp_c; absent = no wait")
    context_root: str = Field("/", min_length=1, description="prefix of the sysfs paths read for the run context")
    lock: str | None = Field(None, min_length=1, description="a file on the device that every payload flocks "
                             "while it measures, whichever host or checkout started it; default: the transport's")
    evaluate: int = Field(0, ge=0, description="after timing, run the first N test samples on the device and record "
                          "its accuracy and agreement with the host's logits (device_eval); 0 = off")


class PythonRunner(Runner):
    """Pushes slimlab's payload (with every format's device adapter) and the model, and runs it with the device's
    Python: one timing loop for every format. Extend it to change what it is asked (see the README's ``quick``)."""

    name = "python"
    Settings = PythonSettings

    @classmethod
    def honours(cls, fmt: str) -> frozenset[str]:
        found = registry.formats().get(fmt)
        return frozenset(found.Options.model_fields) if found and found.runtime_adapter else frozenset()

    def context_args(self) -> list[str]:
        """The payload's arguments for pinning, cooling down, locking and reading the run context."""
        s = self.settings
        args = ["--context-root", s.context_root, "--lock", s.lock or self.transport.device_lock]
        if s.affinity:
            args += ["--affinity", ",".join(map(str, s.affinity))]
        if s.cooldown:
            args += ["--cooldown-max-temp-c", str(s.cooldown.max_temp_c),
                     "--cooldown-timeout-s", str(s.cooldown.timeout_s), "--cooldown-poll-s", str(s.cooldown.poll_s)]
        return args

    def measure(self, artifact, threads: int, settings: dict) -> dict:
        samples = self.settings.evaluate
        extra = ["--evaluate", self.transport.push(evaluation_slice(artifact, samples))] if samples else []
        return self._payload(artifact, threads, settings, extra)

    def compare(self, candidate, baseline, threads: int, settings: dict, rounds: int) -> dict:
        """Both models in one payload process, timed in alternating rounds (see ``slimlab_payload.main``)."""
        if baseline.kind != candidate.kind:
            raise self.fail(f"cannot compare a {candidate.kind} model with a {baseline.kind} baseline")
        baseline_files = [self.transport.push(path) for path in baseline.paths]
        return self._payload(candidate, threads, settings, ["--baseline-model", *baseline_files, "--rounds", str(rounds)])

    def _payload(self, artifact, threads: int, settings: dict, extra: list[str]) -> dict:
        kind = artifact.kind
        fmt = formats.get(kind)
        if fmt.runtime_adapter is None:
            raise self.fail(f"the python runner has no runtime adapter for {kind} models")
        if kind not in self.device.runtimes:
            raise self.fail(f"has no {kind} runtime (its inventory entry lists runtimes: "
                            f"{', '.join(self.device.runtimes)})")
        script, script_sha256 = payload.payload()
        remote_script = self.transport.push(script)
        # Each file is pushed under its own sha256 name, so they are passed in order, main first.
        remote_files = [self.transport.push(path) for path in artifact.paths]
        # A remote device has its own Python; only a local one can share slimlab's.
        python = self.settings.interpreter or (sys.executable if self.transport.runs_on_host else "python3")
        cooldown = self.settings.cooldown
        argv = [
            python, remote_script, "--runtime", kind, "--model", *remote_files, "--threads", str(threads),
            "--options", json.dumps(settings["options"].get(kind, {})), "--warmup", str(settings["warmup"]),
            "--runs", str(settings["runs"]), "--min-seconds", str(settings["min_seconds"]),
            "--max-samples", str(settings["max_samples"]), "--lock-wait-s", str(settings["timeout_s"]),
            *self.context_args(), *extra,
        ]
        shape = fmt.device_input_shape(artifact.info.input_shape)
        if shape:
            argv += ["--input-shape", ",".join(map(str, shape))]
        # The device lock and a cooldown may use up their time before the measurement's own starts.
        timeout = 2 * settings["timeout_s"] + (cooldown.timeout_s if cooldown else 0)
        result = self.transport.run(argv, timeout=timeout)
        if result.returncode != 0:
            tail = result.stderr.strip().splitlines()[-1:] or ["no output"]
            raise self.fail(f"payload exited {result.returncode}: {tail[0]}")
        lines = [line for line in result.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
        if not lines:
            raise self.fail("payload printed no result line")
        try:
            found = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
        except json.JSONDecodeError as exc:
            raise self.fail(f"payload printed a result line that is not JSON ({exc})") from None
        if not isinstance(found, dict):
            raise self.fail("payload printed a result line that is not a JSON object")
        return {**found, "payload_sha256": script_sha256, "honoured": sorted(settings["options"].get(kind, {}))}


def evaluation_slice(artifact, samples: int) -> Path:
    """The first ``samples`` of the artifact's test split with the host's outputs for them (and, for a classifier,
    their labels and the logits' name), as an .npz written the same way every time (so it is pushed once per
    artifact and size), in the payload's cache."""
    import numpy as np

    spec = {key: value for key, value in artifact.info.dataset.items() if key != "sizes"}  # sizes: added by write()
    splits = data.load_spec(spec)
    outputs = artifact.test_outputs
    x = data.take(splits.x_test, slice(0, samples))
    inputs = {INPUT_PREFIX + name: value for name, value in x.items()} if isinstance(x, dict) else {"x": x}
    arrays = {**inputs, **{OUTPUT_PREFIX + name: value[:samples] for name, value in outputs.items()}}
    task, params = tasks.task(spec.get("task"))
    if task.stratify:  # class labels: the device also scores its top-1 on the logits the task reads
        arrays["classify"] = np.array(task.reads(params, output_specs(outputs))[0])
        if splits.labelled:
            arrays["y"] = splits.y_test[:samples]
    content = npz_bytes(arrays)
    path = payload.cache_dir() / "evaluate" / f"{hashlib.sha256(content).hexdigest()[:16]}.npz"
    if not path.is_file():
        write_bytes(path, content)
    return path


@hookimpl
def register_runners(register):
    register(PythonRunner)
