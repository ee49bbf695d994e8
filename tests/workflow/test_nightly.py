"""slimlab nightly end to end: first run, accepted baseline, A/A, a killed run, two nightlies at once."""

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.support import REPO

pytestmark = pytest.mark.slow
NIGHTLY = [sys.executable, "-m", "slimlab.cli", "nightly", "run", "--rounds", "6", "--",
           "--workflow-profile", "profiles/ci"]


def env() -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nightly")
    for name in ("Snakefile", "workflow", "profiles"):
        (root / name).symlink_to(REPO / name)
    (root / "config").mkdir()
    (root / "devices.yaml").write_text(yaml.safe_dump({"devices": {"here": {
        "transport": "local", "runner": "python", "runtimes": ["tflite"], "workdir": str(root / "device")}}}))
    (root / "config/config.yaml").write_text(yaml.safe_dump({
        "dataset": {"name": "digits"},
        "recipes": {"baseline": ["train"], "int8": ["train", "quantize.int8"]},
        "formats": ["tflite"],
        "lab": {"inventory": "devices.yaml", "devices": ["here"]},
        "bench": {"threads": [1], "runs": 200, "min_seconds": 0.3},
    }))
    return root


def nightly(root: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(NIGHTLY, cwd=root, env=env(), capture_output=True, text=True, timeout=timeout)


def latest_verdict(root: Path) -> dict:
    return json.loads(sorted((root / "results/nightly/runs").glob("*/verdict.json"))[-1].read_text())


def test_first_run_has_no_baseline_then_unchanged_artifacts_are_ok(workdir):
    first = nightly(workdir)
    assert first.returncode == 0, first.stderr[-2000:]
    assert {row["status"] for row in latest_verdict(workdir)["series"]} == {"new"}
    accepted = subprocess.run([sys.executable, "-m", "slimlab.cli", "nightly", "accept", "--reason", "first"],
                              cwd=workdir, env=env(), capture_output=True, text=True)
    assert accepted.returncode == 0, accepted.stderr
    audit = [json.loads(line) for line in (workdir / "results/nightly/audit.log").read_text().splitlines()]
    assert audit[-1]["why"] == "first" and audit[-1]["artifacts"] == 2
    # Unchanged artifacts should never be a regression or an improvement; a series may come out unsure, be measured
    # again with twice the rounds, and stay unsure: that is what the verdict is for. On a shared 2-core host the
    # nightly still cries wolf now and then (two interpreter instances of one file differ persistently: issue 25,
    # open), so up to three nights, and one must be clean.
    for _ in range(3):
        second = nightly(workdir)
        series = latest_verdict(workdir)["series"]
        if second.returncode == 0 and {row["status"] for row in series} <= {"ok", "unsure"}:
            break
    assert second.returncode == 0, second.stdout + second.stderr[-2000:]
    assert len(series) == 2 and {row["status"] for row in series} <= {"ok", "unsure"}, series
    for row in series:
        samples = json.loads(Path(workdir / row["samples"]).read_text())
        # an unsure first answer is measured again with twice the rounds, and may then be ok
        assert len(samples["raw"]["rounds"]) in (6, 12) and 0.8 < row["latency_ratio"] < 1.25  # µs models
        assert Path(workdir / row["record"]).is_file()
    assert re.search(r"\| (ok|unsure) \| baseline \| tflite \| here \|", second.stdout), second.stdout


def test_the_history_keeps_every_run_with_its_metadata(workdir):
    from slimlab.lab.history import History

    runs = History(workdir / "results/nightly/history").read()
    assert runs["run_run"].nunique() >= 2 and len(runs) == 2 * runs["run_run"].nunique()  # A/A nights: 1 to 3
    assert {"new", "ok"} & set(runs["status"]) and runs["run_config_sha256"].notna().all()
    last = runs[runs["run_run"] == runs["run_run"].max()]
    assert set(last["status"]) <= {"ok", "unsure"}


def test_a_killed_run_is_recovered_by_the_next_nightly(workdir):
    """SIGKILL snakemake mid-bench; the nightly clears its lock (and says so) and finishes consistently."""
    for folder in ("results/bench", "results/report", "results/logs/bench"):
        shutil.rmtree(workdir / folder, ignore_errors=True)
    started = subprocess.Popen([sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/ci"],
                               cwd=workdir, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((workdir / "results/logs/bench").rglob("*.log")) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(started.pid, signal.SIGKILL)
    started.wait()
    assert any((workdir / ".snakemake/locks").iterdir()), "the killed run left no lock to recover"
    done = nightly(workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "recovered: removed the Snakemake lock" in done.stderr
    table = pd.read_csv(workdir / "results/report/summary.csv")
    assert len(table) == 2 and (table["status"] == "ok").all()
    assert not table.duplicated(["recipe", "format", "device", "option_set", "threads"]).any()


def test_a_second_nightly_at_the_same_time_refuses(workdir):
    first = subprocess.Popen(NIGHTLY, cwd=workdir, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 60
    lock = workdir / "results/nightly/nightly.lock"
    while not (lock.is_file() and f"pid {first.pid} " in lock.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    second = nightly(workdir)
    first.communicate(timeout=600)
    assert second.returncode == 2
    assert f"another nightly is running here: pid {first.pid}" in second.stderr
    assert first.returncode == 0


def test_energy_is_compared_like_latency(workdir, tmp_path):
    """A device whose meter follows real CPU use, and tonight's models six times wider than the accepted ones: more
    CPU per inference, so more energy per inference. (The energy rounds run each side in a payload of its own, so a
    device that slows one side inside one process, as the latency tests do, would not show in them.)"""
    from tests.sysfs import CpuDrivenModel, RaplZone

    zone = RaplZone(tmp_path / "sysfs", "intel-rapl:0", "package-0", share=1.0)
    inventory = yaml.safe_load((workdir / "devices.yaml").read_text())
    inventory["devices"]["metered"] = {**copy.deepcopy(inventory["devices"]["here"]),
                                       "energy": {"probe": "rapl", "root": str(tmp_path / "sysfs"),
                                                  "interval_s": 0.02, "settle_s": 0.3}}
    (workdir / "devices.yaml").write_text(yaml.safe_dump(inventory))
    config = yaml.safe_load((workdir / "config/config.yaml").read_text())
    config["lab"]["devices"] = ["metered"]
    config["stage_defaults"] = {"train": {"model_params": {"width": 96, "dense": 256}}}
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(config))
    # The test meter follows the whole machine's CPU use: a night in which other processes made the idle baseline
    # busier than the benchmark says "energy not compared" (net energy not positive). Up to three nights.
    for _ in range(3):
        with CpuDrivenModel([zone], idle_w=2.0, busy_w=10.0):
            done = nightly(workdir)
        assert done.returncode == 1, done.stdout + done.stderr[-2000:]
        series = latest_verdict(workdir)["series"]
        if all("energy_ratio" in row for row in series):
            break
    for row in series:
        assert row["status"] == "regression" and row["energy_ratio"] > 1.2, row
        assert "energy" in row["reason"]
