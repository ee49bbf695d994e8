"""The native tools' parsers, on verbatim samples and on the variants other tool versions print."""

import dataclasses
import math
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from slimlab.errors import DeviceError
from slimlab.lab import parsers
from slimlab.lab.parsers import ParseError, parse_benchncnn, parse_mnn_benchmark, parse_tflite, parse_tflite_op_profile

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "device-tools"
TFLITE = (SAMPLES / "tflite_benchmark_model_cpu_gpu.txt").read_text()
PEAK = (SAMPLES / "tflite_benchmark_model_peak_memory.txt").read_text()
OP_PROFILE = (SAMPLES / "tflite_op_profiling.txt").read_text()
NCNN = (SAMPLES / "benchncnn_rk3588.txt").read_text()
MNN = (SAMPLES / "mnn_benchmark_out.txt").read_text()
MNN_2019 = (SAMPLES / "mnn_benchmark_out_2019.txt").read_text()
MNN_PROFILE = (SAMPLES / "mnn_time_profile.txt").read_text()
GPU_NNAPI = (SAMPLES / "tflite_benchmark_model_gpu_nnapi.txt").read_text()
# A real partial GPU delegation's lines (an excerpt), ahead of a real run's log.
GPU_PARTIAL = (SAMPLES / "tflite_gpu_partial_delegation.txt").read_text() + TFLITE

GARBAGE = "Segmentation fault (core dumped)\nERROR: Failed to load model /data/local/tmp/x\n"
# The peak-memory log from its memory note on: the memory lines alone, no runs.
MEMORY_ONLY = PEAK[PEAK.index("INFO: Note: as the benchmark tool"):]


def logcat(text: str, tag: str = "tflite") -> str:
    """Wrap every line the way ``adb logcat -v threadtime`` prints it."""
    return "".join(f"11-27 10:00:00.123  1234  1234 I {tag}  : {line}\n" for line in text.splitlines())


def logcat_time(text: str) -> str:
    """Wrap every line the way ``adb logcat -v time`` prints the benchmark APK's log."""
    return "".join(f"11-27 10:00:00.123 I/tflite  ( 4321): {line}\n" for line in text.splitlines())


def pty(text: str) -> str:
    """The output as read through a pty that adds its own CR to lines that already end in CRLF."""
    return text.replace("\n", "\r\r\n")


def cut(text: str, marker: str, keep: str = "") -> str:
    """The text cut off just after ``marker`` + ``keep``: as if the tool died there."""
    return text[:text.index(marker) + len(marker) + len(keep)]


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
    logcat_time,
    pty,
], ids=["no-prefix", "logcat-threadtime", "logcat-brief", "logcat-time", "pty"])
@pytest.mark.parametrize("sample", [TFLITE, PEAK], ids=["cpu_gpu", "peak_memory"])
def test_tflite_prefix_variants_parse_the_same(variant, sample):
    assert parse_tflite(variant(sample)) == parse_tflite(sample)


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
    # No "First inference" in the old summary: the warm-up's only run ("all same") is the first inference.
    assert result.warmup.count == 1 and result.first_inference_ms == pytest.approx(3012.345)


def test_tflite_regular_runs_that_all_took_the_same_time():
    text = "count=2 first=9 curr=9 min=9 max=9 avg=9 std=0\ncount=3 curr=1200(all same)\n"
    runs = parse_tflite(text).inference
    assert (runs.count, runs.min_ms, runs.max_ms, runs.avg_ms, runs.std_ms) == (3, 1.2, 1.2, 1.2, 0)


def test_tflite_without_warmup_runs_reports_no_first_inference_instead_of_zero():
    text = ("count=0\n" + TFLITE[TFLITE.index("INFO: Running benchmark for at least 50"):]).replace(
        "First inference: 106436, Warmup (avg): 106065", "First inference: 0, Warmup (avg): nan")
    result = parse_tflite(text)
    assert result.warmup is None and result.first_inference_ms is None and result.inference.count == 50


def test_tflite_first_inference_falls_back_to_the_warmups_first_run():
    text = TFLITE.replace("First inference: 106436, ", "")
    assert parse_tflite(text).first_inference_ms == pytest.approx(106.436)


