"""ncnn's benchncnn and MNN's benchmark.out and timeProfile.out (ms)."""

import re

from slimlab.lab.parsers.common import ModelTiming, NUMBER, OpSummary, Output, ToolResult, op_row, op_table


# --- MNN timeProfile.out ---------------------------------------------------------------

_MNN_TOTAL = re.compile(rf"total time : ({NUMBER}) ms, total mflops : ({NUMBER})")


def parse_mnn_time_profile(*outputs: str) -> tuple[OpSummary, ...]:
    """timeProfile.out's "Sort by time cost !" table: one row per op type, ended by its "total time" line."""
    out = Output("MNN timeProfile.out", outputs)
    starts = [i for i, line in enumerate(out.lines) if line.strip() == "Sort by time cost !"]
    if not starts:
        raise out.error("no 'Sort by time cost' table in the output")
    header, *rows = out.lines[starts[-1] + 1:] or [""]
    columns = [cell.strip().lower() for cell in header.split("\t") if cell.strip()]
    needed = ["node type", "avg(ms)", "%", "called times", "flops rate"]
    if not set(needed) <= set(columns):
        raise out.error(f"per-op table has columns {columns}, expected {needed}")
    ops = []
    for row in rows:
        if row.startswith("total time"):
            out.match(_MNN_TOTAL, row, "total time")
            return op_table(out, ops)
        cells = [cell.strip() for cell in row.split("\t") if cell.strip()]
        if len(cells) != len(columns):
            raise out.error(f"per-op row has {len(cells)} cells for {len(columns)} columns: {row.strip()!r}")
        cell = dict(zip(columns, cells))
        ops.append(op_row(out, cell["node type"], cell["avg(ms)"], cell["%"], cell["called times"],
                       flops_percent=out.number(cell["flops rate"], "flops rate")))
    raise out.error("the per-op table is cut off before its 'total time' line")


# --- ncnn benchncnn and MNN benchmark.out ---------------------------------------------

_NCNN_KEYS = ("loop_count", "num_threads", "powersave", "gpu_device", "cooling_down")
_NCNN_SETTING = re.compile(r"(\w+) = (-?\d+)")
_NCNN_MODEL = re.compile(rf"(\S+)\s+min =\s*({NUMBER})\s+max =\s*({NUMBER})\s+avg =\s*({NUMBER})")
_MNN_MODEL = re.compile(rf"\[ - \]\s+(\S+)((?:\s+(?:max|min|avg) =\s*{NUMBER}\s*ms){{3}})")
_MNN_TIME = re.compile(rf"(max|min|avg) =\s*({NUMBER})")
_MNN_FORWARD = re.compile(rf"Forward type: \**(\S+?)\**((?: \w+={NUMBER}\**)*)")
# Releases of 2019 and early 2020 print no warm-up count: their warm-up stays unknown, not guessed.
_MNN_LOOP = re.compile(r"-+> Benchmarking\.\.\. loop = (?P<loop>\d+)(?:, warmup = (?P<warmup>\d+))?")


def _timing(out: Output, name: str, low: str, high: str, avg: str) -> ModelTiming:
    timing = ModelTiming(name, out.number(low, "min"), out.number(high, "max"), out.number(avg, "avg"))
    out.in_order(f"model {name}", timing.min_ms, timing.avg_ms, timing.max_ms)
    return timing


def _tool_result(out: Output, settings: dict, models: list, loop_key: str, expected: str) -> ToolResult:
    if not models:
        raise out.error(f"no '{expected}' line in the output")
    loops = settings.get(loop_key)
    return ToolResult(settings, tuple(models), None if loops is None else out.integer(loops, loop_key))


def parse_benchncnn(*outputs: str) -> ToolResult:
    """benchncnn's stderr: echoed settings (after any Vulkan device lines), then one line per model."""
    out = Output("ncnn benchncnn", outputs)
    settings, models = {}, []
    for line in out.lines:
        if line.startswith(tuple(f"{key} =" for key in _NCNN_KEYS)):
            settings.update([out.match(_NCNN_SETTING, line, "setting").groups()])
        elif re.search(r"\smin =", line):
            models.append(_timing(out, *out.match(_NCNN_MODEL, line, "model").groups()))
    return _tool_result(out, settings, models, "loop_count", "name  min = .. max = .. avg = ..")


def parse_mnn_benchmark(*outputs: str) -> ToolResult:
    """MNN benchmark.out: forward type and loop settings, then ``[ - ] model max = .. min = .. avg = ..``."""
    out = Output("MNN benchmark.out", outputs)
    settings, models = {}, []
    for line in out.lines:
        if line.startswith("[ - ]"):
            name, times = out.match(_MNN_MODEL, line, "model").groups()
            found = dict(_MNN_TIME.findall(times))
            if len(found) != 3:
                raise out.error(f"model line without each of max, min and avg: {line.strip()!r}")
            models.append(_timing(out, name, found["min"], found["max"], found["avg"]))
        elif line.startswith("Forward type:"):
            forward, rest = out.match(_MNN_FORWARD, line, "forward type").groups()
            settings.update({"Forward type": forward, **dict(re.findall(rf"(\w+)=({NUMBER})", rest))})
        elif "> Benchmarking..." in line:
            counts = out.match(_MNN_LOOP, line, "benchmarking").groupdict()
            settings.update({key: count for key, count in counts.items() if count is not None})
    return _tool_result(out, settings, models, "loop", "[ - ] model  max = .. min = .. avg = ..")
