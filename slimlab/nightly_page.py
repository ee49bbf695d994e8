"""The nightly's ``verdict.md``: the night's counts, how noisy it was, and one row per series."""

import numpy as np

SERIES_KEYS = ("recipe", "format", "device", "option_set", "threads")
# Most alarming first: what a person must look at, then what was measured, then what was listed apart.
ORDER = {"infra": 0, "missing": 1, "regression": 2, "unsure": 3, "improvement": 4, "new": 5, "ok": 6,
         "unsupported": 7, "emulated": 8, "software_gpu": 8}


def series_key(row: dict) -> str:
    return "|".join(str(row.get(key, "")) for key in SERIES_KEYS)


def noise(rows: list[dict]) -> str:
    """How noisy the night was: the spread of the series whose models were byte-identical to their baselines (an
    A/A comparison for free), and how many series other work on the device made unsure."""
    same = [row for row in rows if row.get("identical") and row.get("latency_ratio") is not None]
    contended = sum("contention:" in row.get("reason", "") for row in rows)
    if not same:
        return f"Noise: no byte-identical series to read it from tonight; {contended} series met contention."
    off = np.array([abs(row["latency_ratio"] - 1) for row in same])
    widths = np.array([(row["latency_high"] - row["latency_low"]) / 2 for row in same])
    return (f"Noise: over {len(same)} byte-identical series, the median |ratio − 1| was {np.median(off):.1%} "
            f"(largest {off.max():.1%}), the median interval ±{np.median(widths):.1%}; "
            f"{contended} series met contention.")


def markdown(rows: list[dict], meta: dict) -> str:
    counts = {status: sum(row["status"] == status for row in rows) for status in sorted({r["status"] for r in rows})}
    lines = [f"# slimlab nightly {meta['run']}", "",
             f"{meta['time']} · commit {meta['commit'] or 'unknown'} · config {meta['config_sha256'][:12]} · "
             f"baseline accepted {meta['baseline'] or 'never'}", "",
             ", ".join(f"**{n} {status}**" for status, n in counts.items()), "", noise(rows), "",
             "| status | recipe | format | device | set | threads | ratio | interval | ms | record | reason |",
             "|---|---|---|---|---|---|---:|---|---:|---|---|"]
    for row in sorted(rows, key=lambda r: (ORDER.get(r["status"], 9), series_key(r))):
        ratio = row.get("latency_ratio")
        numbers = (f"[{ratio:.3f}]({row['samples']})", f"{row['latency_low']:.3f}–{row['latency_high']:.3f}") \
            if ratio is not None else ("", "")
        median = f"{row['median_ms']:.4g}" if row.get("median_ms") is not None else ""
        lines.append(f"| {row['status']} | {row['recipe']} | {row['format']} | {row.get('device', '')} | "
                     f"{row.get('option_set', '')} | {row.get('threads', '')} | {numbers[0]} | {numbers[1]} | "
                     f"{median} | [record]({row['record']}) | {row.get('reason', '')} |")
    return "\n".join(lines) + "\n"