@pytest.mark.parametrize("excerpt", [
    "INFO: count=50 first=106022 curr=105780 min=105416 max=106528 avg=105784 std=260 p5=105485 median=105718 "
    "p95=106281\n",
    # The log's tail: from the regular runs on.
    TFLITE[TFLITE.index("INFO: Running benchmark for at least 50"):],
], ids=["stats-line", "tail"])
def test_an_excerpt_with_only_the_regular_runs_stats_line_is_read(excerpt):
    result = parse_tflite(excerpt)
    assert result.warmup is None and result.inference == parse_tflite(TFLITE).inference


def test_tflite_delegate_coverage_is_reported_per_delegate():
    text = TFLITE.replace(
        "INFO: Initialized session",
        "INFO: Replacing 64 out of 66 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 2 partitions.\n"
        "INFO: Initialized session",
    )
    (gpu,) = parse_tflite(logcat(text)).delegates
    assert (gpu.delegate, gpu.replaced, gpu.total, gpu.partitions) == ("TfLiteGpuDelegateV2", 64, 66, 2)
    assert gpu.fraction == pytest.approx(64 / 66)


def test_tflite_newer_delegate_line_for_the_whole_graph():
    (xnnpack,) = parse_tflite(PEAK).delegates
    assert (xnnpack.delegate, xnnpack.replaced, xnnpack.total, xnnpack.partitions) == ("TfLiteXNNPackDelegate", 9, 9, 1)


def test_tflite_full_gpu_delegation_and_a_delegate_that_took_nothing():
    result = parse_tflite(GPU_NNAPI)
    assert result.delegates == (parsers.DelegateCoverage("TfLiteGpuDelegateV2", 49, 49, 1, subgraph=0),)
    assert result.created == ("GPU", "NNAPI")
    assert [(a.provider, a.executed, a.kernels) for a in result.applied] == [("GPU", "completely", None),
                                                                            ("NNAPI", "not", None)]
    assert result.inference.median_ms == pytest.approx(307.968)


def test_tflite_partial_gpu_delegation_keeps_each_delegate_line():
    gpu, xnnpack = parse_tflite(logcat(GPU_PARTIAL)).delegates
    assert (gpu.delegate, gpu.replaced, gpu.total, gpu.partitions, gpu.subgraph) == ("TfLiteGpuDelegateV2", 54, 559, 3, 0)
    assert gpu.fraction == pytest.approx(54 / 559)
    assert (xnnpack.delegate, xnnpack.replaced, xnnpack.total, xnnpack.partitions) == ("TfLiteXNNPackDelegate", 456, 506, 13)


def test_tflite_delegate_lines_of_litert_subgraphs_and_partial_verdicts():
    # LiteRT names the subgraph; benchmark_tflite_model.cc's verdict for part of the graph counts its kernels.
    text = TFLITE.replace("INFO: Initialized session", "\n".join([
        "INFO: Replacing 1 out of 1 node(s) with delegate (DispatchDelegate) node, yielding 1 partitions for "
        "subgraph 0 (encoder_1x1024).",
        "INFO: Replacing 3 out of 4 node(s) with delegate (DispatchDelegate) node, yielding 2 partitions for "
        "subgraph 1 (vision_140).",
        "INFO: Explicitly applied External delegate, and the model graph will be partially executed by the "
        "delegate w/ 3 delegate kernels.",
        "INFO: Initialized session"]))
    result = parse_tflite(text)
    assert [(d.replaced, d.total, d.subgraph) for d in result.delegates] == [(1, 1, 0), (3, 4, 1)]
    assert result.applied == (parsers.common.DelegateApplied("External", "partially", 3),)


@pytest.mark.parametrize("line", [
    "INFO: Explicitly applied GPU delegate, and the model graph will be compl",
    "INFO: Explicitly applied GPU delegate, and the model graph will be partially executed by the delegate.",
    "INFO: Though NNAPI delegate is explicitly applied, the model graph will not",
    "INFO: Created TensorFlow Lite delegate for",
    "VERBOSE: Replacing 49 out of 49 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 1 partitions for subgr",
])
def test_tflite_a_cut_or_garbled_delegate_line_is_refused(line):
    with pytest.raises(ParseError, match="tflite benchmark_model: malformed delegate"):
        parse_tflite(GPU_NNAPI.replace("INFO: The input model file size", f"{line}\nINFO: The input model file size"))


