"""The emulated arm64 board (`slimlab board`): a small config measured on two of them, a Pi 4-like cortex-a72 and a
modern core (max,sme=off), through the real workflow, ssh transport and python runner.

What must hold: every record ran on aarch64 under the board's qemu core, is marked emulated, and carries the board's
own run of the whole test split; the board agrees with the host within the parity bar, or differs for a reason the
record shows (ncnn's fp16 arithmetic on a core with asimdhp) that an option set removes. Down leaves nothing behind.
"""

import copy
import os
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from slimlab.artifacts import read_sidecar
from slimlab.parity_bounds import FLOAT_BOUNDS
from slimlab.records import BenchRecord, load
from tests.support import DEFAULT_CONFIG, DIGITS, REPO, lab_unavailable

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(1800)]

CPUS = {f"emu-a72-{os.getpid()}": "cortex-a72", f"emu-max-{os.getpid()}": "max,sme=off"}
TRAIN = {"train": {"epochs": 6, "batch_size": 32, "model_params": {"width": 8, "dense": 32}}}
FP32 = {"use_fp16_storage": False, "use_fp16_packed": False, "use_fp16_arithmetic": False}
EVALUATE = 1000  # more than digits' test split has: all of it


def config() -> dict:
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    cfg.update(dataset=DIGITS, formats=["tflite", "ncnn", "mnn"],
               recipes={"baseline": [copy.deepcopy(TRAIN)],
                        "int8": [copy.deepcopy(TRAIN), {"quantize.int8": {"representative_samples": 50}}]},
               lab={"inventory": "devices", "devices": list(CPUS)})
    cfg["bench"]["option_sets"] = {"default": {}, "ncnn-fp32": {"ncnn": FP32}}
    return cfg


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Two boards up, their entries in a checkout-like folder's devices/; down (and checked) at the end."""
    from slimlab.lab.virtual import arm64, rootfs

    problem = rootfs.missing()
    if problem:
        lab_unavailable(problem)
    cache = arm64.default_cache()
    began = time.monotonic()
    rootfs.build(cache)  # .ci/run built it already: this finds it cached
    print(f"board build (cached?): {time.monotonic() - began:.1f} s")
    root = tmp_path_factory.mktemp("arm64-lab")
    for name in ("Snakefile", "workflow", "plugins", "profiles"):
        (root / name).symlink_to(REPO / name)
    (root / "devices").mkdir()
    shutil.copy(REPO / "devices/lab.yaml", root / "devices")
    (root / "config").mkdir()
    (root / "config/config.yaml").write_text(yaml.safe_dump(config(), sort_keys=False))
    try:
        for name, cpu in CPUS.items():
            began = time.monotonic()
            arm64.up(name, cpu, root / "devices", cache, evaluate=EVALUATE)
            print(f"board {name} ({cpu}) up in {time.monotonic() - began:.1f} s")
        yield root
    finally:
        for name in CPUS:
            arm64.down(name, cache)
            assert not arm64.leftovers(name, cache / name / "root"), name
            assert not (cache / name).exists() and not (root / f"devices/{name}.yaml").exists()


@pytest.fixture(scope="module")
def run(lab):
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/ci"], cwd=lab, env=env,
                          capture_output=True, text=True, timeout=1500)
    print(f"workflow on the boards: {time.monotonic() - began:.0f} s")
    assert done.returncode == 0, done.stderr[-3000:]
    found = [load(BenchRecord, path, "record") for path in (lab / "results/bench").rglob("threads-*.json")
             if not path.name.endswith(".failed.json")]
    # MNN 3.6.1 cannot convert int8 TFLite, nor tf2onnx (for ncnn) usefully (README: Formats): those pairs are
    # unsupported when the plan is built, so no bench job runs for them.
    assert [r for r in found if r.status != "ok"] == []
    return {(r.device, r.format, r.option_set, r.artifact): r for r in found if r.status == "ok"}


def test_every_record_ran_on_the_boards_emulated_core(run, lab):
    # fp32 and int8 TFLite, ncnn (twice: default and fp32 options) and MNN, on each board.
    each = [("tflite", "default"), ("tflite", "default"), ("ncnn", "default"), ("ncnn", "ncnn-fp32"), ("mnn", "default")]
    assert sorted(key[:3] for key in run) == sorted((device, *setting) for device in CPUS for setting in each)
    for (device, *_), record in run.items():
        assert record.status == "ok" and record.transport == "ssh"
        assert record.raw["machine"] == "aarch64" and record.context["cpu"]["machine"] == "aarch64"
        assert record.context["cpu"]["qemu_cpu"] == CPUS[device] == record.emulated.qemu_cpu
        split = read_sidecar(lab / record.artifact / "artifact.json").dataset["sizes"]["test"]
        assert "emulated" in record.flags and record.device_eval.samples == split


def test_the_boards_agree_with_the_host_or_say_why_not(run):
    rows = []
    for (device, fmt, option_set, artifact), record in sorted(run.items()):
        found, step = record.device_eval, artifact.rsplit("/", 1)[-1].split("@")[0]  # convert.tflite, quantize.int8
        rows.append(f"{CPUS[device]:12} {step:14} {option_set:9} accuracy {found.host_accuracy:.4f} host, "
                    f"{found.accuracy:.4f} board; agreement {found.agreement:.4f}; "
                    f"max |diff| {found.max_abs_diff_rel:.2e}")
        assert found.passed, rows[-1]  # accuracy and agreement within the parity bar of the host's
    print("\n".join(rows))
    for device, cpu in CPUS.items():
        default, fp32 = (run[key].device_eval for key in sorted(run) if key[0] == device and key[1] == "ncnn")
        features = next(r for k, r in run.items() if k[0] == device).context["cpu"]["features"]
        # ncnn computes in fp16 where the core has asimdhp: max has it, cortex-a72 does not. The fp32 option set
        # brings the logits back within the float bound (x86's own ncnn still stores in fp16: the rest).
        assert ("asimdhp" in features) is (cpu != "cortex-a72")
        assert fp32.max_abs_diff_rel <= FLOAT_BOUNDS["max_abs_diff_rel"]
        if "asimdhp" in features:
            assert default.max_abs_diff_rel > FLOAT_BOUNDS["max_abs_diff_rel"] > fp32.max_abs_diff_rel
        else:
            assert default.max_abs_diff_rel <= FLOAT_BOUNDS["max_abs_diff_rel"]


def test_the_report_shows_what_ran_but_ranks_no_emulated_latency(run, lab):
    table = pd.read_csv(lab / "results/report/summary.csv")
    measured = table[table["status"] == "ok"]
    assert set(measured["device"]) == set(CPUS) and (measured["emulated"] == measured["device"].map(CPUS)).all()
    assert (measured["latency_median_ms"] > 0).all() and measured["speedup_vs_baseline"].isna().all()
    assert not measured["device_parity_failed"].any() and (measured["device_agreement"] > 0.98).all()
    assert pd.read_csv(lab / "results/report/fastest.csv").empty
    assert "Emulated: " in (lab / "results/report/summary.html").read_text()
