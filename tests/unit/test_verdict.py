"""A/B verdicts on synthetic interleaved samples with known effects, drift and outliers."""

import numpy as np
import pytest

from slimlab.lab.verdict import IMPROVEMENT, OK, REGRESSION, UNSURE, Thresholds, compare

FAST = Thresholds(resamples=400)


def rounds(effect: float, rng, n_rounds=10, per_round=100, drift=0.02, noise=0.08, outliers=0.02):
    """Per-round samples: each round shares a drift factor (the device got slower or faster), samples are
    log-normal, and a few are 5x outliers (an interrupt)."""
    baseline, candidate = [], []
    for _ in range(n_rounds):
        shift = np.exp(rng.normal(0, drift))
        for side, factor in ((baseline, 1.0), (candidate, 1.0 + effect)):
            samples = shift * factor * np.exp(rng.normal(0, noise, per_round))
            samples[rng.random(per_round) < outliers] *= 5
            side.append(samples)
    return baseline, candidate


@pytest.mark.parametrize("effect, expected", [(0.0, OK), (0.05, REGRESSION), (0.10, REGRESSION), (-0.06, IMPROVEMENT)])
def test_known_effects_are_called_right_every_time(effect, expected):
    rng = np.random.default_rng(3)
    verdicts = [compare(*rounds(effect, rng), FAST, seed=i).verdict for i in range(30)]
    assert verdicts == [expected] * 30


def test_drift_between_rounds_cancels_because_both_sides_share_it():
    rng = np.random.default_rng(5)
    # 10 % drift from round to round dwarfs the 5 % effect, yet each round's pair moves together.
    baseline, candidate = rounds(0.05, rng, drift=0.10)
    result = compare(baseline, candidate, FAST)
    assert result.verdict == REGRESSION and 1.03 < result.ratio < 1.07


def test_a_step_below_the_minimum_effect_is_not_an_alert():
    rng = np.random.default_rng(7)
    result = compare(*rounds(0.01, rng, per_round=2000), FAST)
    assert result.low > 1 and result.verdict == OK  # real, but smaller than worth waking anyone for


def test_too_few_rounds_or_samples_to_tell_is_unsure_not_a_verdict():
    rng = np.random.default_rng(11)
    few_rounds = compare(*rounds(0.0, rng, n_rounds=3, per_round=5, noise=0.4), FAST)
    assert few_rounds.verdict == UNSURE and "only 3 rounds" in few_rounds.reason
    noisy = compare(*rounds(0.0, rng, n_rounds=8, per_round=5, noise=0.4, drift=0.0), FAST)
    assert noisy.verdict == UNSURE and "too noisy" in noisy.reason


def test_one_unlucky_round_is_not_a_regression():
    rng = np.random.default_rng(17)
    baseline, candidate = rounds(0.0, rng)
    candidate[4] = candidate[4] * 3  # a burst of load hit the candidate once
    assert compare(baseline, candidate, FAST).verdict in (OK, UNSURE)


def test_a_decisive_interval_that_two_rounds_contradict_is_unsure_not_ok():
    """Eight rounds 10% slower and two a hair faster: the interval lies above 1, the sign test does not back it."""
    rng = np.random.default_rng(3)
    baseline, candidate = rounds(0.10, rng, drift=0.0, noise=0.01, outliers=0.0)
    for index in (2, 7):
        candidate[index] = baseline[index] * 0.999
    result = compare(baseline, candidate, FAST)
    assert result.low > 1 and result.verdict == UNSURE and "only 8 of 10 rounds agree" in result.reason


def test_a_throttled_device_is_unsure_whatever_the_numbers():
    rng = np.random.default_rng(13)
    assert compare(*rounds(0.2, rng), FAST, throttled=True).verdict == UNSURE


@pytest.mark.parametrize("baseline, candidate, message", [
    ([[1.0]], [[1.0]], "at least 2"),
    ([[1.0], [1.0]], [[1.0]], "same number"),
    ([[1.0], [0.0]], [[1.0], [1.0]], "positive"),
    ([[1.0], [np.nan]], [[1.0], [1.0]], "finite"),
])
def test_malformed_samples_are_refused(baseline, candidate, message):
    with pytest.raises(ValueError, match=message):
        compare(baseline, candidate, FAST)
