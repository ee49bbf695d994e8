"""A failed step is retried once the environment it failed in has changed, and not before.

A user stage imports a module no distribution provides, so its step fails and the
conversion below it is skipped. A plain rerun leaves both alone. Installing the module
(a distribution, dist-info and all, on ``PYTHONPATH``) changes the environment: the next
run retries the step, and the conversion below it, and both succeed.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import REPO

pytestmark = pytest.mark.slow

STAGE = '''"""mine.needs_dep: a stage that needs a package that may not be installed."""

from slimlab import hookimpl
from slimlab.stages import Stage


def needs_dep(artifact, params, ctx):
    """Scale the last layer's kernel by the package's factor."""
    import slimlab_test_dep

    model = artifact.model
    kernel, *rest = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel * slimlab_test_dep.FACTOR, *rest])
    return model


@hookimpl
def register_stages(register):
    register(Stage("mine.needs_dep", needs_dep))
'''
TRAIN = {"train": {"epochs": 1, "model_params": {"width": 4, "dense": 8}}}


def snakemake(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(root / "site")}
    return subprocess.run([sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/ci", *args],
                          cwd=root, env=env, capture_output=True, text=True, timeout=900)


def jobs(output: str) -> dict[str, int]:
    table = output.split("Job stats:", 1)[1] if "Job stats:" in output else ""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def sidecars(root: Path) -> dict[str, dict]:
    """Every artifact's sidecar, by its last step, e.g. ``mine.needs_dep/convert.tflite``; and ``folder``: the
    folder of mine.needs_dep's artifact."""
    found = {}
    for path in root.glob("results/artifacts/**/artifact.json"):
        folder = path.parent.relative_to(root)
        key = str(folder.relative_to(folder.parent.parent)) if folder.parent.name == "mine.needs_dep" else folder.name
        found[key] = json.loads(path.read_text())
        if folder.name == "mine.needs_dep":
            found["folder"] = str(folder)
    return found


def install_dependency(site: Path) -> None:
    """What pip would leave: the module and its dist-info."""
    (site / "slimlab_test_dep.py").write_text("FACTOR = 2.0\n")
    info = site / "slimlab_test_dep-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: slimlab-test-dep\nVersion: 1.0\n")
    (info / "RECORD").write_text("")


@pytest.fixture(scope="module")
def failed(tmp_path_factory) -> Path:
    """A checkout whose `needy` recipe fails at mine.needs_dep: train -> mine.needs_dep -> tflite."""
    root = tmp_path_factory.mktemp("retry")
    for name in ("Snakefile", "workflow", "profiles", "devices"):
        (root / name).symlink_to(REPO / name)
    (root / "site").mkdir()  # on PYTHONPATH from the start: installing into it is the only change
    (root / "plugins").mkdir()
    (root / "plugins/mine.py").write_text(STAGE)
    (root / "config").mkdir()
    (root / "config/config.yaml").write_text(yaml.safe_dump({
        "dataset": {"name": "digits"},
        "recipes": {"needy": [TRAIN, "mine.needs_dep"]},
        "formats": ["tflite"],
        "lab": {"inventory": "devices/lab.yaml", "devices": []},
    }))
    done = snakemake(root)
    assert done.returncode != 0, "the run should fail: a recipe step failed"
    assert "1 recipe step(s) failed" in done.stderr, done.stderr[-3000:]
    (root / "first-run.stderr").write_text(done.stderr)
    return root


def test_a_failed_step_is_recorded_with_its_environment_and_how_to_retry_it(failed):
    found = sidecars(failed)
    step = found["mine.needs_dep"]
    assert step["status"] == "failed" and "No module named 'slimlab_test_dep'" in step["error"]
    assert re.fullmatch(r"[0-9a-f]{16}", step["environment"])
    below = found["mine.needs_dep/convert.tflite"]
    assert below["status"] == "failed" and below["error"].startswith("skipped:")
    assert found[next(key for key in found if key.startswith("train"))]["status"] == "ok"
    # The failure line says how to retry the step by hand.
    stderr = (failed / "first-run.stderr").read_text()
    assert f"slimlab: step failed: {found['folder']}: " in stderr
    assert f"after any other fix, rerun with --forcerun {found['folder']}/artifact.json" in stderr


