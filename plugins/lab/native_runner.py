"""native: run the runtime's own benchmark tool on the device and parse what it prints.

The runner's block gives each tool's path on the device (``native: {tools: {tflite:
..., ncnn: ..., mnn: ...}, compute_unit: gpu}``). The tools print summaries, not
per-run times, so the result carries ``summary`` (the keys of
:func:`slimlab.lab.stats.summarize`, None where a tool does not report one) instead
of ``latencies_ms``. Of the runtime options it honours only TFLite's ``xnnpack``
(``--use_xnnpack``); benchncnn and benchmark.out take none of ncnn's or MNN's.

Delegates: a TFLite compute unit other than ``cpu`` is one of benchmark_model's delegates (gpu, nnapi,
hexagon, coreml, or ``external``: a vendor's delegate library through ``--external_delegate_path``, such
as Qualcomm's QNN, MediaTek's Neuron or Samsung's ENN), and ``delegate: {<unit>: {...}}`` holds that
delegate's options, each a typed field that becomes one of benchmark_model's flags, so that an unknown
delegate or option is refused when the inventory loads. The result's ``delegation`` is how much of the
graph the delegate took ("Replacing N out of M node(s) with delegate (D) node, yielding P partitions",
summed over subgraphs) and what the tool said of it ("Explicitly applied .. completely|partially
executed", "Though .. will not be executed"); with ``op_profile`` also the delegate's own row of the op
profile. A delegate that did not apply at all fails the run; one that took part of the graph sets
``partially_delegated``, which the record lists among its flags.

Memory: benchmark_model reports its footprint (on Linux and Android, its peak RSS)
after init and at the end, and with ``--report_peak_memory_footprint`` the peak: the
result's ``memory`` carries them, the peak as ``peak_rss_kib`` and the growth over
init as ``load_growth_kib``, the keys the python runner's records use. benchncnn and
benchmark.out print no memory figure. With ``op_profile: true`` benchmark_model runs
a second time with ``--enable_op_profiling`` and its per-op-type table goes into the
result as ``ops``; the timed run stays unprofiled.
"""

import posixpath
import re
from dataclasses import asdict
from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, StringConstraints, model_validator

from slimlab import hookimpl
from slimlab.errors import ArtifactError, ConfigError, DeviceError
from slimlab.lab.devices import Settings
from slimlab.lab.parsers import (ParseError, RunStats, TfliteResult, ToolMemory, ToolResult, parse_benchncnn,
                                 parse_mnn_benchmark, parse_tflite, parse_tflite_op_profile)
from slimlab.lab.runner import Runner

# benchmark_model's flag that turns each delegate on (tensorflow/lite/tools/delegates/README.md).
TFLITE_DELEGATES = {"cpu": [], "gpu": ["--use_gpu=true"], "nnapi": ["--use_nnapi=true"],
                    "hexagon": ["--use_hexagon=true"], "coreml": ["--use_coreml=true"], "external": []}
# How the delegate a compute unit asks for names itself in "Replacing .. with delegate (D)" ("TfLiteGpuDelegateV2",
# "TfLiteNnapiDelegate", "TfLiteHexagonDelegate") and in "Explicitly applied <provider> delegate". A vendor's
# library names its delegate as it likes: for ``external``, any delegate but the XNNPACK one on the CPU.
DELEGATE_NAMES = {"gpu": "gpu", "nnapi": "nnapi", "hexagon": "hexagon", "coreml": "coreml", "external": None}
PROVIDERS = {"gpu": "GPU", "nnapi": "NNAPI", "hexagon": "Hexagon", "coreml": "CoreML", "external": "External"}
CPU_DELEGATE = "xnnpack"
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


def text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def flag(name: str, value) -> str:
    """One benchmark_model flag: ``--name=value``, booleans as true/false."""
    return f"--{name}={text(value)}"


class DelegateOptions(Settings):
    """A delegate's options: each set field is one benchmark_model flag (``FLAGS``: field -> flag name)."""

    FLAGS: ClassVar[dict[str, str]] = {}

    def argv(self) -> list[str]:
        return [flag(name, getattr(self, field)) for field, name in self.FLAGS.items()
                if getattr(self, field) is not None]


class GpuDelegate(DelegateOptions):
    FLAGS: ClassVar[dict[str, str]] = {"backend": "gpu_backend", "precision_loss_allowed": "gpu_precision_loss_allowed",
             "enable_quant": "gpu_experimental_enable_quant", "sustained_speed": "gpu_inference_for_sustained_speed"}
    backend: Literal["cl", "gl"] | None = Field(
        None, description="--gpu_backend (Android): OpenCL or OpenGL, and fail if it cannot; default: cl, then gl")
    precision_loss_allowed: bool | None = Field(None, description="--gpu_precision_loss_allowed (fp16; default true)")
    enable_quant: bool | None = Field(None, description="--gpu_experimental_enable_quant (int8 models; default true)")
    sustained_speed: bool | None = Field(None, description="--gpu_inference_for_sustained_speed (default false)")


