"""The report's fastest-setting table: one row per recipe, format and device."""

import pandas as pd

from slimlab import report


def measurement(device, option_set, threads, median_ms, **extra):
    return {"recipe": "int8", "format": "tflite", "device": device, "option_set": option_set, "threads": threads,
            "options": "{}", "latency_median_ms": median_ms, "latency_cv": 0.01, "runtime": "ai_edge_litert 2.3.0",
            "accuracy": 0.9, "size_bytes": 1000, "status": "ok", **extra}


def test_fastest_picks_the_lowest_median_over_threads_and_option_sets():
    table = pd.DataFrame([
        measurement("board", "default", 1, 4.0),
        measurement("board", "default", 2, 3.0),
        measurement("board", "no-xnnpack", 1, 9.0),
        measurement("board", "no-xnnpack", 2, 1.5),
        measurement("phone", "default", 1, 2.0),
        measurement("phone", "no-xnnpack", 1, 6.0),
        # A record that could not be measured is not a candidate.
        {"recipe": "int8", "format": "tflite", "device": "phone", "option_set": "fast", "status": "skipped"},
    ])
    best = report.fastest(table).set_index("device")
    assert list(best.columns) == [c for c in report.FASTEST_COLUMNS if c != "device"]
    assert best.loc["board", ["option_set", "threads", "latency_median_ms"]].tolist() == ["no-xnnpack", 2, 1.5]
    assert best.loc["board", "speedup_vs_default"] == 2.0  # over default's fastest thread count, 3.0 ms
    assert best.loc["phone", ["option_set", "threads", "speedup_vs_default"]].tolist() == ["default", 1, 1.0]


def test_fastest_is_empty_when_nothing_was_measured():
    table = pd.DataFrame([{"recipe": "int8", "format": "ncnn", "status": "unsupported", "error": "no"}])
    best = report.fastest(table)
    assert best.empty and list(best.columns) == report.FASTEST_COLUMNS
