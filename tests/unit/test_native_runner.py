"""The native runner: the argv it builds per runtime, and what it makes of the tools' real output."""

import stat
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import pytest

from slimlab.errors import ArtifactError, ConfigError, DeviceError
from slimlab.lab import bench
from slimlab.lab.parsers import ParseError
from slimlab.lab.transport import CommandResult
from slimlab.plugins.lab.native_runner import COMPUTE_UNITS
from slimlab.registry import runners
from tests.support import bench_block, lab_device

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "device-tools"
SETTINGS = bench_block(warmup=5, runs=50, min_seconds=1.0, timeout_s=120)
TOOLS = {"tflite": "/data/local/tmp/benchmark_model", "ncnn": "/data/local/tmp/benchncnn",
         "mnn": "/data/local/tmp/benchmark.out"}
# What a runner pushes per kind; for ncnn, benchncnn needs only the .param file.
MODEL_FILES = {"tflite": "model.tflite", "ncnn": "model.ncnn.param", "mnn": "model.mnn"}
GPU_COVERAGE = "INFO: Replacing 64 out of 66 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 2 partitions.\n"


@dataclass
class FakeArtifact:
    kind: str
    input_shape: list[int] | None = None
    sha256: str = "3fa9"

    @property
    def info(self) -> SimpleNamespace:
        return SimpleNamespace(input_shape=self.input_shape)

    @property
    def path(self) -> Path:
        return Path("/results/artifacts") / MODEL_FILES[self.kind]

    @property
    def dir(self) -> Path:
        return self.path.parent


class FakeTransport:
    """A transport double: records pushes and argv, answers each tool with a canned (stdout, stderr)."""

    workdir = PurePosixPath("/data/local/tmp/slimlab")

    def __init__(self, outputs: dict[str, tuple[str, str]], returncode: int = 0):
        self.outputs, self.returncode = outputs, returncode
        self.pushed, self.commands = [], []

    def push(self, local: Path) -> str:
        self.pushed.append(local)
        return f"{self.workdir}/blobs/3fa9{local.suffix}"

    def run(self, argv: list[str], timeout: float) -> CommandResult:
        assert all(isinstance(arg, str) for arg in argv) and timeout == SETTINGS["timeout_s"]
        self.commands.append(argv)
        stdout, stderr = self.outputs.get(argv[0], ("", ""))
        return CommandResult(self.returncode if argv[0] in TOOLS.values() else 0, stdout, stderr)


def pixel(native: dict):
    """An adb phone whose ``native:`` block is ``native``."""
    return lab_device("pixel", {"transport": "adb", "adb": {"serial": "R58M123ABC"}, "runner": "native",
                                "native": native})


def runner(transport, compute_unit="cpu", **native):
    # A device has one compute unit: it lists the tools of the runtimes that offer it.
    tools = {runtime: TOOLS[runtime] for runtime, units in COMPUTE_UNITS.items() if compute_unit in units}
    return runners()["native"](pixel({"tools": tools, "compute_unit": compute_unit, **native}), transport)


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


@pytest.mark.parametrize("compute_unit, flags, log", [
    ("cpu", [], sample("tflite_benchmark_model_cpu_gpu.txt")),
    ("gpu", ["--use_gpu=true"], GPU_COVERAGE + sample("tflite_benchmark_model_cpu_gpu.txt")),
    ("nnapi", ["--use_nnapi=true"], GPU_COVERAGE.replace("TfLiteGpuDelegateV2", "TfLiteNnapiDelegate")
     + sample("tflite_benchmark_model_cpu_gpu.txt")),
])
def test_tflite_argv_and_result(compute_unit, flags, log):
    transport = FakeTransport({TOOLS["tflite"]: ("", log)})  # benchmark_model logs to stderr
    raw = runner(transport, compute_unit).measure(FakeArtifact("tflite"), 4, SETTINGS)
    assert transport.pushed == [Path("/results/artifacts/model.tflite")]
    assert transport.commands == [[
        TOOLS["tflite"], "--graph=/data/local/tmp/slimlab/blobs/3fa9.tflite", "--num_threads=4",
        "--warmup_runs=5", "--warmup_min_secs=0", "--num_runs=50", "--min_secs=1.0",
        "--report_peak_memory_footprint=true", *flags]]
    assert raw["runtime"] == "tflite benchmark_model" and raw["threads"] == 4
    assert raw["compute_unit"] == compute_unit and "latencies_ms" not in raw
    assert raw["init_ms"] == pytest.approx(87.639) and raw["first_inference_ms"] == pytest.approx(106.436)
    assert raw["summary"]["n"] == 50
    assert raw["summary"]["median_ms"] == pytest.approx(105.718) and raw["summary"]["mean_ms"] == pytest.approx(105.784)
    assert raw["summary"]["cv"] == pytest.approx(0.26 / 105.784)
    if compute_unit == "cpu":
        assert raw["delegation"] is None and raw["partially_delegated"] is False
    else:
        delegation = raw["delegation"]
        assert delegation["nodes"] == 64 and delegation["of"] == 66 and delegation["share"] == pytest.approx(64 / 66)
        assert raw["partially_delegated"] is True


