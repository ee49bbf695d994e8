"""Parsers for the output of the standard on-device benchmark tools.

TFLite's ``benchmark_model`` reports µs; ncnn's ``benchncnn`` and MNN's
``benchmark.out`` report ms. Every parser returns milliseconds. The formats
drift between tool versions (see tests/data/device-tools/README.md), so each
parser matches by key, not by column, and one that finds nothing raises
:class:`ParseError`: a missing number must never become a zero.
"""

import re
from dataclasses import dataclass, field

from slimlab.errors import DeviceError

NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"

# Android logcat wraps each line, e.g. "11-27 10:00:00.123  1234  1234 I tflite  : "
# (threadtime) or "I/tflite  ( 1234): " (brief); benchmark_model adds "INFO: ".
_LOGCAT = re.compile(r"^\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+[VDIWEF]\s+[^:]*:\s?"
                     r"|^[VDIWEF]/[^(:]*\(\s*\d+\):\s?")
_SEVERITY = re.compile(r"^(?:INFO|WARNING|ERROR|VERBOSE): ")


class ParseError(DeviceError):
    """A benchmark tool's output did not contain what its parser needs."""


def _lines(text: str) -> list[str]:
    """The text's lines without logcat wrapping or a severity prefix."""
    return [_SEVERITY.sub("", _LOGCAT.sub("", line)) for line in text.splitlines()]


@dataclass(frozen=True)
class RunStats:
    """One ``count=... first=... min=...`` line of benchmark_model, in ms."""

    count: int
    first_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    avg_ms: float | None = None
    std_ms: float | None = None
    p5_ms: float | None = None
    median_ms: float | None = None
    p95_ms: float | None = None


@dataclass(frozen=True)
class DelegateCoverage:
    """benchmark_model's "Replacing X out of Y node(s) with delegate (D) node, yielding P partitions"."""

    delegate: str
    replaced: int
    total: int
    partitions: int | None

    @property
    def fraction(self) -> float:
        return self.replaced / self.total


@dataclass(frozen=True)
class OpSummary:
    """One row of ``--enable_op_profiling``'s "Summary by node type" table."""

    node_type: str
    count: int
    avg_ms: float
    avg_percent: float
    times_called: int


@dataclass(frozen=True)
class TfliteResult:
    init_ms: float | None
    first_inference_ms: float | None
    warmup: RunStats | None
    inference: RunStats
    delegates: tuple[DelegateCoverage, ...] = ()
    ops: tuple[OpSummary, ...] = ()


@dataclass(frozen=True)
class ModelTiming:
    """One model's line of benchncnn or MNN benchmark.out, in ms."""

    name: str
    min_ms: float
    max_ms: float
    avg_ms: float


@dataclass(frozen=True)
class ToolResult:
    """benchncnn or benchmark.out: the settings the tool echoed, then one timing per model."""

    settings: dict[str, str] = field(default_factory=dict)
    models: tuple[ModelTiming, ...] = ()


# --- TFLite benchmark_model -----------------------------------------------------------

_STAT_FIELDS = {"first": "first_ms", "min": "min_ms", "max": "max_ms", "avg": "avg_ms", "std": "std_ms",
                "p5": "p5_ms", "median": "median_ms", "p95": "p95_ms"}
_KEY_VALUE = re.compile(rf"(\w+)=({NUMBER})")
_INIT = re.compile(rf"Initialized session in ({NUMBER})\s*ms")
_SUMMARY = re.compile(r"[Ii]nference timings in us: (.*)")
_SUMMARY_ITEM = re.compile(rf"([A-Za-z][A-Za-z ()]*?):\s*({NUMBER})")
_REPLACING = re.compile(
    r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]*)\) node(?:, yielding (\d+) partitions)?")


def _run_stats(line: str) -> RunStats:
    values = dict(_KEY_VALUE.findall(line))
    stats = {_STAT_FIELDS[key]: float(value) / 1000 for key, value in values.items() if key in _STAT_FIELDS}
    return RunStats(count=int(float(values["count"])), **stats)


