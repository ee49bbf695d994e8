"""ncnn on a Vulkan GPU (option set ``{ncnn: {use_vulkan_compute: true}}``): here, and on CI, Mesa's lavapipe, a
software driver. Its outputs are held to the fp16 parity bar against the host's CPU run, the record names the GPU and
is flagged ``software_gpu``, and the report keeps its latencies out of every speed-up, ranking and plot."""

import json
import subprocess
import sys

import pytest

from slimlab import report
from slimlab.errors import DeviceError
from slimlab.lab import bench
from slimlab.parity_bounds import FLOAT_BOUNDS, QUANTIZED_BOUNDS
from slimlab.records import BenchRecord, Latency, load
from slimlab.report import plots, tables
from tests.support import DIGITS, bench_block, lab_unavailable, local_device

VULKAN = {"ncnn": {"use_vulkan_compute": True}}
SAMPLES = 50


@pytest.fixture(scope="module")
def gpu() -> dict:
    """The first Vulkan device ncnn sees, asked in a fresh interpreter (as the payload will be)."""
    probe = ("import json, ncnn; n = ncnn.get_gpu_count(); "
             "print(json.dumps({'count': n, 'name': ncnn.get_gpu_info(ncnn.get_default_gpu_index()).device_name() "
             "if n else None}))")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    if found.returncode != 0:
        pytest.fail(f"cannot ask ncnn for its GPUs: {found.stderr.strip()[-300:]}")
    info = json.loads(found.stdout.strip().splitlines()[-1])
    if info["count"] == 0:
        lab_unavailable("no Vulkan device for ncnn (apt-get install mesa-vulkan-drivers libvulkan1: Mesa's lavapipe)")
    return info


@pytest.fixture(scope="module")
def ncnn_model(tiny_artifacts, tmp_path_factory):
    from slimlab.stages import run_step

    root = tmp_path_factory.mktemp("ncnn-vulkan")
    return run_step({"stage": "convert.ncnn", "params": {}, "dataset": DIGITS}, tiny_artifacts["keras"].sidecar,
                    root / "ncnn" / "artifact.json")


@pytest.fixture(scope="module")
def on_gpu(gpu, ncnn_model, tmp_path_factory):
    """The ncnn model benchmarked with the Vulkan option set on this host, evaluating SAMPLES test samples."""
    root = tmp_path_factory.mktemp("ncnn-vulkan-bench")
    device = local_device(root / "device", runtimes=["ncnn"], python={"evaluate": SAMPLES})
    path = root / "threads-1.json"
    bench.run(device, ncnn_model.sidecar, 1, bench_block(runs=5, options=VULKAN, option_set="ncnn-vulkan"), path)
    return path


def test_the_vulkan_option_set_runs_on_the_gpu_within_the_fp16_bar_of_the_cpu(gpu, on_gpu):
    record = load(BenchRecord, on_gpu, "bench record")
    assert record.status == "ok" and record.option_set == "ncnn-vulkan"
    assert record.options.requested == {"use_vulkan_compute": True}
    # Read back from ncnn after loading, with the GPU it ran on.
    assert record.options.reported["use_vulkan_compute"] is True
    assert record.options.reported["vulkan_device"] == gpu["name"]
    assert record.raw["gpu"] == {"index": 0, "name": gpu["name"], "type": "cpu", "software": True}
    # lavapipe is the CPU: its latency is no GPU figure.
    assert "software_gpu" in record.flags and "emulated" not in record.flags
    # ncnn stores and computes in fp16 on the GPU by default: judged with the reduced-precision bar, against the
    # host's CPU logits.
    assert record.options.reported["use_fp16_storage"] is True
    found = record.device_eval
    assert found.samples == SAMPLES and found.bounds == QUANTIZED_BOUNDS and found.passed
    assert found.agreement >= QUANTIZED_BOUNDS["min_agreement"] and found.max_abs_diff_rel < 0.05