@pytest.mark.parametrize("log", [sample("tflite_benchmark_model_cpu_gpu.txt"),
                                 # The GPU delegate failed; XNNPACK took the model on the CPU.
                                 sample("tflite_benchmark_model_peak_memory.txt")], ids=["no-delegate", "xnnpack"])
def test_a_gpu_run_without_a_gpu_delegate_is_not_passed_off_as_gpu(log):
    transport = FakeTransport({TOOLS["tflite"]: ("", log)})
    with pytest.raises(DeviceError, match="device 'pixel': benchmark_model ran without a gpu delegate"):
        runner(transport, "gpu").measure(FakeArtifact("tflite"), 1, SETTINGS)


def test_tflite_memory_figures_are_in_the_result():
    transport = FakeTransport({TOOLS["tflite"]: ("", sample("tflite_benchmark_model_peak_memory.txt"))})
    raw = runner(transport).measure(FakeArtifact("tflite"), 1, SETTINGS)
    assert raw["memory"] == {"peak_rss_kib": 7188, "load_growth_kib": 2520, "init_footprint_mb": 2.46094,
                             "overall_footprint_mb": 2.58984, "peak_footprint_mb": 7.01953, "end_rss_mb": 6,
                             "end_rss_anon_mb": 2, "end_rss_file_mb": 4}
    assert "ops" not in raw  # no op profile unless asked for


def test_memory_figures_without_latency_are_refused_in_one_line():
    log = sample("tflite_benchmark_model_peak_memory.txt")
    transport = FakeTransport({TOOLS["tflite"]: ("", log[log.index("INFO: Note: as the benchmark"):])})
    with pytest.raises(ParseError, match="printed memory figures but no latency"):
        runner(transport).measure(FakeArtifact("tflite"), 1, SETTINGS)


def test_op_profile_is_a_second_run_and_goes_into_the_result():
    log = sample("tflite_benchmark_model_cpu_gpu.txt") + sample("tflite_op_profiling.txt")
    transport = FakeTransport({TOOLS["tflite"]: ("", log)})
    raw = runner(transport, op_profile=True).measure(FakeArtifact("tflite"), 1, SETTINGS)
    timed, profiled = transport.commands
    assert "--enable_op_profiling=true" not in timed and profiled == [*timed, "--enable_op_profiling=true"]
    assert [op["node_type"] for op in raw["ops"]] == ["CONV_2D", "DEPTHWISE_CONV_2D"]
    assert raw["ops"][0] == {"node_type": "CONV_2D", "avg_ms": 2651.853, "avg_percent": 89.897, "times_called": 15,
                             "count": 15, "flops_percent": None}


def test_op_profile_asked_for_but_not_printed_raises():
    transport = FakeTransport({TOOLS["tflite"]: ("", sample("tflite_benchmark_model_cpu_gpu.txt"))})
    with pytest.raises(ParseError, match="--enable_op_profiling=true printed no op profile"):
        runner(transport, op_profile=True).measure(FakeArtifact("tflite"), 1, SETTINGS)


