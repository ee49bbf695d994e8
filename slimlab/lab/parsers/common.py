"""What every tool parser shares: the error, whole-line reading, number checks, the result types."""

import math
import re
from dataclasses import dataclass, field

from slimlab.errors import DeviceError

# One way only to match a number: "\d+\.?\d*" would backtrack through every split of a garbled line's digits.
NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"

# Android logcat wraps each line: "11-27 10:00:00.123  1234  1234 I tflite  : " (threadtime),
# "11-27 10:00:00.123 I/tflite  ( 1234): " (time, e.g. the benchmark APK's log) or
# "I/tflite  ( 1234): " (brief), with "2024-" in front with -v year. benchmark_model adds "INFO: ".
STAMP = r"(?:\d{4}-)?\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+"
LOGCAT = re.compile(rf"^(?:{STAMP}\d+\s+\d+\s+[VDIWEF]\s+[^:]*:|(?:{STAMP})?[VDIWEF]/[^(:]*\(\s*\d+\):)\s?")
SEVERITY = re.compile(r"^(?:INFO|WARNING|ERROR|VERBOSE): ")
# A tool writes "\n"; a pty makes that "\r\n", and "\r\r\n" where the tool wrote "\r\n".
LINE_END = re.compile(r"\r*\n")
# Slack for "min <= avg": benchmark_model prints avg rounded to 6 digits beside exact integer min and max.
ROUNDING = 1e-5


class ParseError(DeviceError):
    """A benchmark tool's output did not contain what its parser needs."""


class Output:
    """A tool's stdout and stderr as whole lines, logcat wrapping and severity prefixes stripped."""

    def __init__(self, tool: str, outputs: tuple[str, ...]):
        self.tool, self.lines, self.cut = tool, [], ""
        for text in outputs:
            *whole, tail = LINE_END.split(text)
            if tail.endswith("\r"):  # cut between a pty's "\r" and its "\n": the line itself is whole
                whole.append(tail)
                tail = ""
            self.lines += [SEVERITY.sub("", LOGCAT.sub("", line.rstrip("\r"))) for line in whole]
            self.cut = self.cut or tail

    def error(self, message: str) -> ParseError:
        hint = f" (the output ends inside a line, cut off there: {self.cut[-60:]!r})" if self.cut else ""
        return ParseError(f"{self.tool}: {message}{hint}")

    def match(self, pattern: re.Pattern, line: str, what: str) -> re.Match:
        """A recognised line matched in full: a cut-off or garbled one is refused, never read in part."""
        found = pattern.fullmatch(line.strip())
        if found is None:
            raise self.error(f"malformed {what} line: {line.strip()!r}")
        return found

    def number(self, text: str, what: str) -> float:
        value = float(text) if re.fullmatch(NUMBER, text) else math.nan
        if not math.isfinite(value):
            raise self.error(f"{what} is {text!r}, not a number")
        return value

    def integer(self, text: str, what: str) -> int:
        """A count: digits only, or a float the tool printed with %f that holds a whole number."""
        value = self.number(text, what)
        if value < 0 or not value.is_integer():
            raise self.error(f"{what} is {text}, not a count")
        return int(value)

    def in_order(self, what: str, *times: float | None) -> None:
        """Times above zero, each at most the next: a number cut short breaks the order."""
        given = [t for t in times if t is not None]
        if any(t <= 0 for t in given):
            raise self.error(f"{what}: a time of zero or less in {given}")
        if any(a > b * (1 + ROUNDING) for a, b in zip(given, given[1:])):
            raise self.error(f"{what}: times out of order (min <= avg <= max): {given}")


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
    total: int | None  # older builds print "Replacing X node(s)": no total
    partitions: int
    subgraph: int | None = None  # newer builds: "... for subgraph 0." (None: "for the whole graph" or unsaid)

    @property
    def fraction(self) -> float | None:
        return None if self.total is None else self.replaced / self.total


@dataclass(frozen=True)
class DelegateApplied:
    """benchmark_model's verdict on a delegate it was asked for (``provider`` as the tool names it: "GPU",
    "NNAPI", "Hexagon", "External", ...): "Explicitly applied .. completely|partially executed .. (w/ N
    delegate kernels)" or "Though .. explicitly applied, the model graph will not be executed"."""

    provider: str
    executed: str  # "completely", "partially" or "not"
    kernels: int | None = None  # "partially": the delegate kernels it made


@dataclass(frozen=True)
class OpSummary:
    """One op type's row of a per-op profile: TFLite's "Summary by node type", MNN's "Sort by time cost"."""

    node_type: str
    avg_ms: float
    avg_percent: float
    times_called: int
    count: int | None = None  # TFLite: nodes of this type
    flops_percent: float | None = None  # MNN: share of the model's flops


@dataclass(frozen=True)
class ToolMemory:
    """benchmark_model's memory figures in MB: the footprint's growth over init and over the whole run (on
    Linux the footprint is the peak RSS), and with ``--report_peak_memory_footprint`` the peak footprint and
    the RSS at the end."""

    init_footprint_mb: float | None = None
    overall_footprint_mb: float | None = None
    peak_footprint_mb: float | None = None
    end_rss_mb: int | None = None
    end_rss_anon_mb: int | None = None
    end_rss_file_mb: int | None = None


@dataclass(frozen=True)
class TfliteResult:
    init_ms: float | None
    first_inference_ms: float | None
    warmup: RunStats | None
    inference: RunStats | None  # None: an excerpt of the memory lines alone
    delegates: tuple[DelegateCoverage, ...] = ()
    ops: tuple[OpSummary, ...] = ()
    memory: ToolMemory | None = None
    created: tuple[str, ...] = ()  # "Created TensorFlow Lite delegate for GPU.": "GPU"
    applied: tuple[DelegateApplied, ...] = ()


@dataclass(frozen=True)
class ModelTiming:
    """One model's line of benchncnn or MNN benchmark.out, in ms."""

    name: str
    min_ms: float
    max_ms: float
    avg_ms: float


@dataclass(frozen=True)
class ToolResult:
    """benchncnn or benchmark.out: the settings the tool echoed, the loop count it ran, one timing per model."""

    settings: dict[str, str] = field(default_factory=dict)
    models: tuple[ModelTiming, ...] = ()
    loops: int | None = None


def op_row(out: Output, node_type: str, avg_ms: str, percent: str, called: str, **more) -> OpSummary:
    op = OpSummary(node_type, out.number(avg_ms, "avg ms"), out.number(percent, "percent"),
                   out.integer(called, "times called"), **more)
    if op.avg_ms < 0 or not 0 <= op.avg_percent <= 100 + ROUNDING:
        raise out.error(f"op profile row for {node_type} has avg {op.avg_ms} ms, {op.avg_percent}%")
    return op


def op_table(out: Output, ops: list[OpSummary]) -> tuple[OpSummary, ...]:
    if not ops:
        raise out.error("the op profile table is empty")
    return tuple(ops)
