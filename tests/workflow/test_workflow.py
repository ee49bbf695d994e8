"""The Snakemake workflow on profiles/ci: job counts, incremental reruns, a full tiny run."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.support import REPO

pytestmark = pytest.mark.slow
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/ci"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A checkout-like folder: the workflow linked in, config copied so tests may edit it."""
    root = tmp_path_factory.mktemp("workflow")
    for name in ("Snakefile", "workflow", "plugins", "profiles", "devices"):
        (root / name).symlink_to(REPO / name)
    shutil.copytree(REPO / "config", root / "config")
    cfg = yaml.safe_load((root / "config/config.yaml").read_text())
    # A small recipe set keeps this module fast; bench/compression.py's test runs them all.
    cfg["recipes"] = {
        "baseline": ["train"],
        "int8": ["train", "quantize.int8"],
        "int8_float_io": ["train", {"quantize.int8": {"io": "float"}}],
    }
    write_config(root, cfg)
    return root


def write_config(root: Path, cfg: dict) -> None:
    (root / "config/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def snakemake(root: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run([*SNAKEMAKE, *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}."""
    table = output.split("Job stats:", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def test_recipes_sharing_train_train_once(workdir):
    done = snakemake(workdir, "-n")
    assert done.returncode == 0, done.stderr
    counts = job_counts(done.stdout)
    assert counts["train"] == 1
    assert counts["compress"] == 2  # quantize.int8 with int8 and with float I/O
    # keras baseline -> tflite, ncnn, mnn; each int8 tflite -> mnn (ncnn takes no tflite: reported, not built)
    assert counts["convert"] == 5
    assert counts["bench_device_localhost"] == 7
    assert counts["report"] == 1


def test_full_tiny_run_reports_real_measurements(workdir):
    done = snakemake(workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    report = workdir / "results/report"
    table = pd.read_csv(report / "summary.csv")
    assert pd.read_parquet(report / "summary.parquet").shape == table.shape
    rows = table.set_index(["recipe", "format"])
    measured = rows[rows["status"] == "ok"]
    assert {("baseline", "tflite"), ("baseline", "ncnn"), ("baseline", "mnn"), ("int8", "tflite")} <= set(measured.index)
    assert (measured["device"] == "localhost").all()
    assert (measured["latency_median_ms"] > 0).all() and (measured["runs"] >= 10).all()
    # Every format's accuracy is measured in its own runtime; float conversions agree with Keras.
    baseline = measured.loc["baseline"]
    assert (baseline["accuracy"] > 0.3).all() and not baseline.loc[["ncnn", "mnn"], "parity_failed"].any()
    assert measured.loc[("int8", "tflite"), "size_bytes"] < 0.5 * measured.loc[("baseline", "tflite"), "size_bytes"]
    assert measured.loc[("baseline", "tflite"), "lineage"] == "train → convert.tflite"
    # What cannot be built or trusted is said, not hidden.
    assert rows.loc[("int8", "ncnn"), "status"] == "unsupported"
    assert rows.loc[("int8", "ncnn"), "error"] == "convert.ncnn does not take a tflite model"
    html = (report / "summary.html").read_text()
    assert "<table" in html and "data:image/png;base64," in html
    assert (report / "accuracy_vs_latency.png").read_bytes()[:4] == b"\x89PNG"


def test_nothing_changed_means_nothing_to_do(workdir):
    done = snakemake(workdir, "-n")
    assert done.returncode == 0, done.stderr
    assert "Nothing to be done" in done.stdout + done.stderr


def test_changing_a_quantize_param_reruns_only_its_descendants(workdir):
    cfg = yaml.safe_load((workdir / "config/config.yaml").read_text())
    cfg["recipes"]["int8"][1] = {"quantize.int8": {"representative_samples": 100, "io": "int8"}}
    write_config(workdir, cfg)
    done = snakemake(workdir, "-n")
    assert done.returncode == 0, done.stderr
    # quantize.int8 itself, its MNN conversion, and their two records
    assert job_counts(done.stdout) == {"compress": 1, "convert": 1, "bench_device_localhost": 2, "report": 1, "all": 1}


def test_bad_config_is_one_clear_line(workdir, tmp_path):
    cfg = yaml.safe_load((workdir / "config/config.yaml").read_text())
    cfg["bench"]["runz"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    done = snakemake(workdir, "-n", "--configfile", str(bad))
    assert done.returncode != 0
    assert "slimlab: error: config: bench: Additional properties are not allowed ('runz' was unexpected)" in done.stderr
    assert "Traceback" not in done.stderr
