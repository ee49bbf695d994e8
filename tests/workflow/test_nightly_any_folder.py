"""``slimlab nightly run`` in a folder made by ``slimlab init``: no Snakefile and no profiles/ there, so it runs
slimlab's own workflow and profile in it; a run whose Snakemake was killed is recovered by the next one; and any
failure of the nightly's own is one ``slimlab: error:`` line and exit 2, never a traceback and never 1 (1 means
a regression)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from slimlab import cli, nightly
from slimlab.errors import SlimlabError
from tests.support import REPO, slimlab

NIGHTLY = ("nightly", "run", "--rounds", "2")  # fewer rounds than a verdict needs: `unsure`, measured once more


def env(root: Path) -> dict:
    return {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "SLIMLAB_LOCK_DIR": str(root / "locks")}  # other checkouts' benchmarks on this host do not hold ours up


def latest_verdict(root: Path) -> dict:
    return json.loads(sorted((root / "results/nightly/runs").glob("*/verdict.json"))[-1].read_text())


def experiment(root: Path) -> Path:
    """``slimlab init``, then tiny data, a tiny tf_keras model and a tiny config, as a user would."""
    from sklearn.datasets import load_digits

    from slimlab.kit.training import keras

    done = slimlab("init", str(root), cwd=root.parent)
    assert done.returncode == 0, done.stderr
    assert not (root / "Snakefile").exists() and not (root / "profiles").exists()
    bunch = load_digits()
    keep = np.concatenate([np.flatnonzero(bunch.target == label)[:30] for label in range(10)])
    x, y = (bunch.images[keep] / 16.0).astype(np.float32), bunch.target[keep]
    np.savez(root / "data/train.npz", x=x, y=y)
    tfk = keras()
    tfk.utils.set_random_seed(0)
    model = tfk.Sequential([tfk.Input((8, 8, 1)), tfk.layers.Conv2D(4, 3, activation="relu"),
                            tfk.layers.Flatten(), tfk.layers.Dense(10)])
    model.compile(tfk.optimizers.Adam(0.01), tfk.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[..., None], y, epochs=3, batch_size=16, verbose=0)
    model.save(root / "models/model.keras")

    config = yaml.safe_load((root / "config/config.yaml").read_text())
    def imported():  # a new dict each time: slimlab refuses the YAML aliases a shared one is dumped as
        return {"import": {"path": "models/model.keras", "input_range": [0, 1]}}

    config.update(recipes={"baseline": [imported()], "int8": [imported(), "quantize.int8"]},
                  stage_defaults={"quantize.int8": {"representative_samples": 20}}, formats=["tflite"],
                  bench={"threads": [1], "runs": 50, "min_seconds": 0.1})
    (root / "config/config.yaml").write_text(yaml.safe_dump(config))
    inventory = yaml.safe_load((root / "devices/lab.yaml").read_text())
    inventory["devices"]["localhost"].update(workdir=str(root / "device"), python={"lock": str(root / "device.lock")})
    (root / "devices/lab.yaml").write_text(yaml.safe_dump(inventory))
    return root


def children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(kid) for kid in task.read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
def test_the_nightly_runs_in_a_folder_made_by_slimlab_init_and_recovers_a_killed_run(tmp_path):
    root = experiment(tmp_path / "my-experiment")

    first = slimlab(*NIGHTLY, cwd=root, env=env(root), timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr[-3000:]
    assert f"{REPO / 'profiles/nightly'}" in first.stderr  # slimlab's own profile, from its checkout
    assert {row["status"] for row in latest_verdict(root)["series"]} == {"new"}
    assert len(latest_verdict(root)["series"]) == 2

    accepted = slimlab("nightly", "accept", "--reason", "first", cwd=root, env=env(root))
    assert accepted.returncode == 0, accepted.stderr
    second = slimlab(*NIGHTLY, cwd=root, env=env(root), timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr[-3000:]
    series = latest_verdict(root)["series"]
    assert len(series) == 2 and all(row["status"] in ("ok", "unsure") and "latency_ratio" in row for row in series)

    # A nightly whose Snakemake is killed (kill -9) while the benchmarks run again.
    for folder in ("results/bench", "results/report", "results/logs/bench"):
        subprocess.run(["rm", "-rf", str(root / folder)], check=True)
    started = subprocess.Popen([sys.executable, "-m", "slimlab.cli", *NIGHTLY], cwd=root,
                               env={**os.environ, **env(root)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 120
    while not list((root / "results/logs/bench").rglob("*.log")) and time.monotonic() < deadline:
        time.sleep(0.1)
    snakemake = [pid for pid in children(started.pid) if "-m snakemake" in cmdline(pid)]
    assert snakemake, "the nightly ran no snakemake, or it ended before the benchmarks"
    os.kill(snakemake[0], signal.SIGKILL)
    _, killed_stderr = started.communicate(timeout=120)
    assert started.returncode == 2 and "Traceback" not in killed_stderr, killed_stderr[-3000:]
    assert killed_stderr.strip().splitlines()[-1].startswith("slimlab: error: ")
    assert any((root / ".snakemake/locks").iterdir()), "the killed run left no lock to recover"

    recovered = slimlab(*NIGHTLY, cwd=root, env=env(root), timeout=300)
    assert "Traceback" not in recovered.stderr, recovered.stderr[-3000:]
    assert recovered.returncode in (0, 1), recovered.stdout + recovered.stderr[-3000:]
    assert "recovered: removed the Snakemake lock" in recovered.stderr
    assert latest_verdict(root)["exit_code"] == recovered.returncode
    assert len(latest_verdict(root)["series"]) == 2


def test_a_folder_without_a_snakefile_runs_slimlabs_workflow_with_its_nightly_profile(tmp_path):
    command = nightly.snakemake_command(tmp_path, [])
    assert command[:3] == [sys.executable, "-m", "snakemake"]
    assert command[3:] == ["--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                           "--workflow-profile", str(REPO / "profiles/nightly")]
    # Arguments after -- replace the profile, never the workflow; a --snakefile of one's own wins.
    assert nightly.snakemake_command(tmp_path, ["--profile", "lab"])[3:] == [
        "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--profile", "lab"]
    assert nightly.snakemake_command(tmp_path, ["-s", "my.smk"])[3:] == ["-s", "my.smk"]
    # A folder with its own Snakefile and profile (a checkout) runs those.
    (tmp_path / "Snakefile").write_text("")
    (tmp_path / "profiles/nightly").mkdir(parents=True)
    assert nightly.snakemake_command(tmp_path, [])[3:] == ["--workflow-profile", "profiles/nightly"]


def test_without_slimlabs_checkout_beside_the_package_it_is_one_line(tmp_path, monkeypatch):
    import slimlab as package

    monkeypatch.setattr(package, "__file__", str(tmp_path / "site-packages/slimlab/__init__.py"))
    with pytest.raises(SlimlabError) as raised:
        nightly.snakemake_command(tmp_path, [])
    assert "\n" not in str(raised.value) and "make setup" in str(raised.value)


def test_an_unlock_that_fails_is_one_line(tmp_path):
    (tmp_path / ".snakemake/locks").mkdir(parents=True)
    (tmp_path / ".snakemake/locks/0.input.lock").write_text("x")
    failing = [sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"]
    with pytest.raises(SlimlabError, match=r"snakemake --unlock failed \(exit 3\).*: boom$"):
        nightly.recover_snakemake_lock(tmp_path, failing)


@pytest.mark.parametrize("trouble", ["old baseline", "corrupt baseline", "a bug"])
def test_a_failure_of_the_nightlys_own_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, trouble):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Snakefile").write_text("")  # never run: every trouble here comes first
    state = tmp_path / "results/nightly"
    state.mkdir(parents=True)
    if trouble == "old baseline":
        (state / "baseline.json").write_text(json.dumps({"accepted": "2025-01-01", "artifacts": {
            "a|ncnn": {"sidecar": "results/nightly/baseline/abc/artifact.json", "sha256": "abc"}}}))
    elif trouble == "corrupt baseline":
        (state / "baseline.json").write_text('{"accep')
    else:
        monkeypatch.setattr(nightly, "run", lambda *args, **kwargs: {}["no such key"])
    assert cli.main(list(NIGHTLY)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and err.startswith("slimlab: error: ")
    if trouble == "a bug":
        assert "KeyError" in err and "Traceback" in (state / "error.log").read_text()
    else:
        assert "baseline.json" in err and "slimlab nightly accept" in err
