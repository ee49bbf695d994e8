"""The Snakemake workflow on profiles/ci: job counts, incremental reruns, a full tiny run."""

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from slimlab.records import BenchRecord, load
from tests.support import REPO

pytestmark = pytest.mark.slow
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/ci"]
# A base option every ncnn record must show, and one set per runtime knob, layered over it.
BASE_OPTIONS = {"ncnn": {"lightmode": False}}
OPTION_SETS = {
    "default": {},
    "no-xnnpack": {"tflite": {"xnnpack": False}},
    "ncnn-fp32": {"ncnn": {"use_fp16_storage": False, "use_fp16_packed": False, "use_fp16_arithmetic": False}},
}


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
    cfg["bench"].update(options=BASE_OPTIONS, option_sets=OPTION_SETS)
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


def bench_jobs(output: str) -> Counter:
    """The bench jobs of a dry run as {(option set, last step of the artifact): count}."""
    outputs = re.finditer(r"^\s*output: results/bench/localhost/(?:\S+/)?([^/\s]+)/([^/\s]+)/threads-\d+\.json$",
                          output, re.M)
    return Counter((m[2], m[1].split("@")[0]) for m in outputs)


def records(root: Path) -> list[tuple[str, BenchRecord]]:
    """Every bench record of a run, with the option set whose folder it sits in."""
    return [(path.parent.name, load(BenchRecord, path, "bench record"))
            for path in sorted((root / "results/bench/localhost").rglob("threads-*.json"))
            if not path.name.endswith(".failed.json")]


def test_recipes_sharing_train_train_once(workdir):
    done = snakemake(workdir, "-n")
    assert done.returncode == 0, done.stderr
    assert job_counts(done.stdout) == {
        "train": 1,  # one train step shared by the three recipes
        "compress": 2,  # quantize.int8 with int8 and with float I/O
        # keras baseline -> tflite, ncnn, mnn; an int8 tflite goes nowhere: neither MNN 3.6.1 nor tf2onnx (ncnn's
        # path) converts a quantized TFLite model, and the plan says so before anything runs
        "convert": 3,
        # default: 3 tflite, 1 ncnn, 1 mnn; a set re-times only the format it names (3 tflite, 1 ncnn); 1 thread
        "bench_device_localhost": 5 + 3 + 1,
        "deployables": 1,  # the list of deployables the report reads
        "report": 1,
        "steps_succeeded": 1,  # fails the run, after the report, if a recipe step failed
        "all": 1,
    }
    assert bench_jobs(done.stdout) == {
        ("default", "convert.tflite"): 1, ("default", "quantize.int8"): 2,
        ("default", "convert.ncnn"): 1, ("default", "convert.mnn"): 1,
        ("no-xnnpack", "convert.tflite"): 1, ("no-xnnpack", "quantize.int8"): 2,
        ("ncnn-fp32", "convert.ncnn"): 1,
    }