def parse_tflite(text: str) -> TfliteResult:
    """benchmark_model's log: warm-up stats, regular-run stats, init, delegate coverage, op profile."""
    lines = _lines(text)
    # The tool always logs the warm-up's stats line first, then the regular runs'.
    stats = [_run_stats(line) for line in lines if line.lstrip().startswith("count=")]
    if len(stats) < 2:
        raise ParseError(f"tflite benchmark_model: found {len(stats)} 'count=' line(s), "
                         "expected one for the warm-up and one for the regular runs")
    warmup, inference = stats[0], stats[1]
    if inference.count == 0 or inference.avg_ms is None:
        raise ParseError("tflite benchmark_model: the regular runs' 'count=' line has no timings")

    summary: dict[str, float] = {}
    init_ms = None
    for line in lines:
        if match := _SUMMARY.search(line):
            summary = {key.strip(): float(value) / 1000 for key, value in _SUMMARY_ITEM.findall(match.group(1))}
        elif match := _INIT.search(line):
            init_ms = float(match.group(1))
    first_ms = summary.get("First inference", warmup.first_ms)
    delegates = tuple(
        DelegateCoverage(m.group(3), int(m.group(1)), int(m.group(2)), int(m.group(4)) if m.group(4) else None)
        for m in map(_REPLACING.search, lines) if m
    )
    return TfliteResult(
        init_ms=summary.get("Init", init_ms),
        first_inference_ms=first_ms,
        warmup=warmup if warmup.count else None,
        inference=inference,
        delegates=delegates,
        ops=parse_tflite_op_profile(text),
    )


def parse_tflite_op_profile(text: str) -> tuple[OpSummary, ...]:
    """The "Summary by node type" table of ``--enable_op_profiling``; () when profiling was off.

    benchmark_model may print one table for initialization and one for the
    regular runs; the regular runs' table comes last and is the one returned.
    """
    lines = _lines(text)
    starts = [i for i, line in enumerate(lines) if "Summary by node type" in line]
    if not starts:
        return ()
    header, *rows = lines[starts[-1] + 1:]
    columns = [cell.strip("[] ").lower() for cell in header.split("\t") if cell.strip()]
    needed = ["node type", "count", "avg ms", "avg %", "times called"]
    if not set(needed) <= set(columns):
        raise ParseError(f"tflite benchmark_model: op profile table has columns {columns}, expected {needed}")
    ops = []
    for row in rows:
        cells = [cell.strip() for cell in row.split("\t") if cell.strip()]
        if not cells or cells[0].startswith("="):
            break
        cell = dict(zip(columns, cells))
        ops.append(OpSummary(cell["node type"], int(cell["count"]), float(cell["avg ms"]),
                             float(cell["avg %"].rstrip("%")), int(cell["times called"])))
    if not ops:
        raise ParseError("tflite benchmark_model: the op profile's 'Summary by node type' table is empty")
    return tuple(ops)


# --- ncnn benchncnn and MNN benchmark.out ---------------------------------------------

_NCNN_SETTING = re.compile(r"^(loop_count|num_threads|powersave|gpu_device|cooling_down) = (\S+)")
_NCNN_MODEL = re.compile(rf"^\s*(\S+)\s+min =\s*({NUMBER})\s+max =\s*({NUMBER})\s+avg =\s*({NUMBER})")
_MNN_MODEL = re.compile(r"^\[ - \]\s+(\S+)\s+(.*)")
_MNN_TIME = re.compile(rf"(max|min|avg)\s*=\s*({NUMBER})\s*ms")
_MNN_SETTINGS = re.compile(r"(Forward type|thread|precision|sparsity|sparseBlockOC|loop|warmup)\s*[:=]\s*\**([^*,\s]+)")


def parse_benchncnn(text: str) -> ToolResult:
    """benchncnn's stderr: echoed settings (after any Vulkan device lines), then one line per model."""
    settings, models = {}, []
    for line in _lines(text):
        if match := _NCNN_SETTING.match(line):
            settings[match.group(1)] = match.group(2)
        elif match := _NCNN_MODEL.match(line):
            name, low, high, avg = match.groups()
            models.append(ModelTiming(name, float(low), float(high), float(avg)))
    if not models:
        raise ParseError("ncnn benchncnn: no 'name  min = .. max = .. avg = ..' line in the output")
    return ToolResult(settings, tuple(models))


def parse_mnn_benchmark(text: str) -> ToolResult:
    """MNN benchmark.out: forward type and loop settings, then ``[ - ] model max = .. min = .. avg = ..``."""
    settings, models = {}, []
    for line in _lines(text):
        if match := _MNN_MODEL.match(line):
            times = dict(_MNN_TIME.findall(match.group(2)))
            if set(times) != {"max", "min", "avg"}:
                raise ParseError(f"MNN benchmark.out: model line lacks max/min/avg in ms: {line.strip()!r}")
            models.append(ModelTiming(match.group(1), float(times["min"]), float(times["max"]), float(times["avg"])))
        else:
            settings.update(_MNN_SETTINGS.findall(line))
    if not models:
        raise ParseError("MNN benchmark.out: no '[ - ] model  max = .. min = .. avg = ..' line in the output")
    return ToolResult(settings, tuple(models))
