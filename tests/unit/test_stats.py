import pytest

from slimlab.lab.stats import summarize


def test_summary_of_known_latencies():
    stats = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats["n"] == 5
    assert stats["median_ms"] == 3.0
    assert stats["min_ms"] == 1.0 and stats["max_ms"] == 100.0
    assert stats["mean_ms"] == pytest.approx(22.0)
    assert stats["p90_ms"] == pytest.approx(61.6)
    assert stats["std_ms"] == pytest.approx(43.6177, rel=1e-4)
    assert stats["cv"] == pytest.approx(43.6177 / 22.0, rel=1e-4)


def test_empty_latencies_are_an_error_not_zeros():
    with pytest.raises(ValueError):
        summarize([])
