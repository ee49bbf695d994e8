"""TFLite's benchmark_model: stats lines, init, delegates, peak memory and the op profile (µs in, ms out)."""

import re

from slimlab.lab.parsers.common import (DelegateApplied, DelegateCoverage, NUMBER, OpSummary, Output, RunStats, TfliteResult,
                                        ToolMemory, op_row, op_table)


TFLITE = "tflite benchmark_model"
_STATS = re.compile(
    rf"count=(?P<count>\d+)(?: first=(?P<first>{NUMBER}) curr=(?P<curr>{NUMBER}) min=(?P<min>{NUMBER})"
    rf" max=(?P<max>{NUMBER}) avg=(?P<avg>{NUMBER}) std=(?P<std>{NUMBER})"
    rf"(?: p5=(?P<p5>{NUMBER}) median=(?P<median>{NUMBER}) p95=(?P<p95>{NUMBER}))?"
    rf"| curr=(?P<same>{NUMBER})(?:\(all same\))?)?")
_STAT_FIELDS = {"first": "first_ms", "min": "min_ms", "max": "max_ms", "avg": "avg_ms", "std": "std_ms",
                "p5": "p5_ms", "median": "median_ms", "p95": "p95_ms"}
_INIT = re.compile(rf"Initialized session in ({NUMBER})\s*ms\.?")
# Without warm-up runs, "Warmup (avg)" is nan.
_SUMMARY_VALUE = rf"(?:{NUMBER}|-?nan)"
_SUMMARY = re.compile(
    rf"(?:Average )?[Ii]nference timings in us: ((?:[A-Za-z][A-Za-z ()]*: {_SUMMARY_VALUE}(?:, |$))+)")
_SUMMARY_ITEM = re.compile(rf"([A-Za-z][A-Za-z ()]*): ({_SUMMARY_VALUE})")
# One line per delegate and subgraph: "..., yielding 3 partitions." (older), "... for the whole graph.",
# "... for subgraph 0." and LiteRT's "... for subgraph 0 (name)." (newer).
_REPLACING = re.compile(r"Replacing (\d+)(?: out of (\d+))? node\(s\) with delegate \((.*)\) node, "
                        r"yielding (\d+) partitions(?: for the whole graph| for subgraph (\d+)(?: \([^)]*\))?)?\.")
_CREATED = re.compile(r"Created TensorFlow Lite delegate for (\S+)\.")
_APPLIED = re.compile(r"Explicitly applied (\S+) delegate, and the model graph will be (completely|partially) "
                      r"executed by the delegate(?: w/ (\d+) delegate kernels)?\.")
_NOT_APPLIED = re.compile(r"Though (\S+) delegate is explicitly applied, the model graph will not be executed by "
                          r"the delegate\.")
_FOOTPRINT = re.compile(
    rf"Memory footprint delta from the start of the tool \(MB\): init=({NUMBER}) overall=({NUMBER})")
_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({NUMBER})")
_RSS = {"- VmRSS": "end_rss_mb", "+ RssAnnon": "end_rss_anon_mb", "+ RssFile + RssShmem": "end_rss_file_mb"}
_RSS_LINE = re.compile(rf"({'|'.join(map(re.escape, _RSS))})\s*: (\d+) MB")


def _run_stats(out: Output, line: str) -> RunStats:
    values = out.match(_STATS, line, "'count='").groupdict()
    if values["same"] is not None:  # every run took the same time: the tool prints only that time
        values.update(dict.fromkeys(("first", "min", "max", "avg"), values["same"]), std="0")
    stats = RunStats(count=int(values["count"]), **{
        name: out.number(values[key], key) / 1000 for key, name in _STAT_FIELDS.items() if values[key] is not None})
    what = f"'{line.strip()}'"
    if (stats.count == 0) != (stats.avg_ms is None):  # the tool prints times for every run but an empty one
        raise out.error(f"malformed 'count=' line: {what}")
    out.in_order(what, stats.min_ms, stats.avg_ms, stats.max_ms)
    out.in_order(what, stats.min_ms, stats.first_ms, stats.max_ms)
    out.in_order(what, stats.min_ms, stats.p5_ms, stats.median_ms, stats.p95_ms, stats.max_ms)
    if stats.std_ms is not None and stats.std_ms < 0:
        raise out.error(f"negative std in {what}")
    return stats


def _warmup_and_regular(out: Output, memory: ToolMemory | None) -> tuple[RunStats | None, RunStats | None]:
    """The tool logs the warm-up's stats line, then the regular runs'. An excerpt may hold only the latter:
    a lone stats line is the regular runs' unless the output shows the run's start before it or a
    further run after it, where it is the warm-up's of a run cut off. An excerpt of the memory lines
    alone holds neither: (None, None)."""
    at = [i for i, line in enumerate(out.lines) if line.lstrip().startswith("count=")]
    stats = [_run_stats(out, out.lines[i]) for i in at]
    if not stats and memory is not None:
        return None, None
    if len(stats) == 2:
        return stats[0], stats[1]
    started = len(at) == 1 and any(line.startswith(("STARTING!", "Initialized session")) for line in out.lines[:at[0]])
    further = len(at) == 1 and any(line.startswith("Running benchmark") for line in out.lines[at[0]:])
    if len(stats) != 1 or started or further:
        raise out.error(f"found {len(stats)} 'count=' line(s), expected one for the warm-up and one for the "
                        "regular runs")
    return None, stats[0]


