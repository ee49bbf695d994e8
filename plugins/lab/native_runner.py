"""native: run the runtime's own benchmark tool on the device and parse what it prints.

The runner's block gives each tool's path on the device (``native: {tools: {tflite:
..., ncnn: ..., mnn: ...}, compute_unit: gpu}``). The tools print summaries, not
per-run times, so the result carries ``summary`` (the keys of
:func:`slimlab.lab.stats.summarize`, None where a tool does not report one) instead
of ``latencies_ms``. Of the runtime options it honours only TFLite's ``xnnpack``
(``--use_xnnpack``); benchncnn and benchmark.out take none of ncnn's or MNN's.

Memory: benchmark_model reports its footprint (on Linux and Android, its peak RSS)
after init and at the end, and with ``--report_peak_memory_footprint`` the peak: the
result's ``memory`` carries them, the peak as ``peak_rss_kib`` and the growth over
init as ``load_growth_kib``, the keys the python runner's records use. benchncnn and
benchmark.out print no memory figure. With ``op_profile: true`` benchmark_model runs
a second time with ``--enable_op_profiling`` and its per-op-type table goes into the
result as ``ops``; the timed run stays unprofiled.
"""

import posixpath
from dataclasses import asdict
from typing import Literal

from pydantic import Field, model_validator

from slimlab import hookimpl
from slimlab.errors import ArtifactError, ConfigError, DeviceError
from slimlab.lab.devices import Settings
from slimlab.lab.parsers import (ParseError, RunStats, ToolMemory, ToolResult, parse_benchncnn, parse_mnn_benchmark,
                                 parse_tflite, parse_tflite_op_profile)
from slimlab.lab.runner import Runner

TFLITE_DELEGATES = {"cpu": [], "gpu": ["--use_gpu=true"], "nnapi": ["--use_nnapi=true"]}
# How the delegate a compute unit asks for names itself ("TfLiteGpuDelegateV2", "TfLiteNnapiDelegate").
DELEGATE_NAMES = {"gpu": "gpu", "nnapi": "nnapi"}
NCNN_GPU_DEVICE = {"cpu": "-1", "vulkan": "0"}
MNN_FORWARD_TYPE = {"cpu": "0", "opencl": "3", "vulkan": "7"}  # MNNForwardType
COMPUTE_UNITS = {"tflite": TFLITE_DELEGATES, "ncnn": NCNN_GPU_DEVICE, "mnn": MNN_FORWARD_TYPE}


def summary(n: int, min_ms: float, max_ms: float, mean_ms: float, std_ms: float | None = None,
            median_ms: float | None = None, **percentiles: float | None) -> dict:
    return {"n": n, "median_ms": median_ms, "p90_ms": None, "min_ms": min_ms, "max_ms": max_ms,
            "mean_ms": mean_ms, "std_ms": std_ms, "cv": std_ms / mean_ms if std_ms is not None else None,
            **percentiles}


def tool_memory(memory: ToolMemory | None) -> dict | None:
    """benchmark_model's figures, with the peak and the growth over init in KiB under the python runner's keys."""
    if memory is None:
        return None
    kib = {"peak_rss_kib": memory.peak_footprint_mb, "load_growth_kib": memory.init_footprint_mb}
    return {**{key: None if mb is None else round(mb * 1024) for key, mb in kib.items()}, **asdict(memory)}


class Tools(Settings):
    tflite: str | None = Field(None, min_length=1, description="path of TFLite's benchmark_model")
    ncnn: str | None = Field(None, min_length=1, description="path of ncnn's benchncnn")
    mnn: str | None = Field(None, min_length=1, description="path of MNN's benchmark.out")


class NativeSettings(Settings):
    tools: Tools = Field(description="each runtime's benchmark tool on the device")
    compute_unit: Literal["cpu", "gpu", "nnapi", "vulkan", "opencl"] = Field(
        "cpu", description="tflite cpu|gpu|nnapi, ncnn cpu|vulkan, mnn cpu|opencl|vulkan")
    op_profile: bool = Field(False, description="run benchmark_model a second time with --enable_op_profiling and "
                                                "record its per-op-type table (ops)")

    @model_validator(mode="after")
    def _unit_fits_tools(self):
        for runtime, units in COMPUTE_UNITS.items():
            if getattr(self.tools, runtime) and self.compute_unit not in units:
                raise ValueError(f"compute_unit {self.compute_unit!r} is not available for {runtime}; "
                                 f"choose from {sorted(units)}")
        return self