@pytest.mark.parametrize("options, bar", [
    ({"use_vulkan_compute": True}, QUANTIZED_BOUNDS),  # ncnn's fp16 defaults, on a GPU
    ({"use_vulkan_compute": True, "use_fp16_storage": False, "use_fp16_arithmetic": False}, QUANTIZED_BOUNDS),
    ({"use_vulkan_compute": True, "use_fp16_storage": False, "use_fp16_arithmetic": False,
      "use_fp16_packed": False}, FLOAT_BOUNDS),  # fp32 on the GPU
    ({"use_vulkan_compute": False, "use_fp16_storage": True}, FLOAT_BOUNDS),  # the CPU: as before
    ({}, FLOAT_BOUNDS),
])
def test_fp16_on_a_gpu_is_judged_with_the_reduced_precision_bar(options, bar):
    found = {"samples": 50, "agreement": 0.98, "accuracy": 0.9, "host_accuracy": 0.9,
             "outputs": {"logits": {"snr_db": 25.0, "cosine": 0.999, "max_abs_diff_rel": 0.01}}}
    judged = bench.device_eval(found, [], options)
    assert judged.bounds == bar and judged.passed is (bar == QUANTIZED_BOUNDS)


def test_without_a_vulkan_device_the_option_set_fails_in_one_line(ncnn_model, tmp_path, monkeypatch):
    """ncnn would quietly fall back to the CPU: the adapter refuses instead."""
    for variable in ("VK_ICD_FILENAMES", "VK_DRIVER_FILES"):  # the Vulkan loader finds no driver
        monkeypatch.setenv(variable, str(tmp_path / "no-such-driver.json"))
    with pytest.raises(bench.BenchFailed, match="payload exited 2: slimlab-payload: error: no Vulkan device"):
        bench.run(local_device(tmp_path / "device", runtimes=["ncnn"]), ncnn_model.sidecar, 1,
                  bench_block(runs=3, options=VULKAN, option_set="ncnn-vulkan"), tmp_path / "r.json")


def test_the_report_keeps_software_gpu_rows_out_of_speedups_fastest_and_plots(on_gpu, ncnn_model, tmp_path):
    """The real record, re-timed so that the software GPU would win everything if it counted."""
    gpu_record = load(BenchRecord, on_gpu, "bench record")
    cpu_record = gpu_record.model_copy(update={"option_set": "default", "flags": [], "raw": {},
                                               "options": gpu_record.options.model_copy(update={"requested": {}})})
    deployables = []
    for recipe, cpu_ms, gpu_ms in (("baseline", 2.0, 1.0), ("small", 1.0, 0.01)):
        paths = []
        for record, median in ((cpu_record, cpu_ms), (gpu_record, gpu_ms)):
            path = tmp_path / "bench" / recipe / record.option_set / "threads-1.json"
            latency = Latency(n=3, median_ms=median, min_ms=median, max_ms=median, mean_ms=median, cv=0.01)
            record.model_copy(update={"latency": latency, "latencies_ms": None}).save(path)
            paths.append(str(path))
        deployables.append({"recipe": recipe, "format": "ncnn", "sidecar": str(ncnn_model.sidecar),
                            "records": paths})
    table = tables.rows(deployables).set_index(["recipe", "option_set"])
    on_gpu_rows = table.xs("ncnn-vulkan", level="option_set")
    # Shown, with its latency and its flag, but never compared with a baseline ...
    assert on_gpu_rows["latency_median_ms"].tolist() == [1.0, 0.01]
    assert on_gpu_rows["flags"].str.contains("software_gpu").all()
    assert on_gpu_rows["speedup_vs_baseline"].isna().all()
    assert table.loc[("small", "default"), "speedup_vs_baseline"] == 2.0
    # ... never the fastest setting, and never plotted (nor on a Pareto front, which is drawn from the points).
    best = report.fastest(table.reset_index()).set_index("recipe")
    assert best["option_set"].tolist() == ["default", "default"]
    assert best.loc["small", "latency_median_ms"] == 1.0
    assert set(plots.points(table.reset_index())["option_set"]) == {"default"}
    report.write(deployables, tmp_path / "out")
    assert "Software GPU: here (ncnn-vulkan)." in (tmp_path / "out/summary.html").read_text()
