"""verdict.md's noise line: read from the byte-identical series, with the series that met contention."""

from slimlab.nightly_page import markdown, noise


def row(ratio, low, high, identical=True, status="ok", reason=""):
    return {"recipe": "r", "format": "tflite", "record": "x.json", "samples": "s.json", "status": status,
            "latency_ratio": ratio, "latency_low": low, "latency_high": high, "identical": identical, "reason": reason}


def test_the_noise_line_reads_only_byte_identical_series():
    rows = [row(1.01, 0.99, 1.03), row(0.98, 0.97, 1.00), row(1.02, 1.00, 1.04),
            row(1.30, 1.28, 1.32, identical=False, status="regression"),
            row(1.0, 0.9, 1.1, status="unsure", reason="contention: other processes used 0.98 cores")]
    line = noise(rows)
    # |ratio - 1| over the four identical series: 0.01, 0.02, 0.02, 0.0 -> median 1.5%, largest 2.0%.
    assert line.startswith("Noise: over 4 byte-identical series, the median |ratio − 1| was 1.5% (largest 2.0%)")
    assert line.endswith("1 series met contention.")
    assert line in markdown(rows, {"run": "1", "time": "t", "commit": None, "config_sha256": "0" * 64,
                                   "baseline": None})


def test_a_night_without_identical_series_says_so():
    assert noise([row(1.3, 1.2, 1.4, identical=False)]).startswith("Noise: no byte-identical series")