def parse_tflite(*outputs: str) -> TfliteResult:
    """benchmark_model's log (its stdout and stderr): warm-up and regular-run stats, init, delegate coverage,
    memory, op profile. ``inference`` is None only for an excerpt of the memory lines alone."""
    out = Output(TFLITE, outputs)
    memory = _tflite_memory(out)
    warmup, inference = _warmup_and_regular(out, memory)
    if inference is not None and (inference.count == 0 or inference.avg_ms is None):
        raise out.error("the regular runs' 'count=' line has no timings")

    summary: dict[str, float] = {}
    init_ms = None
    delegates, created, applied = [], [], []
    for line in out.lines:
        if "nference timings in us:" in line:
            items = _SUMMARY_ITEM.findall(out.match(_SUMMARY, line, "timings summary").group(1))
            summary = {key: out.number(value, key) / 1000 for key, value in items if "nan" not in value}
        elif line.startswith("Initialized session in"):
            init_ms = out.number(out.match(_INIT, line, "init").group(1), "init")
        elif line.startswith("Replacing ") and " with delegate " in line:
            replaced, total, name, partitions, subgraph = out.match(_REPLACING, line, "delegate").groups()
            if total is not None and not 0 < int(replaced) <= int(total):
                raise out.error(f"delegate line replaces {replaced} of {total} nodes: {line.strip()!r}")
            delegates.append(DelegateCoverage(name, int(replaced), total and int(total), int(partitions),
                                              subgraph and int(subgraph)))
        elif line.startswith("Created TensorFlow Lite delegate for"):
            created.append(out.match(_CREATED, line, "delegate created").group(1))
        elif line.startswith("Explicitly applied "):
            provider, executed, kernels = out.match(_APPLIED, line, "delegate applied").groups()
            if (kernels is None) != (executed == "completely"):
                raise out.error(f"malformed delegate applied line: {line.strip()!r}")
            applied.append(DelegateApplied(provider, executed, kernels and int(kernels)))
        elif line.startswith("Though ") and " delegate is explicitly applied" in line:
            applied.append(DelegateApplied(out.match(_NOT_APPLIED, line, "delegate applied").group(1), "not"))
    if warmup is not None and warmup.count == 0:
        # --warmup_runs=0: no warm-up, and the summary's "First inference: 0" is no time
        warmup = None
        summary.pop("First inference", None)
    return TfliteResult(
        # "Initialized session in 5664.36ms." comes first and says the same as the summary's "Init: 5664363" (µs),
        # rounded: read it first, so that a log cut before the summary gives the same init.
        init_ms=summary.get("Init") if init_ms is None else init_ms,
        first_inference_ms=summary.get("First inference", warmup and warmup.first_ms),
        warmup=warmup,
        inference=inference,
        delegates=tuple(delegates),
        ops=_tflite_op_profile(out),
        memory=memory,
        created=tuple(created),
        applied=tuple(applied),
    )


def _tflite_memory(out: Output) -> ToolMemory | None:
    """The footprint line (every Linux or Android run) and the ``--report_peak_memory_footprint`` section."""
    figures = {}
    for line in out.lines:
        if line.startswith("Memory footprint delta"):
            init, overall = out.match(_FOOTPRINT, line, "memory footprint").groups()
            figures.update(init_footprint_mb=out.number(init, "init"),
                           overall_footprint_mb=out.number(overall, "overall"))
        elif line.startswith("Overall peak memory footprint"):
            figures["peak_footprint_mb"] = out.number(out.match(_PEAK, line, "peak memory").group(1), "peak memory")
            out.in_order("peak memory footprint", figures["peak_footprint_mb"])
        elif line.startswith(tuple(_RSS)):
            name, value = out.match(_RSS_LINE, line, "memory status").groups()
            figures[_RSS[name]] = int(value)
    memory = ToolMemory(**figures)
    parts = (memory.end_rss_mb, memory.end_rss_anon_mb, memory.end_rss_file_mb)
    if None not in parts and parts[0] != parts[1] + parts[2]:
        raise out.error(f"memory status: RssAnnon + RssFile ({parts[1]} + {parts[2]} MB) is not VmRSS ({parts[0]} MB)")
    return memory if figures else None


def parse_tflite_op_profile(*outputs: str) -> tuple[OpSummary, ...]:
    """The "Summary by node type" table of ``--enable_op_profiling``; () when profiling was off."""
    return _tflite_op_profile(Output(TFLITE, outputs))


def _tflite_op_profile(out: Output) -> tuple[OpSummary, ...]:
    """benchmark_model prints a profile of initialization, then one of the regular runs: the latter's table."""
    lines = out.lines
    regular = [i for i, line in enumerate(lines) if "Profiling Info for Regular Benchmark Runs" in line]
    init = any("Profiling Info for Benchmark Initialization" in line for line in lines)
    after = regular[-1] if regular else -1
    tables = [i for i, line in enumerate(lines) if "Summary by node type" in line and i > after]
    if (regular or init) and not (regular and tables):
        raise out.error("the regular runs' op profile is cut off before its 'Summary by node type' table")
    if not tables:
        return ()
    header, *rows = lines[(tables[0] if regular else tables[-1]) + 1:] or [""]
    columns = [cell.strip("[] ").lower() for cell in header.split("\t") if cell.strip()]
    needed = ["node type", "count", "avg ms", "avg %", "times called"]
    if not set(needed) <= set(columns):
        raise out.error(f"op profile table has columns {columns}, expected {needed}")
    ops = []
    for row in rows:
        if not row.strip() or row.startswith("="):
            return op_table(out, ops)
        cells = [cell.strip() for cell in row.split("\t") if cell.strip()]
        if len(cells) != len(columns):
            raise out.error(f"op profile row has {len(cells)} cells for {len(columns)} columns: {row.strip()!r}")
        cell = dict(zip(columns, cells))
        ops.append(op_row(out, cell["node type"], cell["avg ms"], cell["avg %"].removesuffix("%"), cell["times called"],
                       count=out.integer(cell["count"], "count")))
    raise out.error("the op profile's 'Summary by node type' table is cut off")