class NnapiDelegate(DelegateOptions):
    FLAGS: ClassVar[dict[str, str]] = {"accelerator": "nnapi_accelerator_name", "execution_preference": "nnapi_execution_preference",
             "execution_priority": "nnapi_execution_priority", "disable_cpu": "disable_nnapi_cpu",
             "allow_fp16": "nnapi_allow_fp16", "burst_mode": "nnapi_use_burst_mode"}
    accelerator: str | None = Field(None, min_length=1, pattern=r"^\S+$",
                                    description="--nnapi_accelerator_name (Android 10+), e.g. qti-dsp, google-edgetpu")
    execution_preference: Literal["fast_single_answer", "sustained_speed", "low_power", "undefined"] | None = None
    execution_priority: Literal["default", "low", "medium", "high"] | None = None
    disable_cpu: bool | None = Field(None, description="--disable_nnapi_cpu: no nnapi-reference (default true)")
    allow_fp16: bool | None = Field(None, description="--nnapi_allow_fp16 (default false)")
    burst_mode: bool | None = Field(None, description="--nnapi_use_burst_mode (default false)")


class HexagonDelegate(DelegateOptions):
    FLAGS: ClassVar[dict[str, str]] = {"profiling": "hexagon_profiling"}
    profiling: bool | None = Field(None, description="--hexagon_profiling")


class CoremlDelegate(DelegateOptions):
    FLAGS: ClassVar[dict[str, str]] = {"version": "coreml_version"}
    version: int | None = Field(None, ge=0, description="--coreml_version (iOS; 0: the newest on the device)")


# --external_delegate_options is "key1:value1;key2:value2": a key or value holding ':' or ';' would split wrongly.
OptionKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")]
OptionValue = Annotated[str, BeforeValidator(lambda v: text(v) if isinstance(v, (bool, int, float)) else v),
                        StringConstraints(min_length=1, pattern=r"^[^:;\s]+$")]


class ExternalDelegate(DelegateOptions):
    """A vendor's delegate library on the device, loaded by benchmark_model's external delegate provider."""

    path: str = Field(min_length=1, pattern=r"^[^;\s]+$", description="--external_delegate_path: the library")

    def vendor_options(self) -> dict:
        return {}

    def argv(self) -> list[str]:
        options = ";".join(f"{key}:{text(value)}" for key, value in self.vendor_options().items())
        return [flag("external_delegate_path", self.path), *([flag("external_delegate_options", options)] * bool(options))]


class QnnDelegate(ExternalDelegate):
    """Qualcomm's QNN delegate (``libQnnTFLiteDelegate.so``): its documented external delegate options."""

    vendor: Literal["qnn"]
    backend_type: Literal["htp", "gpu", "dsp"] = Field(description="the QNN backend: Hexagon tensor processor, "
                                                                     "Adreno GPU or Hexagon DSP")
    library_path: str | None = Field(None, pattern=r"^[^:;\s]+$", description="the backend's library, e.g. libQnnHtp.so")
    skel_library_dir: str | None = Field(None, pattern=r"^[^:;\s]+$", description="where the DSP skel libraries are")
    htp_precision: Literal[0, 1] | None = Field(None, description="0 quantized, 1 fp16")
    htp_performance_mode: int | None = Field(None, ge=0, le=9)
    dsp_performance_mode: int | None = Field(None, ge=0, le=8)
    gpu_precision: Literal[0, 1, 2, 3] | None = Field(None, description="0 as the graph says, 1 fp32, 2 fp16, 3 hybrid")
    gpu_performance_mode: Literal[0, 1, 2, 3] | None = Field(None, description="0 default, 1 high, 2 normal, 3 low")

    def vendor_options(self) -> dict:
        keys = [key for key in type(self).model_fields if key not in ("path", "vendor")]
        return {key: getattr(self, key) for key in keys if getattr(self, key) is not None}


class VendorDelegate(ExternalDelegate):
    """A delegate whose option keys slimlab does not know (MediaTek Neuron, Samsung ENN, another): passed on as
    written, each key and value checked only for what the ``key:value;..`` format can carry."""

    vendor: Literal["neuron", "enn", "other"]
    options: dict[OptionKey, OptionValue] = Field(default_factory=dict, description="--external_delegate_options")

    def vendor_options(self) -> dict:
        return dict(self.options)


class Delegates(Settings):
    """The options of the one delegate the compute unit names."""

    gpu: GpuDelegate | None = None
    nnapi: NnapiDelegate | None = None
    hexagon: HexagonDelegate | None = None
    coreml: CoremlDelegate | None = None
    external: Annotated[QnnDelegate | VendorDelegate, Field(discriminator="vendor")] | None = None