def test_bench_record_carries_the_tools_memory(tiny_artifacts, tmp_path):
    """Through bench.run on this host: a stand-in benchmark_model prints a real log; the record keeps its memory."""
    tool = tmp_path / "benchmark_model"
    tool.write_text(f"#!{sys.executable}\nimport sys\n"
                    f"sys.stderr.write({sample('tflite_benchmark_model_peak_memory.txt')!r})\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    device = lab_device("here", {"transport": "local", "runner": "native", "workdir": str(tmp_path / "work"),
                                 "native": {"tools": {"tflite": str(tool)}}})
    record = bench.run(device, tiny_artifacts["fp32"].sidecar, 1, SETTINGS, tmp_path / "record.json",
                       locks=tmp_path / "locks")
    assert record.memory["peak_rss_kib"] == 7188 and record.memory["end_rss_mb"] == 6
    assert record.latency.median_ms == pytest.approx(0.187) and "memory" not in record.raw


@pytest.mark.parametrize("compute_unit, gpu_device", [("cpu", "-1"), ("vulkan", "0")])
def test_ncnn_argv_and_result(compute_unit, gpu_device):
    output = sample("benchncnn_rk3588.txt").replace("squeezenet_int8", "/data/local/tmp/slimlab/blobs/3fa9.param")
    transport = FakeTransport({TOOLS["ncnn"]: ("", output)})  # benchncnn prints to stderr
    artifact = FakeArtifact("ncnn", input_shape=[1, 28, 32, 3])
    raw = runner(transport, compute_unit).measure(artifact, 4, SETTINGS)
    assert transport.commands == [[TOOLS["ncnn"], "50", "4", "0", gpu_device, "0",
                                   "param=/data/local/tmp/slimlab/blobs/3fa9.param", "shape=[32,28,3]"]]
    assert raw["runtime"] == "ncnn benchncnn" and "latencies_ms" not in raw
    # n is the loop count the tool echoed (the sample's), not the one asked for.
    assert raw["summary"] == {"n": 8, "median_ms": None, "p90_ms": None, "min_ms": 8.43, "max_ms": 8.52,
                              "mean_ms": 8.46, "std_ms": None, "cv": None}


def test_ncnn_needs_the_input_shape():
    with pytest.raises(ArtifactError, match="input_shape"):
        runner(FakeTransport({})).measure(FakeArtifact("ncnn"), 1, SETTINGS)


@pytest.mark.parametrize("compute_unit, forward", [("cpu", "0"), ("opencl", "3"), ("vulkan", "7")])
def test_mnn_gets_a_folder_of_its_own_and_a_forward_type(compute_unit, forward):
    output = sample("mnn_benchmark_out.txt").replace("mobilenetV3.mnn", "model.mnn")
    transport = FakeTransport({TOOLS["mnn"]: (output, "")})
    raw = runner(transport, compute_unit).measure(FakeArtifact("mnn"), 2, SETTINGS)
    folder = "/data/local/tmp/slimlab/mnn/3fa9"
    assert transport.commands == [
        ["mkdir", "-p", folder],
        ["ln", "-sf", "/data/local/tmp/slimlab/blobs/3fa9.mnn", f"{folder}/model.mnn"],
        [TOOLS["mnn"], folder, "50", "5", forward, "2"],
    ]
    assert raw["summary"]["n"] == 20
    assert (raw["summary"]["min_ms"], raw["summary"]["max_ms"], raw["summary"]["mean_ms"]) == (15.124, 15.802, 15.222)
    assert raw["tool_settings"]["Forward type"] == "CPU"


def test_a_stream_cut_inside_a_number_is_not_read_as_whole():
    # benchncnn's output merged into stdout (old adb) and cut inside avg = 8.46: 8.4 would pass for a time.
    cut = "loop_count = 8\n/data/local/tmp/slimlab/blobs/3fa9.param  min =    8.40  max =    8.52  avg =    8.4"
    transport = FakeTransport({TOOLS["ncnn"]: (cut, "")})
    with pytest.raises(ParseError, match="ncnn benchncnn: "):
        runner(transport).measure(FakeArtifact("ncnn", input_shape=[1, 28, 28, 1]), 1, SETTINGS)


def test_mnn_output_without_this_model_raises():
    transport = FakeTransport({TOOLS["mnn"]: (sample("mnn_benchmark_out.txt"), "")})
    with pytest.raises(ParseError, match="MNN benchmark.out: expected the loop count and one timing line for model"):
        runner(transport).measure(FakeArtifact("mnn"), 2, SETTINGS)


