"""The native tools' parsers, on verbatim samples and on the variants other tool versions print."""

from pathlib import Path

import pytest

from slimlab.errors import DeviceError
from slimlab.lab.parsers import ParseError, parse_benchncnn, parse_mnn_benchmark, parse_tflite, parse_tflite_op_profile

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "device-tools"
TFLITE = (SAMPLES / "tflite_benchmark_model_cpu_gpu.txt").read_text()
OP_PROFILE = (SAMPLES / "tflite_op_profiling.txt").read_text()
NCNN = (SAMPLES / "benchncnn_rk3588.txt").read_text()
MNN = (SAMPLES / "mnn_benchmark_out.txt").read_text()

GARBAGE = "Segmentation fault (core dumped)\nERROR: Failed to load model /data/local/tmp/x\n"


def logcat(text: str, tag: str = "tflite") -> str:
    """Wrap every line the way ``adb logcat -v threadtime`` prints it."""
    return "".join(f"11-27 10:00:00.123  1234  1234 I {tag}  : {line}\n" for line in text.splitlines())


def test_tflite_sample_gives_milliseconds_with_warmup_and_regular_runs_apart():
    result = parse_tflite(TFLITE)
    assert result.init_ms == pytest.approx(87.639)
    assert result.first_inference_ms == pytest.approx(106.436)
    assert result.warmup.count == 5 and result.warmup.avg_ms == pytest.approx(106.065)
    regular = result.inference
    assert regular.count == 50
    assert (regular.min_ms, regular.max_ms, regular.avg_ms) == pytest.approx((105.416, 106.528, 105.784))
    assert regular.std_ms == pytest.approx(0.26)
    assert (regular.p5_ms, regular.median_ms, regular.p95_ms) == pytest.approx((105.485, 105.718, 106.281))
    assert result.delegates == () and result.ops == ()


@pytest.mark.parametrize("variant", [
    lambda text: text.replace("INFO: ", ""),
    logcat,
    lambda text: "".join(f"I/tflite  ( 4321): {line}\n" for line in text.splitlines()),
], ids=["no-prefix", "logcat-threadtime", "logcat-brief"])
def test_tflite_prefix_variants_parse_the_same(variant):
    assert parse_tflite(variant(TFLITE)) == parse_tflite(TFLITE)


def test_tflite_older_layout_without_percentiles_and_in_scientific_notation():
    old = (
        "Running benchmark for at least 1 iterations and at least 0.5 seconds\n"
        "count=1 curr=3012345\n"
        "Running benchmark for at least 50 iterations and at least 1 seconds\n"
        "count=50 first=2989660 curr=2912978 min=2727203 max=3189476 avg=2.95034e+06 std=109770\n"
        "Average inference timings in us: Warmup: 3.01234e+06, Init: 1339, Inference: 2.95034e+06\n"
    )
    result = parse_tflite(old)
    assert result.inference.avg_ms == pytest.approx(2950.34)
    assert result.inference.median_ms is None and result.inference.p95_ms is None
    assert result.init_ms == pytest.approx(1.339)
    # No "First inference" in the old summary: the warm-up's only run is the first inference.
    assert result.warmup.count == 1 and result.first_inference_ms is None


def test_tflite_first_inference_falls_back_to_the_warmups_first_run():
    text = TFLITE.replace("First inference: 106436, ", "")
    assert parse_tflite(text).first_inference_ms == pytest.approx(106.436)


def test_tflite_delegate_coverage_is_reported_per_delegate():
    text = TFLITE.replace(
        "INFO: Initialized session",
        "INFO: Replacing 64 out of 66 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 2 partitions.\n"
        "INFO: Initialized session",
    )
    (gpu,) = parse_tflite(logcat(text)).delegates
    assert (gpu.delegate, gpu.replaced, gpu.total, gpu.partitions) == ("TfLiteGpuDelegateV2", 64, 66, 2)
    assert gpu.fraction == pytest.approx(64 / 66)


def test_tflite_op_profile_summarises_by_node_type():
    ops = parse_tflite_op_profile(OP_PROFILE)
    assert [op.node_type for op in ops] == ["CONV_2D", "DEPTHWISE_CONV_2D"]
    assert (ops[0].count, ops[0].avg_ms, ops[0].avg_percent, ops[0].times_called) == (15, 2651.853, 89.897, 15)
    # Appended to a whole benchmark log (and logcat-wrapped: tabs survive), parse_tflite carries it along.
    assert parse_tflite(logcat(TFLITE + OP_PROFILE)).ops == ops
    assert parse_tflite_op_profile(TFLITE) == ()


