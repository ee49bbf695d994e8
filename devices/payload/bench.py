"""Time one model in its own runtime on this device and print one result line.

Pushed to the device by slimlab's ``python`` runner; it imports nothing from
slimlab, only NumPy and the runtime it is asked for (LiteRT/tflite_runtime,
ncnn, MNN or onnxruntime). One script serves every runtime, so every format is
timed by the same loop: warm-up, then at least ``--runs`` invocations *and* at
least ``--min-seconds`` (MLPerf-style), keeping every per-iteration latency.

Around that loop it records the run context from the device's own sysfs:
thermal zones, battery temperature and charging state, each CPU's frequency and
governor, read right before and right after the timed runs, while the CPUs are
still under load (read from the host after the payload exits, frequencies
would show the idle clock and hide throttling). It pins itself to
``--affinity`` before any thread starts and, with ``--cooldown-max-temp-c``,
waits for the device to cool down before the model loads.

The result is one line, ``slimlab-result: {json}``, last on stdout: runtimes
print to stdout themselves (MNN from C, whose buffer may flush after ours), so
the runner looks for the prefix rather than trusting the last line. Bad options
and missing runtimes exit 2 with one ``slimlab-payload: error: ...`` line.
"""

import argparse
import importlib
import json
import os
import platform
import re
import time
from abc import ABC, abstractmethod
from pathlib import Path

RESULT_PREFIX = "slimlab-result: "

# Options each runtime accepts: bool, or the tuple of allowed values. Mirrors the
# config schema's ``bench.options`` block; checked here too, against the runtime that runs.
NCNN_FLAGS = ("use_fp16_storage", "use_fp16_arithmetic", "use_fp16_packed", "use_packing_layout",
              "use_winograd_convolution", "use_sgemm_convolution", "lightmode")
MNN_MODES = ("normal", "high", "low")


class PayloadError(Exception):
    """A problem the user must fix (an option, a missing runtime): reported as one line, exit 2."""


def require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PayloadError(f"runtime module {module!r} is not installed on this device ({exc})") from None


def checked(runtime: str, options: dict, allowed: dict) -> dict:
    for name, value in options.items():
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            raise PayloadError(f"unknown {runtime} option {name!r} (known: {known})")
        expected = allowed[name]
        if expected is bool and not isinstance(value, bool):
            raise PayloadError(f"{runtime} option {name!r} must be true or false, got {value!r}")
        if isinstance(expected, tuple) and value not in expected:
            raise PayloadError(f"{runtime} option {name!r} must be one of {', '.join(expected)}, got {value!r}")
    return options


