"""Atomic writes: readers see the old file or the whole new one; a killed writer leaves the old one."""

import json
import signal
import subprocess
import sys

import pytest

from slimlab.atomic import atomic_path, write_json


def test_write_json_replaces_whole_file(tmp_path):
    target = tmp_path / "sub" / "record.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2, "b": [1, 2]})
    assert json.loads(target.read_text()) == {"a": 2, "b": [1, 2]}
    assert [p.name for p in target.parent.iterdir()] == ["record.json"]


def test_failed_write_keeps_old_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "record.json"
    write_json(target, {"old": True})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"new": tr')
            raise RuntimeError("writer crashed")
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_killed_writer_never_exposes_a_partial_file(tmp_path):
    target = tmp_path / "model.tflite"
    target.write_bytes(b"old model")
    script = f"""
import os, signal
from pathlib import Path
from slimlab.atomic import atomic_path
with atomic_path(Path({str(target)!r})) as tmp:
    tmp.write_bytes(b"half of a new mod")
    os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert done.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old model"


def test_temp_file_keeps_the_real_suffix(tmp_path):
    with atomic_path(tmp_path / "model.keras") as tmp:
        assert tmp.suffix == ".keras" and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert (tmp_path / "model.keras").read_bytes() == b"x"
