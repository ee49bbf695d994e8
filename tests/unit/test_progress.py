"""Progress on stderr: `slimlab bench` names its record and how far into the timed window it is; the nightly says
which series of how many it is measuring."""

import json
import os
import pty
import sys

import yaml

from slimlab.progress import series as series_progress
from tests.support import REPO, bench_block, slimlab

BENCH = bench_block(warmup=2, runs=20, min_seconds=1.0)


def bench_args(tiny_artifacts, tmp_path) -> list[str]:
    inventory = tmp_path / "lab.yaml"
    inventory.write_text(yaml.safe_dump({"devices": {"here": {
        "transport": "local", "runner": "python", "runtimes": ["tflite"], "workdir": str(tmp_path / "work")}}}))
    return ["bench", "--inventory", str(inventory), "--device", "here", "--artifact",
            str(tiny_artifacts["int8"].sidecar), "--threads", "1", "--settings", json.dumps(BENCH),
            "--output", str(tmp_path / "threads-1.json")]


def test_bench_in_a_terminal_shows_the_record_and_the_estimated_timed_window(tiny_artifacts, tmp_path, monkeypatch):
    chunks = []

    def read(fd):
        chunks.append(os.read(fd, 4096))
        return chunks[-1]

    # pty.spawn runs the command in a pseudo-terminal, with this process's environment and folder.
    monkeypatch.setenv("SLIMLAB_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.chdir(REPO)
    status = pty.spawn([sys.executable, "-m", "slimlab.cli", *bench_args(tiny_artifacts, tmp_path)], read)
    shown = b"".join(chunks).decode()
    assert os.waitstatus_to_exitcode(status) == 0, shown
    assert f"bench: {tmp_path / 'threads-1.json'}" in shown
    assert "here · default · 1t" in shown and "of ≥1 s timed (estimate)" in shown
    assert "median" in shown.split("(estimate)")[-1]  # the result comes after the live line


def test_a_job_log_gets_the_record_and_its_result_without_a_live_display(tiny_artifacts, tmp_path):
    done = slimlab(*bench_args(tiny_artifacts, tmp_path), env={"SLIMLAB_LOCK_DIR": str(tmp_path / "locks")})
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"bench: {tmp_path / 'threads-1.json'}\n"
    assert done.stdout.startswith(f"{tmp_path / 'threads-1.json'}: median ")


def test_the_nightly_shows_which_series_of_how_many(capsys):
    series = [{"recipe": "int8", "format": "tflite"}, {"recipe": "baseline", "format": "mnn"}]
    assert list(series_progress(series)) == series
    shown = capsys.readouterr().err
    assert "nightly series" in shown and "2/2" in shown and "baseline · mnn" in shown