def random_input(np, shape, dtype, rng):
    """Uniform noise in the tensor's type: [0, 1) for floats, the full range for integers."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.random(shape, dtype=np.float32).astype(dtype)


class Runtime(ABC):
    """One runtime: ``__init__`` imports it (untimed), ``load`` is timed as init, ``feed`` sets a random
    input (untimed), ``invoke`` is one timed inference, ``applied`` reads the options back."""

    allowed: dict = {}

    def __init__(self, np):
        self.np = np

    @abstractmethod
    def load(self, files: list[str], threads: int, options: dict) -> None: ...

    @abstractmethod
    def feed(self, rng, input_shape: list[int] | None) -> None: ...

    @abstractmethod
    def invoke(self) -> None: ...

    @abstractmethod
    def applied(self) -> dict: ...

    def observed(self) -> dict:
        """Runtime-specific facts for the record besides the options."""
        return {}


class TFLite(Runtime):
    allowed = {"xnnpack": bool}

    def __init__(self, np):
        super().__init__(np)
        # LiteRT first (maintained), then tflite_runtime, then TensorFlow's own.
        for package in ("ai_edge_litert", "tflite_runtime", "tensorflow.lite.python"):
            try:
                self.module = importlib.import_module(f"{package}.interpreter")
            except ImportError:
                continue
            top = importlib.import_module(package.split(".")[0])
            self.version = f"{top.__name__} {getattr(top, '__version__', '?')}"
            return
        raise PayloadError("no TFLite runtime on this device (pip install ai-edge-litert)")

    def load(self, files, threads, options):
        self.xnnpack = options.get("xnnpack", True)
        resolver = self.module.OpResolverType
        # LiteRT applies XNNPACK as a default delegate; this resolver type leaves it out.
        kind = resolver.AUTO if self.xnnpack else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.interpreter = self.module.Interpreter(model_path=files[0], num_threads=threads,
                                                   experimental_op_resolver_type=kind)
        self.interpreter.allocate_tensors()

    def feed(self, rng, input_shape):
        for detail in self.interpreter.get_input_details():
            self.interpreter.set_tensor(detail["index"], random_input(self.np, detail["shape"], detail["dtype"], rng))

    def invoke(self):
        self.interpreter.invoke()

    def applied(self):
        return {"xnnpack": self.xnnpack}

    def observed(self):
        # A delegate shows as one DELEGATE node standing for the ops it took over.
        return {"delegated_nodes": sum(op["op_name"] == "DELEGATE" for op in self.interpreter._get_ops_details())}


class Ncnn(Runtime):
    allowed = dict.fromkeys(NCNN_FLAGS, bool)

    def __init__(self, np):
        super().__init__(np)
        self.ncnn = require("ncnn")
        self.version = f"ncnn {self.ncnn.__version__}"

    def load(self, files, threads, options):
        if len(files) != 2:
            raise PayloadError(f"an ncnn model is a .param and a .bin file, got {len(files)} file(s)")
        self.net = self.ncnn.Net()
        # Options must be set before load_param: layers pick their kernels while loading.
        self.net.opt.num_threads = threads
        for name, value in options.items():
            setattr(self.net.opt, name, value)
        param, weights = files
        if self.net.load_param(param) != 0 or self.net.load_model(weights) != 0:
            raise PayloadError(f"ncnn cannot load {param} with {weights}")
        (self.input_name,), (self.output_name,) = self.net.input_names(), self.net.output_names()

    def feed(self, rng, input_shape):
        if not input_shape:
            raise PayloadError("ncnn param files carry no input shape: pass --input-shape (channel-first)")
        x = random_input(self.np, input_shape, self.np.float32, rng)
        # A batch-of-one Mat, cloned, as pnnx's generated <name>_ncnn.py feeds it (and slimlab's predict_ncnn).
        self.mat = self.ncnn.Mat(x, batch_index=0).clone()

    def invoke(self):
        # A fresh extractor per inference: an extractor caches blobs and would skip the work.
        with self.net.create_extractor() as extractor:
            extractor.input(self.input_name, self.mat)
            extractor.extract(self.output_name)

    def applied(self):
        return {name: getattr(self.net.opt, name) for name in ("num_threads", *NCNN_FLAGS)}


class Mnn(Runtime):
    allowed = {"precision": MNN_MODES, "power": MNN_MODES}
    THREAD_NUMBER = 4  # MNN::Interpreter::SessionInfoCode::THREAD_NUMBER

    def __init__(self, np):
        super().__init__(np)
        # The interpreter only: MNN.tools (telemetry and a run-time pip install) is never imported.
        self.mnn = require("MNN")
        self.version = f"MNN {self.mnn.version()}"

    def load(self, files, threads, options):
        # MNN 3.6.1's Python API: the Interpreter/Session one, which takes numThread/precision/power.
        self.config = {"numThread": threads, "precision": "normal", "power": "normal", **options}
        self.interpreter = self.mnn.Interpreter(files[0])
        self.session = self.interpreter.createSession(self.config)
        self.input = self.interpreter.getSessionInput(self.session)

    def feed(self, rng, input_shape):
        shape = tuple(self.input.getShape())
        x = random_input(self.np, shape, self.np.float32, rng)
        self.input.copyFrom(self.mnn.Tensor(shape, self.mnn.Halide_Type_Float, x, self.input.getDimensionType()))

    def invoke(self):
        self.interpreter.runSession(self.session)

    def applied(self):
        # getSessionInfo returns a float, but MNN writes THREAD_NUMBER as an int into it: reinterpret the bits.
        info = self.interpreter.getSessionInfo(self.session, self.THREAD_NUMBER)
        threads = int(self.np.array([info], self.np.float32).view(self.np.int32)[0])
        return {"num_threads": threads, "precision": self.config["precision"], "power": self.config["power"]}


class Onnx(Runtime):
    allowed = {}

    def __init__(self, np):
        super().__init__(np)
        self.ort = require("onnxruntime")
        self.version = f"onnxruntime {self.ort.__version__}"

    def load(self, files, threads, options):
        self.session_options = self.ort.SessionOptions()
        self.session_options.intra_op_num_threads = threads
        self.session_options.inter_op_num_threads = 1  # a plain chain of ops: parallelism is within each op
        self.session = self.ort.InferenceSession(files[0], self.session_options, providers=["CPUExecutionProvider"])

    def feed(self, rng, input_shape):
        types = {"tensor(float)": self.np.float32, "tensor(int8)": self.np.int8, "tensor(uint8)": self.np.uint8}
        self.feeds = {}
        for tensor in self.session.get_inputs():
            shape = [dim if isinstance(dim, int) else 1 for dim in tensor.shape]  # a free batch dim -> 1
            self.feeds[tensor.name] = random_input(self.np, shape, types[tensor.type], rng)

    def invoke(self):
        self.session.run(None, self.feeds)

    def applied(self):
        return {"num_threads": self.session_options.intra_op_num_threads,
                "inter_op_num_threads": self.session_options.inter_op_num_threads}


RUNTIMES = {"tflite": TFLite, "ncnn": Ncnn, "mnn": Mnn, "onnx": Onnx}


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (x86: model name; ARM boards: Hardware), else the platform's."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text(errors="replace").splitlines() if cpuinfo.is_file() else []
    for key in ("model name", "Hardware"):
        for line in lines:
            if line.split(":")[0].strip() == key:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


THERMAL = "sys/class/thermal"
CPUS = "sys/devices/system/cpu"
BATTERY = "sys/class/power_supply/battery"


class Sysfs:
    """The run-context files under ``root`` (``/``, or a test's tree).

    Containers and laptops lack many of them: a file that is absent or unreadable
    reads as None and is named in ``unavailable`` with the reason, never as 0.
    """

    def __init__(self, root: str):
        self.root = Path(root)

    def text(self, path: str, unavailable: dict) -> str | None:
        try:
            return (self.root / path).read_text().strip()
        except OSError as exc:  # recorded, not hidden: the record says which files were missing and why
            unavailable[path] = exc.strerror or type(exc).__name__
            return None

    def number(self, path: str, per_unit: float, unavailable: dict) -> float | None:
        """A single-number file in units of 1/``per_unit`` (m°C: 1000)."""
        text = self.text(path, unavailable)
        if text is None:
            return None
        try:
            return float(text) / per_unit
        except ValueError:
            unavailable[path] = f"not a number: {text!r}"
            return None

    def numbered(self, folder: str, prefix: str) -> list[str]:
        """``<prefix><n>`` entries of ``folder``, by n; none if the folder is absent."""
        directory = self.root / folder
        if not directory.is_dir():
            return []
        names = [entry.name for entry in directory.iterdir()]
        numbers = sorted(int(name[len(prefix):]) for name in names if re.fullmatch(re.escape(prefix) + r"\d+", name))
        return [f"{prefix}{n}" for n in numbers]


def thermal_zones(sysfs: Sysfs, unavailable: dict) -> dict:
    zones = {zone: {"type": sysfs.text(f"{THERMAL}/{zone}/type", unavailable),
                    "temp_c": sysfs.number(f"{THERMAL}/{zone}/temp", 1000, unavailable)}
             for zone in sysfs.numbered(THERMAL, "thermal_zone")}
    if not zones:
        unavailable[f"{THERMAL}/thermal_zone*"] = "absent"
    return zones


def snapshot(sysfs: Sysfs) -> dict:
    """Temperatures (°C), charging state, and each CPU's frequency (kHz) and governor, as they are now."""
    unavailable = {}
    cpus = {cpu: {"freq_khz": sysfs.number(f"{CPUS}/{cpu}/cpufreq/scaling_cur_freq", 1, unavailable),
                  "governor": sysfs.text(f"{CPUS}/{cpu}/cpufreq/scaling_governor", unavailable)}
            for cpu in sysfs.numbered(CPUS, "cpu")}
    if not cpus:
        unavailable[f"{CPUS}/cpu*"] = "absent"
    return {
        "thermal": thermal_zones(sysfs, unavailable),
        "battery": {"temp_c": sysfs.number(f"{BATTERY}/temp", 10, unavailable),  # deci-°C
                    "status": sysfs.text(f"{BATTERY}/status", unavailable)},
        "cpus": cpus,
        "unavailable": unavailable,
    }


def hottest_c(sysfs: Sysfs) -> float | None:
    temps = [zone["temp_c"] for zone in thermal_zones(sysfs, {}).values() if zone["temp_c"] is not None]
    return max(temps, default=None)


def cool_down(sysfs: Sysfs, max_temp_c: float, timeout_s: float, poll_s: float) -> dict:
    """Wait until the hottest thermal zone is below ``max_temp_c``, for at most ``timeout_s``.

    A device still hot at the deadline is measured anyway; the record says so
    (``timed_out``). One without a readable thermal zone is not waited for.
    """
    began = time.monotonic()
    while True:
        hottest = hottest_c(sysfs)
        waited_s = time.monotonic() - began
        if hottest is None or hottest < max_temp_c or waited_s >= timeout_s:
            break
        time.sleep(min(poll_s, timeout_s - waited_s))
    result = {"max_temp_c": max_temp_c, "waited_s": round(waited_s, 3), "hottest_c": hottest,
              "timed_out": hottest is not None and hottest >= max_temp_c}
    if hottest is None:
        result["skipped"] = "no readable thermal zone"
    return result


def pin(cpus: list[int] | None) -> list[int] | None:
    """Pin this process to ``cpus`` (the runtime's threads, started later, inherit it); the mask in force.

    None where the platform has no affinity calls (macOS).
    """
    if not hasattr(os, "sched_setaffinity"):
        if cpus:
            raise PayloadError("--affinity: this platform cannot pin a process to CPUs")
        return None
    if cpus:
        try:
            os.sched_setaffinity(0, cpus)
        except OSError as exc:
            raise PayloadError(f"--affinity {','.join(map(str, cpus))}: {exc.strerror}") from None
    return sorted(os.sched_getaffinity(0))


def process_threads() -> int | None:
    """How many OS threads this process runs (the runtime's pool included); None without /proc."""
    tasks = Path("/proc/self/task")
    return len(list(tasks.iterdir())) if tasks.is_dir() else None


def measure(args) -> dict:
    options = checked(args.runtime, json.loads(args.options), RUNTIMES[args.runtime].allowed)
    # Pinned before NumPy and the runtime start any thread, so that every thread inherits the mask.
    affinity = pin(args.affinity)

    import numpy as np

    runtime = RUNTIMES[args.runtime](np)
    # Cooled down last thing before the model loads: a missing runtime fails without the wait.
    sysfs = Sysfs(args.context_root)
    cooldown = None
    if args.cooldown_max_temp_c is not None:
        cooldown = cool_down(sysfs, args.cooldown_max_temp_c, args.cooldown_timeout_s, args.cooldown_poll_s)
    start = time.perf_counter_ns()
    runtime.load(args.model, args.threads, options)
    init_ms = (time.perf_counter_ns() - start) / 1e6
    runtime.feed(np.random.default_rng(args.seed), args.input_shape)

    def timed_invoke() -> float:
        t0 = time.perf_counter_ns()
        runtime.invoke()
        return (time.perf_counter_ns() - t0) / 1e6

    first_ms = timed_invoke()
    for _ in range(args.warmup):
        runtime.invoke()
    latencies = []
    before = snapshot(sysfs)
    began = time.perf_counter()
    while len(latencies) < args.max_runs and (
        len(latencies) < args.runs or time.perf_counter() - began < args.min_seconds
    ):
        latencies.append(timed_invoke())
    after = snapshot(sysfs)
    return {
        "runtime": runtime.version,
        "threads": args.threads,
        "options": runtime.applied(),
        **runtime.observed(),
        "init_ms": init_ms,
        "first_inference_ms": first_ms,
        "warmup": args.warmup,
        "latencies_ms": latencies,
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "context": {"root": args.context_root, "affinity": affinity, "process_threads": process_threads(),
                    "cooldown": cooldown, "before": before, "after": after},
    }


def int_list(text: str) -> list[int]:
    return [int(item) for item in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(prog="slimlab-payload", description=__doc__.split("\n")[0])
    parser.add_argument("--runtime", required=True, choices=sorted(RUNTIMES))
    parser.add_argument("--model", required=True, nargs="+", help="the model's files, main first (ncnn: .param .bin)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--options", default="{}", help="runtime options as a JSON object")
    parser.add_argument("--input-shape", type=int_list,
                        help="comma-separated; needed where the model does not say (ncnn)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-runs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--context-root", default="/", help="prefix of the sysfs paths read for the run context")
    parser.add_argument("--affinity", type=int_list, help="comma-separated CPU ids to pin the process to")
    parser.add_argument("--cooldown-max-temp-c", type=float,
                        help="first wait until every thermal zone is below this; default: no wait")
    parser.add_argument("--cooldown-timeout-s", type=float, default=120.0)
    parser.add_argument("--cooldown-poll-s", type=float, default=2.0)
    args = parser.parse_args()
    try:
        result = measure(args)
    except (PayloadError, json.JSONDecodeError) as exc:
        parser.error(str(exc))
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