def test_tflite_memory_footprint_and_peak_memory_section():
    assert parse_tflite(TFLITE).memory == parsers.ToolMemory(init_footprint_mb=14.4414, overall_footprint_mb=14.8164)
    assert parse_tflite(PEAK).memory == parsers.ToolMemory(
        init_footprint_mb=2.46094, overall_footprint_mb=2.58984, peak_footprint_mb=7.01953,
        end_rss_mb=6, end_rss_anon_mb=2, end_rss_file_mb=4)


@pytest.mark.parametrize("excerpt, memory", [
    (MEMORY_ONLY, parse_tflite(PEAK).memory),
    (TFLITE[TFLITE.index("INFO: Note: as the benchmark tool"):], parse_tflite(TFLITE).memory),
    ("INFO: Overall peak memory footprint (MB) via periodic monitoring: 7.95312\n",
     parsers.ToolMemory(peak_footprint_mb=7.95312)),
    ("INFO: Memory footprint delta from the start of the tool (MB): init=2.46094 overall=2.58984\n",
     parsers.ToolMemory(init_footprint_mb=2.46094, overall_footprint_mb=2.58984)),
    (PEAK[PEAK.index("INFO: - VmRSS"):], parsers.ToolMemory(end_rss_mb=6, end_rss_anon_mb=2, end_rss_file_mb=4)),
], ids=["peak-memory-tail", "footprint-tail", "peak-line", "footprint-line", "vmrss-lines"])
def test_tflite_memory_lines_alone_give_the_memory_figures_and_no_latency(excerpt, memory):
    result = parse_tflite(excerpt)
    assert result.memory == memory
    assert result.inference is None and result.warmup is None
    assert result.init_ms is None and result.first_inference_ms is None


@pytest.mark.parametrize("text, why", [
    # Killed after the warm-up, memory lines or not: the warm-up's stats line must not pass for the regular runs'.
    (TFLITE.split("INFO: Running benchmark for at least 50")[0] + MEMORY_ONLY, "found 1 'count=' line"),
    (MEMORY_ONLY.replace("monitoring: 7.01953", "monitoring: 7.0x953"), "malformed peak memory line"),
    (MEMORY_ONLY.replace("init=2.46094 overall=2.58984", "init=2.46094"), "malformed memory footprint line"),
    (MEMORY_ONLY.replace("RssAnnon           : 2 MB", "RssAnnon           : 3 MB"), "is not VmRSS"),
], ids=["warmup-only", "garbled-peak", "cut-footprint", "rss-parts-disagree"])
def test_tflite_memory_lines_alone_still_refuse_what_is_cut_or_garbled(text, why):
    with pytest.raises(ParseError, match=f"tflite benchmark_model: .*{why}"):
        parse_tflite(text)


def test_tflite_op_profile_summarises_by_node_type():
    ops = parse_tflite_op_profile(OP_PROFILE)
    assert [op.node_type for op in ops] == ["CONV_2D", "DEPTHWISE_CONV_2D"]
    assert (ops[0].count, ops[0].avg_ms, ops[0].avg_percent, ops[0].times_called) == (15, 2651.853, 89.897, 15)
    # Appended to a whole benchmark log (and logcat-wrapped: tabs survive), parse_tflite carries it along.
    assert parse_tflite(logcat(TFLITE + OP_PROFILE)).ops == ops
    assert parse_tflite_op_profile(TFLITE) == ()


def test_tflite_op_profile_through_a_pty():
    assert parse_tflite_op_profile(pty(OP_PROFILE)) == parse_tflite_op_profile(OP_PROFILE)


def test_tflite_op_profile_of_the_regular_runs_not_of_initialization():
    init = OP_PROFILE.replace("Operator-wise Profiling Info for Regular Benchmark Runs:",
                              "Profiling Info for Benchmark Initialization:").replace("15\t", "1\t")
    assert parse_tflite_op_profile(init + OP_PROFILE) == parse_tflite_op_profile(OP_PROFILE)
    # Cut off before the regular runs' profile: the initialization's table must not stand in for it.
    with pytest.raises(ParseError, match="tflite benchmark_model: .*cut off"):
        parse_tflite_op_profile(init + "Operator-wise Profiling Info for Regular Benchmark Runs:\n")


