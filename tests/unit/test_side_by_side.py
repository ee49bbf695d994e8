"""The nightly's side-by-side rounds on this host: fresh instances every round, a calibrated slowdown made outside
the code under test is never called ok, and other work beside the rounds makes a series unsure, never a
regression."""

import shlex
import subprocess
import sys
from contextlib import contextmanager

from slimlab.lab import verdict
from slimlab.registry import runners, transports
from tests.support import REPO, bench_block, local_device

SETTINGS = bench_block(warmup=20, runs=400, min_seconds=1.0)
ROUNDS = 8


def side_by_side(device, artifact) -> tuple[dict, verdict.Comparison]:
    runner = runners()["python"](device, transports()["local"](device))
    raw = runner.compare(artifact, artifact, 1, SETTINGS, ROUNDS)
    thresholds = verdict.Thresholds()
    return raw, verdict.compare([r["baseline"] for r in raw["rounds"]], [r["candidate"] for r in raw["rounds"]],
                                thresholds, contended=verdict.contention(raw["load"], thresholds))


@contextmanager
def cpu_hog():
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        hog.kill()
        hog.wait()


def test_a_hog_beside_the_rounds_makes_the_series_unsure_never_a_verdict(tiny_artifacts, tmp_path):
    with cpu_hog():
        raw, result = side_by_side(local_device(tmp_path / "device"), tiny_artifacts["fp32"])
    assert raw["load"]["others_cores"] > 0.5  # a whole core of other work, whatever the host's size
    assert result.verdict == verdict.UNSURE and result.reason.startswith("contention: other processes used")


def test_a_calibrated_slowdown_of_the_candidate_is_never_ok(tiny_artifacts, tmp_path):
    """bench/slowdown makes every inference of the candidate's interpreters 20% longer; baseline and candidate are
    one file. On this tiny model (a few µs an inference) a busy host may leave the verdict unsure; it is never ok or
    an improvement, and the ratio shows the slowdown. How often it is caught is bench/nightly.py's to measure."""
    wrapper = tmp_path / "python-slowed"
    wrapper.write_text(f"#!/bin/sh\nSLIMLAB_SLOWDOWN=0.2 PYTHONPATH={shlex.quote(str(REPO / 'bench/slowdown'))} "
                       f"exec {shlex.quote(sys.executable)} \"$@\"\n")
    wrapper.chmod(0o755)
    device = local_device(tmp_path / "device", python={"interpreter": str(wrapper)})
    raw, result = side_by_side(device, tiny_artifacts["fp32"])
    assert result.verdict in (verdict.REGRESSION, verdict.UNSURE) and result.ratio > 1.1, result


def test_every_round_times_both_sides_for_its_share(tiny_artifacts, tmp_path):
    raw, _ = side_by_side(local_device(tmp_path / "device"), tiny_artifacts["fp32"])
    assert len(raw["rounds"]) == ROUNDS
    assert all(len(r["baseline"]) >= SETTINGS["runs"] // ROUNDS <= len(r["candidate"]) for r in raw["rounds"])
    assert raw["load"]["wall_s"] >= SETTINGS["min_seconds"]
