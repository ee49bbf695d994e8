"""A/B verdicts on interleaved measurements: is the candidate slower than the baseline?

The baseline artifact and the candidate are timed on the same device in the same
session, in alternating rounds (A B A B ...), so drift of the machine between
rounds hits both alike (Chromium Pinpoint, FAI-PEP). Timings within one round are
autocorrelated, so the unit of resampling is the round: a block bootstrap over
rounds gives an interval for the ratio of the candidate's median to the
baseline's, and a sign test over the rounds' own ratios checks that the change
shows in (nearly) every round, not in one unlucky one. The verdict needs
evidence, consistency and size:

- ``regression``: the whole interval lies above 1, the candidate was slower in
  significantly many rounds, and the ratio is at least ``1 + min_effect``;
- ``improvement``: the mirror image;
- ``unsure``: fewer than ``min_rounds`` rounds, a decisive interval that the
  sign test does not back, an interval wider than ``max_width`` (too noisy to
  tell a ``min_effect`` step), a throttled run, or
  rounds that other work shared the device with (:func:`contention`); the caller
  re-measures;
- ``ok``: otherwise.
"""

from dataclasses import asdict, dataclass
from math import comb

import numpy as np

OK, REGRESSION, IMPROVEMENT, UNSURE = "ok", "regression", "improvement", "unsure"


@dataclass(frozen=True)
class Thresholds:
    min_effect: float = 0.03  # the smallest change worth an alert, as a fraction
    confidence: float = 0.99  # of the bootstrap interval
    max_width: float = 0.06  # an interval wider than this (upper/lower - 1) cannot decide a min_effect step
    resamples: int = 2000
    min_rounds: int = 6  # a bootstrap over fewer rounds has too few distinct resamples to trust
    sign_p: float = 0.05  # the rounds must agree on the direction at this level (one-sided sign test)
    # Other processes' work beside the rounds, and a hypervisor's steal, in cores: more says nothing of the models.
    max_other_cores: float = 0.25
    max_steal_cores: float = 0.05


@dataclass(frozen=True)
class Comparison:
    verdict: str
    ratio: float  # median(candidate) / median(baseline), pooled over rounds
    low: float  # the bootstrap interval of the ratio
    high: float
    rounds: int
    baseline_median: float
    candidate_median: float
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def _pooled_medians(rounds: list[np.ndarray], picks: np.ndarray) -> float:
    return float(np.median(np.concatenate([rounds[i] for i in picks])))


def sign_test(wins: int, n: int) -> float:
    """P(at least ``wins`` of ``n`` rounds go one way) if each went either way at even odds."""
    return sum(comb(n, k) for k in range(wins, n + 1)) / 2**n


def contention(load: dict | None, thresholds: Thresholds) -> str | None:
    """Why the rounds' device was not the models' alone (the payload's ``load``), or None."""
    if load is None:
        return None
    if load["others_cores"] > thresholds.max_other_cores:
        return f"other processes used {load['others_cores']:.2f} cores during the rounds"
    if load["steal_cores"] > thresholds.max_steal_cores:
        return f"the hypervisor stole {load['steal_cores']:.2f} cores during the rounds"
    return None


def compare(baseline: list[list[float]], candidate: list[list[float]], thresholds: Thresholds = Thresholds(),
            seed: int = 0, throttled: bool = False, contended: str | None = None) -> Comparison:
    """Compare per-round samples (``baseline[i]`` and ``candidate[i]`` were measured side by side in round i);
    ``contended`` says why other work shared the device (:func:`contention`)."""
    if len(baseline) != len(candidate) or len(baseline) < 2:
        raise ValueError(f"need the same number (at least 2) of baseline and candidate rounds, "
                         f"got {len(baseline)} and {len(candidate)}")
    a = [np.asarray(r, np.float64) for r in baseline]
    b = [np.asarray(r, np.float64) for r in candidate]
    if any(r.size == 0 or not np.all(np.isfinite(r)) or np.any(r <= 0) for r in (*a, *b)):
        raise ValueError("every round needs positive, finite samples")
    n = len(a)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(thresholds.resamples, n))
    # The same rounds for both sides: a round's drift cancels in the ratio.
    ratios = np.array([_pooled_medians(b, p) / _pooled_medians(a, p) for p in picks])
    tail = (1 - thresholds.confidence) / 2
    low, high = (float(q) for q in np.quantile(ratios, [tail, 1 - tail]))
    med_a, med_b = float(np.median(np.concatenate(a))), float(np.median(np.concatenate(b)))
    ratio = med_b / med_a
    per_round = [np.median(rb) / np.median(ra) for ra, rb in zip(a, b)]
    slower = sign_test(sum(r > 1 for r in per_round), n) <= thresholds.sign_p
    faster = sign_test(sum(r < 1 for r in per_round), n) <= thresholds.sign_p
    if throttled:
        verdict, reason = UNSURE, "the device throttled during the measurement"
    elif contended:
        verdict, reason = UNSURE, f"contention: {contended}"
    elif n < thresholds.min_rounds:
        verdict, reason = UNSURE, f"only {n} rounds; at least {thresholds.min_rounds} are needed to decide"
    elif low > 1 and slower and ratio >= 1 + thresholds.min_effect:
        verdict, reason = REGRESSION, f"{(ratio - 1) * 100:.1f}% slower ({thresholds.confidence:.0%} interval " \
                                      f"{(low - 1) * 100:+.1f}% to {(high - 1) * 100:+.1f}%)"
    elif high < 1 and faster and ratio <= 1 - thresholds.min_effect:
        verdict, reason = IMPROVEMENT, f"{(1 - ratio) * 100:.1f}% faster ({thresholds.confidence:.0%} interval " \
                                       f"{(low - 1) * 100:+.1f}% to {(high - 1) * 100:+.1f}%)"
    elif (low > 1 and ratio >= 1 + thresholds.min_effect) or (high < 1 and ratio <= 1 - thresholds.min_effect):
        # A decisive interval that the rounds do not back: one or two odd rounds decide neither way.
        agree = sum((r > 1) == (ratio > 1) for r in per_round)
        verdict, reason = UNSURE, f"{(ratio - 1) * 100:+.1f}%, but only {agree} of {n} rounds agree"
    elif high - low > thresholds.max_width:
        verdict, reason = UNSURE, f"too noisy: the interval {(low - 1) * 100:+.1f}% to {(high - 1) * 100:+.1f}% " \
                                  f"is wider than {thresholds.max_width:.0%}"
    else:
        verdict, reason = OK, f"{(ratio - 1) * 100:+.1f}% (interval {(low - 1) * 100:+.1f}% to {(high - 1) * 100:+.1f}%)"
    return Comparison(verdict, ratio, low, high, n, med_a, med_b, reason)