def test_tflite_op_profile_with_an_empty_table_raises():
    header_only = OP_PROFILE.split("\t                 CONV_2D\t       15")[0] + "\n"
    with pytest.raises(ParseError, match="tflite benchmark_model: .*table is empty"):
        parse_tflite_op_profile(header_only)


@pytest.mark.parametrize("text", [
    cut(OP_PROFILE, "\t                 CONV_2D\t       15\t  2651.853\t"),
    cut(OP_PROFILE, "\t  2651.853\t    89.897%\t    89.897%\t     0.000\t       15\n"),
    OP_PROFILE.replace("\t    89.897%\t    89.897%", "\t    89.897%"),
    OP_PROFILE.replace("  2651.853", "  2651.8x3"),
], ids=["cut-in-a-row", "cut-after-a-row", "row-missing-a-cell", "garbled-number"])
def test_tflite_op_profile_cut_or_garbled_raises_a_parse_error(text):
    with pytest.raises(ParseError, match="tflite benchmark_model: "):
        parse_tflite_op_profile(text)


@pytest.mark.parametrize("text, why", [
    (GARBAGE, "found 0 'count=' line"),
    ("", "found 0 'count=' line"),
    # Killed after the warm-up: only one stats line; it must not pass for the regular runs.
    (TFLITE.split("INFO: Running benchmark for at least 50")[0], "found 1 'count=' line"),
    (TFLITE.split("INFO: count=50")[0], "found 1 'count=' line"),
    # The profiler's own "Timings (microseconds): count=" line is not a run.
    (OP_PROFILE, "found 0 'count=' line"),
    ("count=5 first=1 curr=1 min=1 max=1 avg=1 std=0\ncount=0\n", "the regular runs' 'count=' line has no timings"),
])
def test_tflite_output_without_results_raises_naming_the_tool(text, why):
    with pytest.raises(ParseError, match=f"tflite benchmark_model: {why}"):
        parse_tflite(text)


@pytest.mark.parametrize("text", [
    cut(TFLITE, "avg=105784", keep="")[:-2],  # avg=1057: the output ends inside the number
    cut(TFLITE, "INFO: count=50 "),  # a cut-off count= line
    cut(TFLITE, "INFO: count="),
    TFLITE.replace("p95=106281", "p95=1062"),  # cut short but followed by more output
    TFLITE.replace(" std=260 p5=105485 median=105718 p95=106281", ""),  # the line lost its tail
    TFLITE.replace("avg=105784", "avg=10x784"),
    TFLITE.replace("avg=105784", "avg=1e999"),
    TFLITE.replace("min=105416", "min=-105416"),
    TFLITE.replace("Init: 87639", "Init: 87x39"),
    TFLITE.replace("init=14.4414 overall=14.8164", "init=14.4414 overall="),
], ids=["cut-in-avg", "cut-after-count", "bare-count", "short-p95", "missing-keys", "garbled-avg", "infinite",
        "negative", "garbled-summary", "cut-memory"])
def test_tflite_truncated_or_garbled_numbers_raise_instead_of_a_wrong_value(text):
    with pytest.raises(ParseError, match="tflite benchmark_model: "):
        parse_tflite(text)


@pytest.mark.timeout(5)
def test_a_garbled_line_of_long_numbers_is_refused_at_once():
    # Numbers that match in more than one way made the regex try every split of every number: seconds per line.
    digits = "1" * 12
    line = f"count=5 first={digits} curr={digits} min={digits} max={digits} avg={digits} std={digits}x\n"
    with pytest.raises(ParseError, match="malformed 'count=' line"):
        parse_tflite(line * 20)


def test_parse_error_is_a_device_error_the_cli_prints_in_one_line():
    assert issubclass(ParseError, DeviceError)


def test_benchncnn_sample():
    result = parse_benchncnn(NCNN)
    assert result.settings == {"loop_count": "8", "num_threads": "4", "powersave": "2", "gpu_device": "-1",
                               "cooling_down": "1"}
    assert result.loops == 8
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