def test_tool_failure_names_the_tool_and_its_last_words():
    transport = FakeTransport({TOOLS["tflite"]: ("", "INFO: STARTING!\nERROR: Could not open 'x.tflite'.\n")},
                              returncode=1)
    with pytest.raises(DeviceError, match="device 'pixel': /data/local/tmp/benchmark_model exited 1: ERROR: Could"):
        runner(transport).measure(FakeArtifact("tflite"), 1, SETTINGS)


def test_garbage_output_raises_instead_of_zeros():
    transport = FakeTransport({TOOLS["tflite"]: ("Segmentation fault\n", "")})
    with pytest.raises(ParseError, match="tflite benchmark_model"):
        runner(transport).measure(FakeArtifact("tflite"), 1, SETTINGS)


@pytest.mark.parametrize("native, message", [
    ({"tools": {"ncnn": "/x"}}, r"device 'pixel': native.tools.tflite: no native benchmark tool"),
    ({"tools": TOOLS, "compute_unit": "vulkan"}, r"devices.pixel.native: .*compute_unit 'vulkan' is not available for tflite"),
])
def test_misconfigured_devices_are_config_errors(native, message):
    with pytest.raises(ConfigError, match=message):
        runners()["native"](pixel(native), FakeTransport({})).measure(FakeArtifact("tflite"), 1, SETTINGS)


# Real benchmark_model output with delegates (tests/data/device-tools/README.md says where each comes from).
GPU_NNAPI = sample("tflite_benchmark_model_gpu_nnapi.txt")  # --use_gpu --use_nnapi: GPU took 49/49, NNAPI none
GPU_PARTIAL = sample("tflite_gpu_partial_delegation.txt")  # GPU took 54 of 559 nodes, XNNPACK most of the rest
# A vendor NPU's line as LiteRT logs it (a QNN HTP run through LiteRT's dispatch delegate, logcat).
DISPATCH = ("10-08 03:39:33.510 27435 27455 I tflite  : Replacing 1 out of 1 node(s) with delegate (DispatchDelegate) "
            "node, yielding 1 partitions for subgraph 0 (encoder_1x1024).\n")


def test_a_fully_delegated_gpu_run_says_so_and_is_not_flagged():
    transport = FakeTransport({TOOLS["tflite"]: ("", GPU_NNAPI)})
    raw = runner(transport, "gpu").measure(FakeArtifact("tflite"), 2, SETTINGS)
    assert raw["delegation"] == {"delegate": "TfLiteGpuDelegateV2", "nodes": 49, "of": 49, "share": 1.0,
                                 "partitions": 1, "subgraphs": 1, "executed": "completely", "kernels": None,
                                 "partial": False}
    assert raw["partially_delegated"] is False and raw["summary"]["median_ms"] == pytest.approx(307.968)


def test_a_partly_delegated_gpu_run_gives_its_share_and_is_flagged():
    transport = FakeTransport({TOOLS["tflite"]: ("", GPU_PARTIAL + sample("tflite_benchmark_model_cpu_gpu.txt"))})
    raw = runner(transport, "gpu").measure(FakeArtifact("tflite"), 4, SETTINGS)
    delegation = raw["delegation"]
    assert (delegation["delegate"], delegation["nodes"], delegation["of"], delegation["partitions"]) == (
        "TfLiteGpuDelegateV2", 54, 559, 3)
    assert delegation["share"] == pytest.approx(54 / 559) and delegation["partial"] is True
    assert raw["partially_delegated"] is True
    # XNNPACK took most of what the GPU left: every delegate line is kept.
    assert [(d["delegate"], d["replaced"], d["total"]) for d in raw["delegates"]] == [
        ("TfLiteGpuDelegateV2", 54, 559), ("TfLiteXNNPackDelegate", 456, 506)]


def test_a_nnapi_delegate_the_tool_says_did_not_execute_is_refused():
    # The same run asked for NNAPI too; the tool says NNAPI took nothing (only nnapi-reference was there).
    transport = FakeTransport({TOOLS["tflite"]: ("", GPU_NNAPI)})
    with pytest.raises(DeviceError, match="ran without a nnapi delegate .*NNAPI delegate will not execute the graph"):
        runner(transport, "nnapi").measure(FakeArtifact("tflite"), 2, SETTINGS)


