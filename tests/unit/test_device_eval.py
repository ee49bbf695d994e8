"""A device's own run of the test samples (`python: {evaluate: N}`), and emulated devices: marked in every record,
left out of every latency figure, not compared by the nightly."""

import numpy as np
import pytest

from slimlab import nightly
from slimlab.lab import bench
from slimlab.parity_bounds import FLOAT_BOUNDS, QUANTIZED_BOUNDS
from slimlab.records import BenchRecord, Emulation, Step, load
from tests.support import DIGITS, bench_block, local_device


@pytest.fixture(scope="module")
def models(tiny_artifacts, tmp_path_factory):
    from slimlab.stages import run_step

    root = tmp_path_factory.mktemp("device-eval-models")
    converted = {kind: run_step({"stage": f"convert.{kind}", "params": {}, "dataset": DIGITS},
                                tiny_artifacts["keras"].sidecar, root / kind / "artifact.json")
                 for kind in ("ncnn", "mnn", "onnx")}
    return {"fp32": tiny_artifacts["fp32"], "int8": tiny_artifacts["int8"], **converted}


@pytest.mark.parametrize("model", ["fp32", "int8", "ncnn", "mnn", "onnx"])
def test_the_device_runs_the_test_samples_like_the_host(models, model, tmp_path):
    """Here the device is this host: the payload's adapter is the host's predict, so the logits must be the same."""
    device = local_device(tmp_path / "device", runtimes=["tflite", "ncnn", "mnn", "onnx"], python={"evaluate": 40},
                          emulated={"qemu_cpu": "cortex-a72"})
    record = bench.run(device, models[model].sidecar, 1, bench_block(runs=3), tmp_path / "r.json")
    found = record.device_eval
    assert found.samples == 40 and found.agreement == 1.0 and found.max_abs_diff_rel < 1e-6
    (logits,) = models[model].test_outputs.values()
    host = np.argmax(logits[:40], -1)
    from slimlab.data import load_spec

    assert found.accuracy == found.host_accuracy == pytest.approx(np.mean(host == load_spec(DIGITS).y_test[:40]))
    assert found.passed and found.bounds == (QUANTIZED_BOUNDS if model == "int8" else FLOAT_BOUNDS)
    # The inventory's `emulated` and the payload's view of the CPU are in the record.
    assert record.emulated == Emulation(qemu_cpu="cortex-a72") and "emulated" in record.flags
    assert set(record.context["cpu"]) == {"machine", "implementer", "part", "features", "qemu_cpu"}
    assert load(BenchRecord, tmp_path / "r.json", "record").device_eval == found


def test_evaluation_is_off_unless_asked_for(models, tmp_path):
    record = bench.run(local_device(tmp_path / "device"), models["fp32"].sidecar, 1, bench_block(runs=3),
                       tmp_path / "r.json")
    assert record.device_eval is None and record.emulated is None and "emulated" not in record.flags


@pytest.mark.parametrize("lineage, agreement, accuracy, passed", [
    ([Step(stage="train", params={})], 0.996, 0.90, True),
    ([Step(stage="train", params={})], 0.99, 0.90, False),  # a float model must agree on 99.5 %
    ([Step(stage="train", params={}), Step(stage="quantize.int8", params={})], 0.99, 0.90, True),
    ([Step(stage="train", params={}), Step(stage="quantize.int8", params={})], 0.99, 0.87, False),  # 3 pt lost
])
def test_the_parity_bar_depends_on_the_lineage(lineage, agreement, accuracy, passed):
    found = {"samples": 200, "agreement": agreement, "accuracy": accuracy, "host_accuracy": 0.9,
             "outputs": {"logits": {"snr_db": 30.0, "cosine": 0.999, "max_abs_diff_rel": 0.01}}}
    assert bench.device_eval(found, lineage).passed is passed


def test_the_nightly_lists_an_emulated_series_without_comparing_it(models, tmp_path):
    device = local_device(tmp_path / "device", emulated=True)
    path = tmp_path / "threads-1.json"
    bench.run(device, models["fp32"].sidecar, 1, bench_block(runs=3), path)
    series = {"recipe": "baseline", "format": "tflite", "sidecar": str(models["fp32"].sidecar), "record": str(path)}
    accepted = {"artifacts": {"baseline|tflite": {"sidecar": str(models["fp32"].sidecar)}}}
    row = nightly.evaluate(series, accepted, measurer=None, run_dir=tmp_path)
    assert row["status"] == "emulated" and "latency_ratio" not in row
    assert nightly.exit_code([row]) == nightly.EXIT_OK


def test_the_nightly_lists_a_known_refusal_apart_and_does_not_count_it(models, tmp_path):
    from slimlab.stages import run_step

    sidecar = tmp_path / "mnn" / "artifact.json"  # MNN 3.6.1 refuses quantized TFLite: a known limit
    assert run_step({"stage": "convert.mnn", "params": {}, "dataset": DIGITS}, models["int8"].sidecar,
                    sidecar).status == "unsupported"
    path = tmp_path / "threads-1.json"
    bench.run(local_device(tmp_path / "device", runtimes=["mnn"]), sidecar, 1, bench_block(runs=3), path)
    series = {"recipe": "int8", "format": "mnn", "sidecar": str(sidecar), "record": str(path)}
    row = nightly.evaluate(series, {"artifacts": {}}, measurer=None, run_dir=tmp_path)
    assert row["status"] == "unsupported" and "MNN 3.6.1" in row["reason"]
    missing = nightly.evaluate({**series, "record": str(tmp_path / "none.json")}, {}, measurer=None, run_dir=tmp_path)
    assert nightly.exit_code([row]) == nightly.EXIT_OK and nightly.exit_code([row, missing]) == nightly.EXIT_INFRA