def test_a_model_line_the_output_ends_inside_is_not_read():
    ncnn = parse_benchncnn(cut(NCNN, "efficientnetv2_b0  min =   28.10  max =   28.17  avg =   2"))
    assert [m.name for m in ncnn.models] == ["squeezenet", "squeezenet_int8", "mobilenet"]
    mnn = parse_mnn_benchmark(cut(MNN, "mobilenetV3.mnn             max =   15.802 ms  min =   15.124 ms  avg = "))
    assert [m.name for m in mnn.models] == ["resnet-v2-50.mnn", "mobilenet-v1-1.0.mnn"]


@pytest.mark.parametrize("text", [
    NCNN.replace("avg =   28.14", "avg =   2"),  # cut short, more output after it
    NCNN.replace("avg =   28.14", "avg =   28.1x"),
    NCNN.replace("  avg =   28.14", ""),
    NCNN.replace("min =    7.57", "min =    0.00"),
    NCNN.replace("loop_count = 8", "loop_count = 8x"),
], ids=["short-avg", "garbled-avg", "no-avg", "zero", "garbled-loop-count"])
def test_benchncnn_truncated_or_garbled_lines_raise(text):
    with pytest.raises(ParseError, match="ncnn benchncnn: "):
        parse_benchncnn(text)


def test_mnn_sample_keeps_max_min_avg_apart():
    result = parse_mnn_benchmark(MNN)
    assert result.settings["Forward type"] == "CPU" and result.settings["thread"] == "4"
    assert result.settings["loop"] == "20" and result.settings["warmup"] == "5" and result.loops == 20
    first = result.models[0]
    assert first.name == "resnet-v2-50.mnn"
    assert (first.min_ms, first.max_ms, first.avg_ms) == (336.965, 339.943, 338.189)


def test_mnn_older_layout_without_space_before_ms():
    old = ("Forward type: **CPU** thread=2** precision=2\n"
           "[ - ] mobilenet-v1-1.0.mnn    max =  499.545ms  min =  480.100ms  avg =  490.250ms\n")
    (model,) = parse_mnn_benchmark(old).models
    assert (model.min_ms, model.max_ms, model.avg_ms) == (480.1, 499.545, 490.25)


def test_mnn_newer_layout_without_asterisks():
    new = ("MNN benchmark\n"
           "Forward type: CPU thread=4 precision=2 sparsity=0 sparseBlockOC=1 testQuantizedModel=0\n"
           "--------> Benchmarking... loop = 20, warmup = 5\n"
           "[-INFO-]: precision=2, use fp16 inference if your device supports and open MNN_ARM82=ON.\n"
           "[ - ] model.mnn                   max =   15.802 ms  min =   15.124 ms  avg =   15.222 ms\n")
    result = parse_mnn_benchmark(new)
    assert result.settings["Forward type"] == "CPU" and result.settings["testQuantizedModel"] == "0"
    assert result.loops == 20 and result.models[0].avg_ms == 15.222


@pytest.mark.parametrize("text", [
    MNN_2019,
    # February 2019 (MNN's benchmark/result/2019-2-18.md): no thread count, and a "Warming up..." line.
    MNN_2019.replace("Forward type: **CPU** thread=4\n", "Forward type: **CPU**\nWarming up...\n"),
    # March 2020 (2020-3-22.md): the backend's own lines between the model lines.
    MNN_2019.replace("[ - ] MobileNetV2_224.mnn", 'parsed /proc/cpuinfo Hardware = "Hisilicon Kirin990"\n\n'
                     "[MNNInfo]:*************set armv82 backend*************\n[ - ] MobileNetV2_224.mnn"),
], ids=["2019", "february-2019", "early-2020"])
def test_mnn_2019_layout_gives_the_loop_count_and_no_warmup_count(text):
    result = parse_mnn_benchmark(text)
    assert result.loops == 10 and result.settings["loop"] == "10" and result.settings["Forward type"] == "CPU"
    assert "warmup" not in result.settings  # the tool printed none: unknown, not guessed
    assert [m.name for m in result.models] == ["resnet-v2-50.mnn", "MobileNetV2_224.mnn", "mobilenet-v1-1.0.mnn",
                                               "SqueezeNetV1.0.mnn", "inception-v3.mnn"]
    mobilenet = result.models[1]
    assert (mobilenet.min_ms, mobilenet.max_ms, mobilenet.avg_ms) == (38.512, 40.129, 39.225)


