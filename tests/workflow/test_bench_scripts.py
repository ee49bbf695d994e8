"""bench/compression.py runs every recipe of the default config (tiny epochs) and prints its table."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import REPO

pytestmark = pytest.mark.slow


def test_compression_table_covers_every_recipe(tmp_path):
    for name in ("Snakefile", "workflow", "plugins", "profiles", "devices", "config"):
        (tmp_path / name).symlink_to(REPO / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench/compression.py"), "--workflow-profile", "profiles/ci",
         "--directory", str(tmp_path), "--", "--config", "formats=[tflite]"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "snakemake failed" not in done.stderr
    recipes = yaml.safe_load((REPO / "config/config.yaml").read_text())["recipes"]
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert {"gzip × smaller", "zero fraction", "drop pt", "median ms", "huffman bytes", "target", "met"} <= set(header)
    rows = {line.strip("|").split("|")[0].strip(): line for line in table[2:]}
    assert set(rows) == set(recipes)
    assert "≥12× gzip" in rows["pruned_int8"] and rows["pruned_int8"].rstrip(" |").endswith(("yes", "no"))
    assert done.stdout.startswith("Machine: ")
    shutil.rmtree(tmp_path / "results")