class NativeSettings(Settings):
    tools: Tools = Field(description="each runtime's benchmark tool on the device")
    compute_unit: Literal["cpu", "gpu", "nnapi", "hexagon", "coreml", "external", "vulkan", "opencl"] = Field(
        "cpu", description="tflite cpu|gpu|nnapi|hexagon|coreml|external, ncnn cpu|vulkan, mnn cpu|opencl|vulkan")
    delegate: Delegates = Field(default_factory=Delegates,
                                description="the TFLite delegate's options, under the compute unit's name")
    op_profile: bool = Field(False, description="run benchmark_model a second time with --enable_op_profiling and "
                                                "record its per-op-type table (ops)")

    @model_validator(mode="after")
    def _unit_fits_tools(self):
        for runtime, units in COMPUTE_UNITS.items():
            if getattr(self.tools, runtime) and self.compute_unit not in units:
                raise ValueError(f"compute_unit {self.compute_unit!r} is not available for {runtime}; "
                                 f"choose from {sorted(units)}")
        given = [unit for unit in type(self.delegate).model_fields if getattr(self.delegate, unit) is not None]
        if any(unit != self.compute_unit for unit in given):
            raise ValueError(f"delegate.{given[0]} is set but compute_unit is {self.compute_unit!r}")
        if self.compute_unit == "external" and not given:
            raise ValueError("compute_unit 'external' needs delegate.external: {vendor, path, ...}")
        return self

    def delegate_argv(self) -> list[str]:
        options = getattr(self.delegate, self.compute_unit, None)
        return [*TFLITE_DELEGATES[self.compute_unit], *(options.argv() if options else [])]


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
                "--report_peak_memory_footprint=true", *self.settings.delegate_argv(),
                *([] if xnnpack is None else [f"--use_xnnpack={str(xnnpack).lower()}"])]
        result = parse_tflite(*self._run(argv, settings))
        if result.inference is None:
            raise ParseError("tflite benchmark_model: benchmark_model printed memory figures but no latency "
                             "(no 'count=' line of the regular runs), so no record can be made")
        delegation = self._delegation(result, compute_unit)
        ops = None
        if self.settings.op_profile:
            ops = parse_tflite_op_profile(*self._run([*argv, "--enable_op_profiling=true"], settings))
            if not ops:
                raise ParseError("tflite benchmark_model: --enable_op_profiling=true printed no op profile")
            if delegation is not None:
                # The delegate runs as one node per partition: its row of the profile is its share of the time.
                row = [op for op in ops if op.node_type == delegation["delegate"]]
                delegation["op_profile"] = asdict(row[0]) if row else None
        runs: RunStats = result.inference
        return {
            "runtime": "tflite benchmark_model",
            "options": {} if xnnpack is None else {"xnnpack": xnnpack},
            "init_ms": result.init_ms,
            "first_inference_ms": result.first_inference_ms,
            "summary": summary(runs.count, runs.min_ms, runs.max_ms, runs.avg_ms, runs.std_ms, runs.median_ms,
                               p5_ms=runs.p5_ms, p95_ms=runs.p95_ms),
            "delegation": delegation,
            "partially_delegated": bool(delegation and delegation["partial"]),
            "delegates": [asdict(line) for line in result.delegates],
            "memory": tool_memory(result.memory),
            **({} if ops is None else {"ops": [asdict(op) for op in ops]}),
        }

    def _delegation(self, result: TfliteResult, compute_unit: str) -> dict | None:
        """How much of the graph the compute unit's delegate took: its "Replacing .." lines summed over the
        subgraphs, and the tool's verdict. A delegate that fails to apply leaves the model on the CPU (where
        XNNPACK may take it): that must not pass for a GPU or NPU result."""
        if compute_unit == "cpu":
            return None
        wanted, provider = DELEGATE_NAMES[compute_unit], PROVIDERS[compute_unit]
        lines = [d for d in result.delegates
                 if (wanted in d.delegate.lower() if wanted else CPU_DELEGATE not in d.delegate.lower())]
        verdicts = [a for a in result.applied if a.provider.lower() == provider.lower()]
        verdict = verdicts[-1] if verdicts else None
        if not lines or (verdict is not None and verdict.executed == "not"):
            said = f"; it said: the {provider} delegate will not execute the graph" if verdict else ""
            raise DeviceError(f"device {self.device.name!r}: benchmark_model ran without a {compute_unit} "
                              f"delegate (no 'Replacing .. nodes with delegate' line naming it{said})")
        names = sorted({d.delegate for d in lines})
        if len(names) > 1:
            raise ParseError(f"tflite benchmark_model: more than one delegate matches compute unit "
                             f"{compute_unit!r}: {names}")
        nodes = sum(d.replaced for d in lines)
        totals = [d.total for d in lines]
        of = None if None in totals else sum(totals)
        share = None if of is None else nodes / of
        partial = (share is not None and share < 1) or (verdict is not None and verdict.executed == "partially")
        return {"delegate": names[0], "nodes": nodes, "of": of, "share": share,
                "partitions": sum(d.partitions for d in lines), "subgraphs": len(lines),
                "executed": verdict and verdict.executed, "kernels": verdict and verdict.kernels,
                "partial": partial}

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
                "delegation": None, "tool_settings": result.settings, "memory": None}


@hookimpl
def register_runners(register):
    register(NativeRunner)
