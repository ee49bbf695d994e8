"""The python runner's payload on every runtime (tflite, ncnn, mnn, onnx), through the real local transport."""

import subprocess
import sys

import pytest

from slimlab.errors import DeviceError
from slimlab.lab.payload import payload
from slimlab.registry import runners, transports
from tests.support import DIGITS, bench_block, local_device

SETTINGS = bench_block(warmup=2, runs=15)
RUNTIME_NAMES = {"tflite": "ai_edge_litert", "ncnn": "ncnn", "mnn": "MNN", "onnx": "onnxruntime"}


@pytest.fixture(scope="module")
def models(tiny_artifacts, tmp_path_factory):
    """The tiny Keras model in every format the payload runs, converted by the real stages."""
    from slimlab.stages import run_step

    root = tmp_path_factory.mktemp("runner-models")
    converted = {
        kind: run_step({"stage": f"convert.{kind}", "params": {}, "dataset": DIGITS},
                       tiny_artifacts["keras"].sidecar, root / kind / "artifact.json")
        for kind in ("onnx", "ncnn", "mnn")
    }
    return {"tflite": tiny_artifacts["fp32"], "keras": tiny_artifacts["keras"], **converted}


@pytest.fixture
def device(tmp_path):
    return local_device(tmp_path / "device", runtimes=list(RUNTIME_NAMES))


def measure(device, artifact, threads=1, **options):
    runner = runners()["python"](device, transports()["local"](device))
    return runner.measure(artifact, threads, {**SETTINGS, "options": {artifact.kind: options}})


@pytest.mark.parametrize("kind", list(RUNTIME_NAMES))
def test_each_runtime_is_timed_with_raw_latencies(device, models, kind):
    raw = measure(device, models[kind])
    assert raw["runtime"].startswith(RUNTIME_NAMES[kind] + " ")
    assert len(raw["latencies_ms"]) >= SETTINGS["runs"]
    assert all(latency > 0 for latency in raw["latencies_ms"])
    assert raw["init_ms"] > 0 and raw["first_inference_ms"] > 0 and raw["warmup"] == SETTINGS["warmup"]
    assert raw["threads"] == 1


def test_ncnn_gets_both_files_side_by_side_in_the_push(device, models):
    measure(device, models["ncnn"])
    pushed = sorted(p.suffix for p in (transports()["local"](device).workdir / "blobs").iterdir())
    assert pushed == [".bin", ".param", ".pyz"]


@pytest.mark.parametrize("fp16", [False, True])
def test_ncnn_options_are_applied_and_read_back(device, models, fp16):
    raw = measure(device, models["ncnn"], threads=2, use_fp16_storage=fp16, use_fp16_arithmetic=fp16,
                  use_winograd_convolution=not fp16)
    assert raw["options"]["use_fp16_storage"] is fp16 and raw["options"]["use_fp16_arithmetic"] is fp16
    assert raw["options"]["use_winograd_convolution"] is (not fp16)
    assert raw["options"]["num_threads"] == 2


@pytest.mark.parametrize("kind", ["mnn", "onnx", "ncnn"])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_runtime_reports_the_threads_it_was_given(device, models, kind, threads):
    # Read back from the runtime's own session/options object, not echoed from the command line.
    assert measure(device, models[kind], threads=threads)["options"]["num_threads"] == threads


def test_mnn_session_config_is_echoed(device, models):
    raw = measure(device, models["mnn"], precision="low", power="high")
    assert raw["options"]["precision"] == "low" and raw["options"]["power"] == "high"


def test_xnnpack_off_leaves_no_delegate(device, models):
    on = measure(device, models["tflite"])
    off = measure(device, models["tflite"], xnnpack=False)
    assert on["options"] == {"xnnpack": True} and on["delegated_nodes"] >= 1
    assert off["options"] == {"xnnpack": False} and off["delegated_nodes"] == 0


@pytest.mark.parametrize("kind, options, message", [
    ("ncnn", {"use_fp16_storage": "yes"}, "ncnn option 'use_fp16_storage' must be of type boolean, got 'yes'"),
    ("ncnn", {"use_fp17_storage": True}, "unknown ncnn option 'use_fp17_storage'"),
    ("mnn", {"precision": "ultra"}, "mnn option 'precision' must be one of normal, high, low, got 'ultra'"),
    ("tflite", {"xnnpack": 1}, "tflite option 'xnnpack' must be of type boolean, got 1"),
])
def test_a_bad_option_is_a_clear_device_error(device, models, kind, options, message):
    with pytest.raises(DeviceError, match=f"device 'here': payload exited 2: slimlab-payload: error: {message}"):
        measure(device, models[kind], **options)


def test_an_unsupported_kind_is_refused_naming_the_device(device, models):
    with pytest.raises(DeviceError, match="device 'here': the python runner has no runtime adapter for keras models"):
        measure(device, models["keras"])


def test_a_runtime_the_inventory_does_not_list_is_refused(models, tmp_path):
    with pytest.raises(DeviceError, match="device 'here': has no ncnn runtime .*runtimes: tflite"):
        measure(local_device(tmp_path / "device", runtimes=["tflite"]), models["ncnn"])


def test_a_runtime_missing_on_the_device_is_a_clear_device_error(device, models, tmp_path, monkeypatch):
    # A device whose Python lacks ncnn: a stand-in module on PYTHONPATH fails to import as it would there.
    stand_in = tmp_path / "no-ncnn"
    stand_in.mkdir()
    (stand_in / "ncnn.py").write_text("raise ImportError(\"No module named 'ncnn'\")\n")
    monkeypatch.setenv("PYTHONPATH", str(stand_in))
    with pytest.raises(DeviceError, match="device 'here': .*runtime module 'ncnn' is not installed on this device"):
        measure(device, models["ncnn"])


def test_the_mnn_payload_never_imports_mnn_tools(models):
    """MNN.tools imports the telemetry module MNN.tools.utils.log; the payload must use the interpreter only."""
    # Run the payload as __main__ and list, at exit, every MNN module it imported.
    audit = ("import atexit, runpy, sys; "
             "atexit.register(lambda: print('modules:', *sorted(m for m in sys.modules if 'MNN' in m), file=sys.stderr)); "
             "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    done = subprocess.run(
        [sys.executable, "-c", audit, str(payload()[0]), "--runtime", "mnn", "--model", str(models["mnn"].path),
         "--warmup", "0", "--runs", "1", "--min-seconds", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-500:]
    imported = done.stderr.split("modules:")[-1].split()
    assert "MNN" in imported
    assert not [name for name in imported if name.startswith("MNN.tools")]