@pytest.mark.parametrize("parse, tool", [(parse_benchncnn, "ncnn benchncnn"),
                                         (parse_mnn_benchmark, "MNN benchmark.out")])
def test_tool_output_without_model_lines_raises(parse, tool):
    with pytest.raises(ParseError, match=tool):
        parse(GARBAGE)
    with pytest.raises(ParseError, match=tool):
        parse(TFLITE)


@pytest.mark.parametrize("text", [
    "[ - ] m.mnn    max =  4.2 ms  min =  4.0 ms\n",
    MNN.replace("avg =   15.222 ms", "avg =   15.2 2 ms"),
    MNN.replace("loop = 20", "loop = 2 0"),
    MNN.replace("avg =   69.652", "avg =   99.652"),  # above max
    MNN.replace("loop = 20, warmup = 5", "loop = 20, warmup = "),
    MNN_2019.replace("loop = 10", "loop = 1x"),
    MNN_2019.replace("loop = 10", "loop = 10 warmup = 5"),
    MNN_2019.replace("max =   40.129ms", "max =   40.1 9ms"),
], ids=["no-avg", "garbled-avg", "garbled-loop", "avg-above-max", "warmup-without-count", "2019-garbled-loop",
        "2019-loop-with-stray-text", "2019-garbled-max"])
def test_mnn_truncated_or_garbled_lines_raise(text):
    with pytest.raises(ParseError, match="MNN benchmark.out: "):
        parse_mnn_benchmark(text)


def test_mnn_time_profile_per_op_type():
    ops = parsers.parse_mnn_time_profile(MNN_PROFILE)
    assert [op.node_type for op in ops] == ["Raster", "Pooling", "BinaryOp", "ConvolutionDepthwise", "Convolution"]
    conv = ops[-1]
    assert (conv.avg_ms, conv.avg_percent, conv.times_called) == (8.522696, 78.938828, 36)
    assert conv.flops_percent == 93.047722
    assert conv.count is None
    assert parsers.parse_mnn_time_profile(pty(MNN_PROFILE)) == ops


@pytest.mark.parametrize("text, why", [
    (MNN, "no 'Sort by time cost' table"),
    (cut(MNN_PROFILE, "Convolution          \t8.52"), "cut off"),
    (cut(MNN_PROFILE, "\t93.047722  \t\n"), "cut off"),
    (MNN_PROFILE.replace("10.000000", "10.5"), "times called"),
    (MNN_PROFILE.replace("\t6.882916   \t", "\t"), "cells"),
])
def test_mnn_time_profile_cut_or_garbled_raises(text, why):
    with pytest.raises(ParseError, match=f"MNN timeProfile.out: .*{why}"):
        parsers.parse_mnn_time_profile(text)


# --- Property-style: cut every fixture everywhere, garble its digits; never a wrong number ---------------

@dataclasses.dataclass(frozen=True)
class Fixture:
    id: str
    parse: Callable
    tool: str
    text: str
    unneeded: str | None = None  # in the first line the parse does not need: a cut from there on changes nothing


BASE = [
    Fixture("tflite", parse_tflite, "tflite benchmark_model", TFLITE),
    Fixture("tflite-peak", parse_tflite, "tflite benchmark_model", PEAK),
    Fixture("tflite-gpu-nnapi", parse_tflite, "tflite benchmark_model", GPU_NNAPI),
    Fixture("tflite-gpu-partial", parse_tflite, "tflite benchmark_model", GPU_PARTIAL),
    Fixture("op-profile", parse_tflite_op_profile, "tflite benchmark_model", OP_PROFILE, "Timings (microseconds)"),
    Fixture("ncnn", parse_benchncnn, "ncnn benchncnn", NCNN),
    Fixture("tflite-memory-only", parse_tflite, "tflite benchmark_model", MEMORY_ONLY),
    Fixture("mnn", parse_mnn_benchmark, "MNN benchmark.out", MNN),
    Fixture("mnn-2019", parse_mnn_benchmark, "MNN benchmark.out", MNN_2019),
    Fixture("mnn-profile", parsers.parse_mnn_time_profile, "MNN timeProfile.out", MNN_PROFILE, "main, 138"),
]
FIXTURES = BASE + [dataclasses.replace(f, id=f"{f.id}/{name}", text=wrap(f.text))
                   for f in BASE for name, wrap in (("logcat-time", logcat_time), ("pty", pty))]