def test_full_tiny_run_reports_real_measurements(workdir):
    done = snakemake(workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    report = workdir / "results/report"
    table = pd.read_csv(report / "summary.csv")
    assert pd.read_parquet(report / "summary.parquet").shape == table.shape
    rows = table.set_index(["recipe", "format"])
    # One row per recipe and format under the default options; the sweep is checked below.
    measured = rows[(rows["status"] == "ok") & (rows["option_set"] == "default")]
    assert {("baseline", "tflite"), ("baseline", "ncnn"), ("baseline", "mnn"), ("int8", "tflite")} <= set(measured.index)
    assert (measured["device"] == "localhost").all()
    assert (measured["latency_median_ms"] > 0).all() and (measured["runs"] >= 10).all()
    # Every format's accuracy is measured in its own runtime; float conversions agree with Keras.
    baseline = measured.loc["baseline"]
    assert (baseline["accuracy"] > 0.3).all() and not baseline.loc[["ncnn", "mnn"], "parity_failed"].any()
    assert measured.loc[("int8", "tflite"), "size_bytes"] < 0.5 * measured.loc[("baseline", "tflite"), "size_bytes"]
    # Each step with the params that differ from its defaults (profiles/ci's tiny training budget).
    train = "train(batch_size=128, epochs=1)"
    assert measured.loc[("baseline", "tflite"), "steps"] == f"{train} → convert.tflite"
    assert measured.loc[("int8_float_io", "tflite"), "steps"] == f"{train} → quantize.int8(io=float)"
    # What cannot be built or trusted is said, not hidden.
    assert rows.loc[("int8", "ncnn"), "status"] == "unsupported"
    assert rows.loc[("int8", "ncnn"), "error"].startswith("convert.ncnn: a quantized TFLite model")
    assert rows.loc[("int8", "mnn"), "status"] == "unsupported"
    html = (report / "summary.html").read_text()
    assert "<table" in html and "<svg" in html  # the page carries its plots inline: one self-contained file
    assert (report / "accuracy_vs_latency.png").read_bytes()[:4] == b"\x89PNG"


def test_each_record_ran_with_its_option_set_over_the_base_options(workdir):
    measured = [(option_set, record) for option_set, record in records(workdir) if record.status == "ok"]
    assert {option_set for option_set, _ in measured} == set(OPTION_SETS)
    for option_set, record in measured:
        assert record.option_set == option_set, record.artifact  # the record names the set it sits under
        kind = record.format
        asked = {**BASE_OPTIONS.get(kind, {}), **OPTION_SETS[option_set].get(kind, {})}
        assert record.options.requested == asked, record.artifact
        assert record.options.honoured == sorted(asked), record.artifact
        # options.reported is what the runtime reports after loading, not what was asked for.
        assert asked.items() <= record.options.reported.items(), (option_set, record.artifact)
        if kind == "tflite":
            assert (record.raw["delegated_nodes"] == 0) is (option_set == "no-xnnpack"), record.artifact


def test_report_names_the_option_set_and_the_fastest_setting(workdir):
    report = workdir / "results/report"
    table = pd.read_csv(report / "summary.csv")
    measured = table[table["status"] == "ok"]
    sets = measured.groupby(["recipe", "format"])["option_set"].agg(set)
    assert sets[("baseline", "tflite")] == {"default", "no-xnnpack"}
    assert sets[("baseline", "ncnn")] == {"default", "ncnn-fp32"}
    assert sets[("baseline", "mnn")] == {"default"}
    assert measured["options"].map(json.loads).map(bool).all()
    fastest = pd.read_csv(report / "fastest.csv").set_index(["recipe", "format", "device"])
    assert fastest.index.is_unique
    assert set(fastest.index) == set(measured.set_index(["recipe", "format", "device"]).index)
    lowest = measured.groupby(["recipe", "format", "device"])["latency_median_ms"].min()
    assert (fastest["latency_median_ms"] == lowest.reindex(fastest.index)).all()
    assert (fastest["speedup_vs_default"] >= 1).all()
    assert "Fastest setting per artifact and device" in (report / "summary.html").read_text()


def test_nothing_changed_means_nothing_to_do(workdir):
    done = snakemake(workdir, "-n")
    assert done.returncode == 0, done.stderr
    assert "Nothing to be done" in done.stdout + done.stderr


def test_a_new_ncnn_option_set_times_only_the_ncnn_models(workdir):
    original = (workdir / "config/config.yaml").read_text()
    cfg = yaml.safe_load(original)
    cfg["bench"]["option_sets"]["no-winograd"] = {"ncnn": {"use_winograd_convolution": False}}
    write_config(workdir, cfg)
    try:
        done = snakemake(workdir, "-n")
    finally:
        (workdir / "config/config.yaml").write_text(original)
    assert done.returncode == 0, done.stderr
    assert bench_jobs(done.stdout) == {("no-winograd", "convert.ncnn"): 1}
    assert job_counts(done.stdout) == {
        "bench_device_localhost": 1,  # the baseline's ncnn model under the new set
        "deployables": 1,  # its list now names the new record
        "report": 1,
        "steps_succeeded": 1,  # checks the new report
        "all": 1,
    }


def test_changing_a_quantize_param_reruns_only_its_descendants(workdir):
    cfg = yaml.safe_load((workdir / "config/config.yaml").read_text())
    cfg["recipes"]["int8"][1] = {"quantize.int8": {"representative_samples": 100, "io": "int8"}}
    write_config(workdir, cfg)
    done = snakemake(workdir, "-n")
    assert done.returncode == 0, done.stderr
    assert job_counts(done.stdout) == {
        "compress": 1,  # quantize.int8 itself
        "bench_device_localhost": 2,  # its records: tflite with and without XNNPACK
        "deployables": 1,  # the int8 recipe's artifacts moved to new paths
        "report": 1,
        "steps_succeeded": 1,
        "all": 1,
    }


@pytest.mark.parametrize("bench, expected", [
    ({"runz": 3}, "config: bench: Additional properties are not allowed ('runz' was unexpected)"),
    ({"option_sets": {"default": {}, "fp16": {"ncnn": {"use_fp17_storage": True}}}},
     "config: bench.option_sets.fp16.ncnn: Additional properties are not allowed ('use_fp17_storage' was unexpected)"),
])
def test_bad_config_is_one_clear_line(workdir, tmp_path, bench, expected):
    cfg = yaml.safe_load((workdir / "config/config.yaml").read_text())
    cfg["bench"].update(bench)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    done = snakemake(workdir, "-n", "--configfile", str(bad))
    assert done.returncode != 0
    assert f"slimlab: error: {expected}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("experiment", ["mobilenet.yaml", "transformer.yaml"])
def test_a_replacing_configfile_is_the_whole_config_of_every_job(workdir, experiment):
    """`--configfile X --replace-workflow-config` beside config/config.yaml: the list of deployables holds X's
    recipes only. (A `run:` rule ran in a child snakemake that merged config/config.yaml back in, and failed.)"""
    done = snakemake(workdir, "--configfile", f"config/{experiment}", "--replace-workflow-config",
                     "results/report/deployables.json", "--forcerun", "deployables")
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads((workdir / "results/report/deployables.json").read_text())["deployables"]
    wanted = yaml.safe_load((REPO / "config" / experiment).read_text())["recipes"]
    assert {item["recipe"] for item in found} == set(wanted)
