"""The nightly history store: append-only, versioned, and whole after a kill -9 mid-append."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from slimlab.errors import ArtifactError
from slimlab.lab.history import History

APPEND_FOREVER = """
import sys
import pandas as pd
from slimlab.lab.history import History

history = History(sys.argv[1])
rows = pd.DataFrame({"series": [f"s{i}" for i in range(200_000)], "ratio": 1.0})
print("ready", flush=True)
for run in range(10**6):
    history.append(f"run{run:07d}", rows)
"""


def test_runs_are_appended_and_read_back_in_order(tmp_path):
    history = History(tmp_path)
    history.append("20260101T000000Z", pd.DataFrame({"series": ["a", "b"], "ratio": [1.0, 1.1]}))
    history.append("20260102T000000Z", pd.DataFrame({"series": ["a"], "ratio": [0.9]}))
    assert history.read()["ratio"].tolist() == [1.0, 1.1, 0.9]
    with pytest.raises(ArtifactError, match="already in the history"):
        history.append("20260102T000000Z", pd.DataFrame({"series": ["a"], "ratio": [0.9]}))


def test_a_kill_mid_append_loses_and_duplicates_nothing(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", APPEND_FOREVER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 60
    while len(list((tmp_path / "runs").glob("run*.parquet"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # most likely inside the next append
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    stored = History(tmp_path).read()
    complete = len(list((tmp_path / "runs").glob("run*.parquet")))
    assert complete >= 3 and len(stored) == complete * 200_000
    assert stored.groupby("series").size().eq(complete).all()  # each run whole, none twice


def test_a_store_of_another_version_is_refused_and_left_alone(tmp_path):
    (tmp_path / "store.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(ArtifactError, match="version 99"):
        History(tmp_path).append("x", pd.DataFrame({"a": [1]}))
    assert json.loads((tmp_path / "store.json").read_text()) == {"version": 99}


def test_a_damaged_run_is_named_and_not_rewritten(tmp_path):
    history = History(tmp_path)
    history.append("good", pd.DataFrame({"a": [1]}))
    (tmp_path / "runs/bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ArtifactError, match="bad.parquet: cannot read this history run"):
        history.read()
    assert (tmp_path / "runs/bad.parquet").read_bytes() == b"PAR1 not really"