def test_tflite_op_profile_with_an_empty_table_raises():
    header_only = OP_PROFILE.split("\t                 CONV_2D\t       15")[0]
    with pytest.raises(ParseError, match="tflite benchmark_model: .*table is empty"):
        parse_tflite_op_profile(header_only)


@pytest.mark.parametrize("text, why", [
    (GARBAGE, "found 0 'count=' line"),
    ("", "found 0 'count=' line"),
    # Killed after the warm-up: only one stats line; it must not pass for the regular runs.
    (TFLITE.split("INFO: Running benchmark for at least 50")[0], "found 1 'count=' line"),
    # The profiler's own "Timings (microseconds): count=" line is not a run.
    (OP_PROFILE, "found 0 'count=' line"),
    ("count=5 first=1 curr=1 min=1 max=1 avg=1 std=0\ncount=0\n", "the regular runs' 'count=' line has no timings"),
])
def test_tflite_output_without_results_raises_naming_the_tool(text, why):
    with pytest.raises(ParseError, match=f"tflite benchmark_model: {why}"):
        parse_tflite(text)


def test_parse_error_is_a_device_error_the_cli_prints_in_one_line():
    assert issubclass(ParseError, DeviceError)


def test_benchncnn_sample():
    result = parse_benchncnn(NCNN)
    assert result.settings == {"loop_count": "8", "num_threads": "4", "powersave": "2", "gpu_device": "-1",
                               "cooling_down": "1"}
    assert [m.name for m in result.models] == ["squeezenet", "squeezenet_int8", "mobilenet", "efficientnetv2_b0"]
    last = result.models[-1]
    assert (last.min_ms, last.max_ms, last.avg_ms) == (28.10, 28.17, 28.14)


def test_benchncnn_skips_vulkan_device_lines_and_reads_a_param_path():
    vulkan = (
        "[0 Mali-G610]  queueC=2[2]  queueG=0[2]  queueT=1[2]\n"
        "[0 Mali-G610]  bugsbn1=0  bugbilz=0  bugcopc=0  bugihfa=0\n"
        "[0 Mali-G610]  fp16-p/s/a=1/1/1  int8-p/s/a=1/1/1\n"
        "[0 Mali-G610]  subgroup=16  basic/vote/ballot/shuffle=1/1/1/1\n"
        "loop_count = 20\nnum_threads = 1\npowersave = 0\ngpu_device = 0\ncooling_down = 0\n"
        "/data/local/tmp/slimlab/blobs/3fa9.param  min =    1.25  max =    1.40  avg =    1.31\n"
    )
    result = parse_benchncnn(vulkan)
    assert result.settings["gpu_device"] == "0"
    (model,) = result.models
    assert model.name.endswith("3fa9.param") and model.avg_ms == 1.31


def test_mnn_sample_keeps_max_min_avg_apart():
    result = parse_mnn_benchmark(MNN)
    assert result.settings["Forward type"] == "CPU" and result.settings["thread"] == "4"
    assert result.settings["loop"] == "20" and result.settings["warmup"] == "5"
    first = result.models[0]
    assert first.name == "resnet-v2-50.mnn"
    assert (first.min_ms, first.max_ms, first.avg_ms) == (336.965, 339.943, 338.189)


def test_mnn_older_layout_without_space_before_ms():
    old = ("Forward type: **CPU** thread=2** precision=2\n"
           "[ - ] mobilenet-v1-1.0.mnn    max =  499.545ms  min =  480.100ms  avg =  490.250ms\n")
    (model,) = parse_mnn_benchmark(old).models
    assert (model.min_ms, model.max_ms, model.avg_ms) == (480.1, 499.545, 490.25)


@pytest.mark.parametrize("parse, tool", [(parse_benchncnn, "ncnn benchncnn"),
                                         (parse_mnn_benchmark, "MNN benchmark.out")])
def test_tool_output_without_model_lines_raises(parse, tool):
    with pytest.raises(ParseError, match=tool):
        parse(GARBAGE)
    with pytest.raises(ParseError, match=tool):
        parse(TFLITE)


def test_mnn_model_line_missing_a_time_raises():
    with pytest.raises(ParseError, match="MNN benchmark.out: model line lacks"):
        parse_mnn_benchmark("[ - ] m.mnn    max =  4.2 ms  min =  4.0 ms\n")