def test_an_external_delegate_that_did_not_apply_is_refused():
    # Only XNNPACK replaced nodes: the vendor's library took none of the graph.
    transport = FakeTransport({TOOLS["tflite"]: ("", sample("tflite_benchmark_model_peak_memory.txt"))})
    native = {"delegate": {"external": {"vendor": "qnn", "path": "/data/local/tmp/libQnnTFLiteDelegate.so",
                                        "backend_type": "htp"}}}
    with pytest.raises(DeviceError, match="ran without a external delegate"):
        runner(transport, "external", **native).measure(FakeArtifact("tflite"), 1, SETTINGS)


@pytest.mark.parametrize("compute_unit, delegate, flags, log", [
    ("gpu", {"gpu": {"backend": "cl", "precision_loss_allowed": False, "enable_quant": True}},
     ["--use_gpu=true", "--gpu_backend=cl", "--gpu_precision_loss_allowed=false", "--gpu_experimental_enable_quant=true"],
     GPU_NNAPI),
    ("gpu", {"gpu": {"backend": "gl"}}, ["--use_gpu=true", "--gpu_backend=gl"], GPU_NNAPI),
    ("nnapi", {"nnapi": {"accelerator": "qti-dsp", "execution_preference": "sustained_speed", "disable_cpu": True,
                         "allow_fp16": True}},
     ["--use_nnapi=true", "--nnapi_accelerator_name=qti-dsp", "--nnapi_execution_preference=sustained_speed",
      "--disable_nnapi_cpu=true", "--nnapi_allow_fp16=true"],
     GPU_PARTIAL.replace("TfLiteGpuDelegateV2", "TfLiteNnapiDelegate") + sample("tflite_benchmark_model_cpu_gpu.txt")),
    ("hexagon", {}, ["--use_hexagon=true"],
     GPU_PARTIAL.replace("TfLiteGpuDelegateV2", "TfLiteHexagonDelegate") + sample("tflite_benchmark_model_cpu_gpu.txt")),
    ("external", {"external": {"vendor": "qnn", "path": "/data/local/tmp/libQnnTFLiteDelegate.so", "backend_type": "htp",
                               "library_path": "/data/local/tmp/libQnnHtp.so", "skel_library_dir": "/data/local/tmp",
                               "htp_precision": 1, "htp_performance_mode": 2}},
     ["--external_delegate_path=/data/local/tmp/libQnnTFLiteDelegate.so",
      "--external_delegate_options=backend_type:htp;library_path:/data/local/tmp/libQnnHtp.so;"
      "skel_library_dir:/data/local/tmp;htp_precision:1;htp_performance_mode:2"],
     DISPATCH + sample("tflite_benchmark_model_cpu_gpu.txt")),
    ("external", {"external": {"vendor": "neuron", "path": "/vendor/lib64/libneuron_delegate.so",
                               "options": {"execution_preference": "turbo_boost", "allow_fp16": True}}},
     ["--external_delegate_path=/vendor/lib64/libneuron_delegate.so",
      "--external_delegate_options=execution_preference:turbo_boost;allow_fp16:true"],
     DISPATCH + sample("tflite_benchmark_model_cpu_gpu.txt")),
    ("external", {"external": {"vendor": "enn", "path": "/data/local/tmp/libenn_delegate.so"}},
     ["--external_delegate_path=/data/local/tmp/libenn_delegate.so"], DISPATCH + sample("tflite_benchmark_model_cpu_gpu.txt")),
], ids=["gpu-cl", "gpu-gl", "nnapi-accelerator", "hexagon", "qnn-htp", "neuron", "enn"])
def test_delegate_options_become_benchmark_model_flags(compute_unit, delegate, flags, log):
    transport = FakeTransport({TOOLS["tflite"]: ("", log)})
    raw = runner(transport, compute_unit, delegate=delegate).measure(FakeArtifact("tflite"), 2, SETTINGS)
    assert transport.commands == [[
        TOOLS["tflite"], "--graph=/data/local/tmp/slimlab/blobs/3fa9.tflite", "--num_threads=2",
        "--warmup_runs=5", "--warmup_min_secs=0", "--num_runs=50", "--min_secs=1.0",
        "--report_peak_memory_footprint=true", *flags]]
    assert raw["delegation"]["nodes"] >= 1 and "xnnpack" not in raw["delegation"]["delegate"].lower()


