"""Latency summaries, computed on the host from the raw per-iteration times."""

import numpy as np


def summarize(latencies_ms: list[float]) -> dict:
    values = np.asarray(latencies_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no latencies to summarise")
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return {
        "n": int(values.size),
        "median_ms": float(np.median(values)),
        "p90_ms": float(np.percentile(values, 90)),
        "min_ms": float(values.min()),
        "max_ms": float(values.max()),
        "mean_ms": mean,
        "std_ms": std,
        "cv": std / mean if mean else 0.0,
    }
