"""Parsers for the output of the standard on-device benchmark tools.

TFLite's ``benchmark_model`` reports µs; ncnn's ``benchncnn`` and MNN's
``benchmark.out`` and ``timeProfile.out`` report ms. Every parser returns
milliseconds. The formats drift between tool versions (see
tests/data/device-tools/README.md), so each parser matches by key, not by column.

A wrong number must never come back in silence. So each parser reads only whole
lines: the last line of an output that ends without a line end was cut off and is
not read; a line the parser recognises (a ``count=`` line, a model line, a table
row) must match its tool's layout in full, or it raises :class:`ParseError`; its
times must be above zero and in order (min <= avg <= max); a table must reach the
line its tool prints after it; and a parser that finds nothing raises too. Every
error names the tool.
"""

from slimlab.lab.parsers.common import (NUMBER, DelegateCoverage, ModelTiming, OpSummary, ParseError, RunStats,
                                        TfliteResult, ToolMemory, ToolResult)
from slimlab.lab.parsers.ncnn_mnn import parse_benchncnn, parse_mnn_benchmark, parse_mnn_time_profile
from slimlab.lab.parsers.tflite import parse_tflite, parse_tflite_op_profile

__all__ = ["NUMBER", "DelegateCoverage", "ModelTiming", "OpSummary", "ParseError", "RunStats", "TfliteResult", "ToolMemory",
           "ToolResult", "parse_benchncnn", "parse_mnn_benchmark", "parse_mnn_time_profile", "parse_tflite",
           "parse_tflite_op_profile"]