# A table is whole or absent; lines that each stand alone (models, delegates) may stop early.
TABLES = ("ops", "")
# A number, not digits inside a name such as "Conv2d_0", "p95" or "resnet-v2-50.mnn"; older tools glue "ms" to it.
IN_NUMBER = re.compile(r"(?<![\w.\-])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?=\W|ms\b|$)")


def agrees(got, full, path: str = "") -> bool:
    """Every number ``got`` holds is the one ``full`` holds at that place; ``got`` may lack what a cut removed."""
    if got is None or got == () or got == {}:
        return True
    if dataclasses.is_dataclass(got):
        return all(agrees(getattr(got, f.name), getattr(full, f.name), f.name) for f in dataclasses.fields(got))
    if isinstance(got, dict):
        return all(full.get(key) == value for key, value in got.items())
    if isinstance(got, tuple):
        return got == full if path in TABLES else got == full[:len(got)]
    return got == full


def leaves(value, path: str = "") -> dict:
    """Every scalar of a parse result by its path, e.g. ``inference.avg_ms`` or ``[2].avg_ms``."""
    if dataclasses.is_dataclass(value):
        return {k: v for f in dataclasses.fields(value)
                for k, v in leaves(getattr(value, f.name), f"{path}.{f.name}").items()}
    if isinstance(value, (tuple, dict)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return {k: v for key, item in items for k, v in leaves(item, f"{path}[{key}]").items()}
    # Settings are echoed as text: "8" is the number 8.
    return {path: float(value) if isinstance(value, str) and re.fullmatch(parsers.NUMBER, value) else value}


def outcome(fixture: Fixture, text: str):
    """The parse, or None when it refused with a ParseError that names the tool (anything else fails the test)."""
    try:
        return fixture.parse(text)
    except ParseError as exc:
        assert str(exc).startswith(f"{fixture.tool}: "), exc
        return None


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f.id)
def test_a_cut_anywhere_gives_the_right_numbers_or_a_parse_error(fixture):
    text, full = fixture.text, fixture.parse(fixture.text)
    needed = text.rfind("\n", 0, text.index(fixture.unneeded)) + 1 if fixture.unneeded else len(text)
    ends = [match.end() for match in re.finditer("\n", text)]
    rng = random.Random(f"cut-{fixture.id}")
    for position in sorted({*ends, *(end - 1 for end in ends), *rng.sample(range(len(text)), 200)}):
        got = outcome(fixture, text[:position])
        if position >= needed:
            assert got == full, f"cut at {position} ({text[position - 30:position]!r}) lost numbers"
        assert got is None or agrees(got, full), f"cut at {position} ({text[position - 30:position]!r}): {got}"


@pytest.mark.parametrize("fixture", BASE, ids=lambda f: f.id)
def test_a_garbled_digit_gives_what_the_text_says_or_a_parse_error(fixture):
    """Each mutation changes one digit of one number: the parse reads that number as written, or refuses."""
    text, full = fixture.text, leaves(fixture.parse(fixture.text))
    numbers = [m for m in IN_NUMBER.finditer(text) if float(m.group()) != 0]
    rng = random.Random(f"garble-{fixture.id}")
    for _ in range(150):
        number = rng.choice(numbers)
        digits = [i for i in range(number.start(), number.end()) if text[i].isdigit()]
        at = rng.choice(digits)
        new_char = rng.choice([c for c in "0123456789x .-e" if c != text[at]] + [""])
        token = text[number.start():at] + new_char + text[at + 1:number.end()]
        got = outcome(fixture, text[:at] + new_char + text[at + 1:])
        if got is None:
            continue
        # A digit turned into a space at a padded number's edge leaves a shorter number: what the text says.
        old, new = float(number.group()), float(token) if re.fullmatch(parsers.NUMBER, token.strip()) else None
        got = leaves(got)
        assert got.keys() == full.keys(), f"{number.group()!r} -> {token!r} changed what was read"
        for path, value in got.items():
            scaled = new is not None and isinstance(value, (int, float)) and math.isclose(value * old, full[path] * new)
            assert value == full[path] or scaled, f"{number.group()!r} -> {token!r}: {path} = {value}"