class NativeRunner(Runner):
    name = "native"
    Settings = NativeSettings

    @classmethod
    def honours(cls, fmt: str) -> frozenset[str]:
        return frozenset({"xnnpack"}) if fmt == "tflite" else frozenset()

    def measure(self, artifact, threads: int, settings: dict) -> dict:
        runtime = artifact.kind
        tool = getattr(self.settings.tools, runtime, None) if runtime in COMPUTE_UNITS else None
        if tool is None:
            raise ConfigError(f"device {self.device.name!r}: native.tools.{runtime}: no native benchmark tool "
                              f"configured for {runtime} models")
        compute_unit = self.settings.compute_unit
        model = self.transport.push(artifact.path)
        run = {"tflite": self._tflite, "ncnn": self._ncnn, "mnn": self._mnn}[runtime]
        options = settings["options"].get(runtime, {})
        raw = run(tool, model, artifact, threads, settings, compute_unit, options)
        return {"tool": tool, "threads": threads, "compute_unit": compute_unit, "honoured": sorted(options), **raw}

    def _run(self, argv: list[str], settings: dict) -> tuple[str, str]:
        result = self.transport.run(argv, timeout=settings["timeout_s"])
        if result.returncode != 0:
            tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise DeviceError(f"device {self.device.name!r}: {argv[0]} exited {result.returncode}: {tail[0]}")
        # benchmark_model logs to stderr, benchncnn prints there, benchmark.out to stdout. The parsers take
        # the two apart, so that a line one of them ends inside stays a cut-off line.
        return result.stdout, result.stderr

    def _tflite(self, tool, model, artifact, threads, settings, compute_unit, options) -> dict:
        xnnpack = options.get("xnnpack")
        # The peak-memory monitor is a thread that wakes every 50 ms: nothing next to the runs.
        argv = [tool, f"--graph={model}", f"--num_threads={threads}", f"--warmup_runs={settings['warmup']}",
                "--warmup_min_secs=0", f"--num_runs={settings['runs']}", f"--min_secs={settings['min_seconds']}",
                "--report_peak_memory_footprint=true", *TFLITE_DELEGATES[compute_unit],
                *([] if xnnpack is None else [f"--use_xnnpack={str(xnnpack).lower()}"])]
        result = parse_tflite(*self._run(argv, settings))
        # A delegate that fails to apply leaves the model on the CPU (where XNNPACK may take it): that must
        # not pass for a GPU result.
        wanted = DELEGATE_NAMES.get(compute_unit, "")
        coverage = ([d for d in result.delegates if wanted in d.delegate.lower()] or [None])[-1]
        if compute_unit != "cpu" and coverage is None:
            raise DeviceError(f"device {self.device.name!r}: benchmark_model ran without a {compute_unit} "
                              "delegate (no 'Replacing .. nodes with delegate' line naming it)")
        ops = None
        if self.settings.op_profile:
            ops = parse_tflite_op_profile(*self._run([*argv, "--enable_op_profiling=true"], settings))
            if not ops:
                raise ParseError("tflite benchmark_model: --enable_op_profiling=true printed no op profile")
        runs: RunStats = result.inference
        return {
            "runtime": "tflite benchmark_model",
            "options": {} if xnnpack is None else {"xnnpack": xnnpack},
            "init_ms": result.init_ms,
            "first_inference_ms": result.first_inference_ms,
            "summary": summary(runs.count, runs.min_ms, runs.max_ms, runs.avg_ms, runs.std_ms, runs.median_ms,
                               p5_ms=runs.p5_ms, p95_ms=runs.p95_ms),
            "delegate_coverage": coverage and {"delegate": coverage.delegate, "replaced": coverage.replaced,
                                               "total": coverage.total, "fraction": coverage.fraction,
                                               "partitions": coverage.partitions},
            "memory": tool_memory(result.memory),
            **({} if ops is None else {"ops": [asdict(op) for op in ops]}),
        }

    def _ncnn(self, tool, model, artifact, threads, settings, compute_unit, options) -> dict:
        shape = artifact.info.input_shape
        if shape is None:
            raise ArtifactError(f"{artifact.dir}: the sidecar has no input_shape, which benchncnn needs")
        _, height, width, channels = shape  # NHWC; ncnn takes [w,h,c]
        # powersave 0 = all cores; cooling down 0: slimlab paces runs itself.
        argv = [tool, str(settings["runs"]), str(threads), "0", NCNN_GPU_DEVICE[compute_unit], "0",
                f"param={model}", f"shape=[{width},{height},{channels}]"]
        result = parse_benchncnn(*self._run(argv, settings))
        return self._tool_result("ncnn benchncnn", result, model)

    def _mnn(self, tool, model, artifact, threads, settings, compute_unit, options) -> dict:
        # benchmark.out times every .mnn file in a folder, so the model gets a folder of its own.
        folder = f"{self.transport.workdir}/mnn/{artifact.sha256}"
        for argv in (["mkdir", "-p", folder], ["ln", "-sf", model, f"{folder}/model.mnn"]):
            self._run(argv, settings)
        argv = [tool, folder, str(settings["runs"]), str(settings["warmup"]), MNN_FORWARD_TYPE[compute_unit],
                str(threads)]
        result = parse_mnn_benchmark(*self._run(argv, settings))
        return self._tool_result("MNN benchmark.out", result, "model.mnn")

    @staticmethod
    def _tool_result(runtime: str, result: ToolResult, model: str) -> dict:
        """The one model line for ``model``; ncnn and MNN echo the loop count they ran."""
        timings = [m for m in result.models if posixpath.basename(m.name) == posixpath.basename(model)]
        if len(timings) != 1 or result.loops is None:
            raise ParseError(f"{runtime}: expected the loop count and one timing line for {model}, "
                             f"got {sorted(result.settings)} and {[m.name for m in result.models]}")
        timing = timings[0]
        return {"runtime": runtime, "options": {}, "init_ms": None, "first_inference_ms": None,
                "summary": summary(result.loops, timing.min_ms, timing.max_ms, timing.avg_ms),
                "delegate_coverage": None, "tool_settings": result.settings, "memory": None}


@hookimpl
def register_runners(register):
    register(NativeRunner)
