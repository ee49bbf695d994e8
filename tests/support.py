"""Shared test helpers.

Lab tests need root, network namespaces, sshd or adb. On a laptop without them
they skip with the reason; in CI ``SLIMLAB_REQUIRE_LAB=1`` turns the skip into
a failure so that a missing peer can never pass silently.
"""

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from slimlab import config
from slimlab.lab.devices import Device, device
from slimlab.option_sets import DEFAULT

REPO = Path(__file__).resolve().parents[1]
# A user plugin file with one stage named ``{name}``, as a test writes it into a plugins folder.
STAGE_PLUGIN = '''
from slimlab.api import Stage, hookimpl


def identity(artifact, params, ctx):
    """Return the input model unchanged."""
    return artifact.model


@hookimpl
def register_stages(register):
    register(Stage("{name}", identity))
'''
# The small data set unit tests train on (scikit-learn's 8x8 digits).
DIGITS = {"name": "digits", "seed": 7, "val_fraction": 0.1, "test_fraction": 0.2}
DEFAULT_CONFIG = yaml.safe_load((REPO / "config/config.yaml").read_text())
LAB_REQUIRED = os.environ.get("SLIMLAB_REQUIRE_LAB") == "1"


def lab_unavailable(reason: str) -> None:
    """Skip (or, in CI, fail) a test whose real peer cannot be provided here."""
    if LAB_REQUIRED:
        pytest.fail(f"lab requirement missing (SLIMLAB_REQUIRE_LAB=1): {reason}")
    pytest.skip(reason)


def slimlab(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the ``slimlab`` CLI in a fresh interpreter, as the workflow does."""
    return subprocess.run(
        [sys.executable, "-m", "slimlab.cli", *args],
        cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout,
    )


def lab_device(name: str, entry: dict) -> Device:
    """A typed device from an inventory entry: the schema's defaults filled in, every plugin block checked."""
    inventory = {"devices": {name: copy.deepcopy(entry)}}
    config.validate(inventory, "devices.schema.yaml", "test inventory")
    return device(name, inventory["devices"][name], "test inventory")


def local_device(workdir: Path, name: str = "here", **entry) -> Device:
    """This host as a device (local transport, python runner); ``entry`` adds or replaces inventory keys."""
    return lab_device(name, {"transport": "local", "runner": "python", "workdir": str(workdir), **entry})


def validated_bench(**bench) -> dict:
    """The default config's ``bench`` block replaced by ``bench``, validated, with the schema's defaults."""
    cfg = {**copy.deepcopy(DEFAULT_CONFIG), "bench": bench}
    config.validate(cfg, "config.schema.yaml", "config")
    return cfg["bench"]


def bench_block(*, warmup: int = 2, runs: int = 25, min_seconds: float = 0.0, timeout_s: float = 120,
                options: dict | None = None, option_set: str = DEFAULT, max_samples: int = 100_000,
                noisy_cv: float = 0.1) -> dict:
    """The config's ``bench`` block for one option set, as the workflow hands it to ``slimlab bench``."""
    return {"threads": [1], "warmup": warmup, "runs": runs, "min_seconds": min_seconds, "max_samples": max_samples,
            "timeout_s": timeout_s, "noisy_cv": noisy_cv, "options": options or {}, "option_set": option_set}


def payload_pids(marker: str | os.PathLike) -> list[int]:
    """The running payloads whose command line names ``marker`` (e.g. their device's workdir): the local device
    and the virtual boards share this host's pid namespace."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # exited while we looked
        if b"--min-seconds" in argv and any(os.fsencode(marker) in arg for arg in argv):
            found.append(int(cmdline.parent.name))
    return found


def wait_for_payload(marker: str | os.PathLike, timeout: float = 20) -> list[int]:
    """Block until a payload naming ``marker`` runs; its pids."""
    deadline = time.monotonic() + timeout
    while not (pids := payload_pids(marker)):
        if time.monotonic() > deadline:
            raise AssertionError(f"the payload never started in {marker}")
        time.sleep(0.05)
    return pids


def bench_job(inventory: Path, device: str, artifact, out: Path, settings: dict, cwd: Path = REPO,
              env: dict | None = None) -> subprocess.Popen:
    """``slimlab bench`` as the workflow runs it, one process per job; ``env`` replaces the environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "slimlab.cli", "bench", "--inventory", str(inventory), "--device", device,
         "--artifact", str(artifact.sidecar), "--threads", "1", "--settings", json.dumps(settings),
         "--output", str(out)],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


UNSAFE_WORKDIRS = ["world-writable", "someone else's"]


def unsafe_workdir(folder: Path, unsafe: str) -> Path:
    """A new work folder that others may write to, or that another user (nobody) owns: one of UNSAFE_WORKDIRS."""
    folder.mkdir()
    if unsafe == "world-writable":
        folder.chmod(0o777)
    elif os.geteuid() == 0:
        os.chown(folder, 65534, 65534)
    else:
        pytest.skip("giving a folder to another user needs root")
    return folder