@pytest.mark.parametrize("native, message", [
    ({"compute_unit": "gpu", "delegate": {"tpu": {}}}, r"delegate.tpu: Extra inputs are not permitted"),
    ({"compute_unit": "gpu", "delegate": {"gpu": {"precision": "fp16"}}},
     r"delegate.gpu.precision: Extra inputs are not permitted"),
    ({"compute_unit": "gpu", "delegate": {"gpu": {"backend": "vulkan"}}}, r"delegate.gpu.backend: Input should be 'cl' or 'gl'"),
    ({"compute_unit": "gpu", "delegate": {"nnapi": {"accelerator": "qti-dsp"}}},
     r"delegate.nnapi is set but compute_unit is 'gpu'"),
    ({"compute_unit": "nnapi", "delegate": {"nnapi": {"execution_preference": "fastest"}}},
     r"delegate.nnapi.execution_preference: Input should be"),
    ({"compute_unit": "npu"}, r"compute_unit: Input should be"),
    ({"compute_unit": "external"}, r"compute_unit 'external' needs delegate.external"),
    ({"compute_unit": "external", "delegate": {"external": {"vendor": "mediatek", "path": "/l.so"}}},
     r"delegate.external: Input tag 'mediatek' .* 'qnn', 'neuron', 'enn', 'other'"),
    ({"compute_unit": "external", "delegate": {"external": {"vendor": "qnn", "path": "/l.so", "backend_type": "npu"}}},
     r"delegate.external.qnn.backend_type: Input should be 'htp', 'gpu' or 'dsp'"),
    ({"compute_unit": "external", "delegate": {"external": {"vendor": "qnn", "path": "/l.so", "backend_type": "htp",
                                                            "htp_precison": 1}}},
     r"delegate.external.qnn.htp_precison: Extra inputs are not permitted"),
    ({"compute_unit": "external", "delegate": {"external": {"vendor": "enn", "path": "/l.so", "options": {"a": "b;c"}}}},
     r"delegate.external.enn.options.a: String should match pattern"),
])
def test_an_unknown_delegate_or_a_bad_option_is_refused_when_the_inventory_loads(native, message):
    with pytest.raises(ConfigError, match=f"^test inventory: devices.pixel.native: {message}") as refused:
        pixel({"tools": {"tflite": TOOLS["tflite"]}, **native})
    assert "\n" not in str(refused.value)


def test_the_delegates_op_profile_row_goes_into_the_delegation():
    # The real op profile with its CONV_2D row named as a GPU delegate's partition node would be.
    profile = sample("tflite_op_profiling.txt").replace("\t                 CONV_2D\t       15",
                                                        "\t     TfLiteGpuDelegateV2\t       15")
    transport = FakeTransport({TOOLS["tflite"]: ("", GPU_NNAPI + profile)})
    raw = runner(transport, "gpu", op_profile=True).measure(FakeArtifact("tflite"), 2, SETTINGS)
    assert raw["delegation"]["op_profile"] == {"node_type": "TfLiteGpuDelegateV2", "avg_ms": 2651.853,
                                               "avg_percent": 89.897, "times_called": 15, "count": 15,
                                               "flops_percent": None}


def test_a_partly_delegated_record_is_flagged(tiny_artifacts, tmp_path):
    """Through bench.run on this host: a stand-in benchmark_model prints a real partial GPU delegation."""
    tool = tmp_path / "benchmark_model"
    log = GPU_PARTIAL + sample("tflite_benchmark_model_cpu_gpu.txt")
    tool.write_text(f"#!{sys.executable}\nimport sys\nsys.stderr.write({log!r})\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    device = lab_device("here", {"transport": "local", "runner": "native", "workdir": str(tmp_path / "work"),
                                 "native": {"tools": {"tflite": str(tool)}, "compute_unit": "gpu"}})
    record = bench.run(device, tiny_artifacts["fp32"].sidecar, 1, SETTINGS, tmp_path / "record.json",
                       locks=tmp_path / "locks")
    assert "partially_delegated" in record.flags
    assert record.raw["delegation"]["nodes"] == 54 and record.raw["delegation"]["of"] == 559