def test_a_plain_rerun_leaves_a_failure_in_an_unchanged_environment_alone(failed):
    paths = list(failed.glob("results/artifacts/**/artifact.json"))
    before = {p: p.stat().st_mtime_ns for p in paths}
    done = snakemake(failed, "-n")
    assert done.returncode == 0, done.stderr[-3000:]
    # Only the check that fails the run while a step has failed; no artifact is rebuilt.
    assert jobs(done.stdout) == {"steps_succeeded": 1, "all": 1}, done.stdout[-3000:]
    assert "retrying" not in done.stderr
    assert {p: p.stat().st_mtime_ns for p in paths} == before


def test_forcerun_retries_a_failure_by_hand_with_the_steps_below_it(failed):
    """What the failure line says to do after a fix slimlab cannot see: the step and those below it rerun."""
    folder = sidecars(failed)["folder"]
    before = (failed / folder / "artifact.json").stat().st_mtime_ns
    done = snakemake(failed, "--forcerun", f"{folder}/artifact.json")
    assert done.returncode != 0  # it fails again: nothing was fixed
    ran = jobs(done.stderr)
    assert (ran.get("train"), ran.get("compress"), ran.get("convert"), ran.get("report")) == (None, 1, 1, 1), ran
    assert (failed / folder / "artifact.json").stat().st_mtime_ns > before
    assert "slimlab: retrying" not in done.stderr


def test_installing_the_missing_package_retries_the_step_and_what_lies_below(failed):
    folder = sidecars(failed)["folder"]
    install_dependency(failed / "site")
    paths = list(failed.glob("results/**/*.*"))
    before = {p: p.stat().st_mtime_ns for p in paths}
    planned = snakemake(failed, "-n")
    assert f"slimlab: would retry (a dry run changes nothing) {folder}" in planned.stderr
    assert {p: p.stat().st_mtime_ns for p in paths} == before  # a dry run says so and touches nothing
    done = snakemake(failed)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"slimlab: retrying {folder} (failed in another environment: " in done.stderr
    assert done.stderr.count("slimlab: retrying") == 1  # the skipped conversion follows it
    ran = jobs(done.stderr)
    assert (ran.get("train"), ran.get("compress"), ran.get("convert")) == (None, 1, 1), ran
    found = sidecars(failed)
    assert found["mine.needs_dep"]["status"] == "ok" and found["mine.needs_dep"]["environment"] is None
    assert found["mine.needs_dep/convert.tflite"]["status"] == "ok"
    assert "Nothing to be done" in snakemake(failed, "-n").stdout


def test_only_failures_from_another_environment_are_stale(tmp_path):
    from slimlab import artifacts, identity

    def write(folder: str, status: str = "failed", error: str | None = "boom", **extra) -> Path:
        path = tmp_path / folder / "artifact.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"status": status, "error": error, **extra}))
        return path

    here = identity.environment()
    stale = write("a", environment="0" * 16)
    below = write("a/b", error="skipped: boom", environment="0" * 16)  # forgotten with the step above it
    unrecorded = write("c")  # written before failed sidecars recorded their environment
    same = write("d", environment=here)
    unsupported = write("e", status="unsupported", error="no int8", environment="0" * 16)
    ok = write("f", status="ok", error=None)
    paths = [stale, below, unrecorded, same, unsupported, ok, tmp_path / "missing/artifact.json"]
    found = artifacts.stale_failures(paths)
    assert found == [(stale, "boom"), (unrecorded, "boom"), (unsupported, "no int8")]
    artifacts.forget(found, paths)
    assert [p.exists() for p in paths] == [False, False, False, True, False, True, False]
