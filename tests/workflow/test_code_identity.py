"""Plugin code is part of an artifact's identity: editing a stage reruns what it built and what lies below."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import REPO

pytestmark = pytest.mark.slow

STAGE = '''"""mine.scale: multiply the logits layer's kernel by a factor."""

from pydantic import Field

from slimlab import hookimpl
from slimlab.stages import Stage, StageParams


class ScaleParams(StageParams):
    factor: float = Field(1.0, gt=0)


def scale(artifact, params, ctx):
    """Scale the last layer's kernel."""
    model = artifact.model
    kernel, *rest = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel * params.factor, *rest])
    return model


@hookimpl
def register_stages(register):
    register(Stage("mine.scale", scale, ScaleParams))
'''


def snakemake(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/ci", *args],
                          cwd=root, env=env, capture_output=True, text=True, timeout=900)


def jobs(output: str) -> dict[str, int]:
    table = output.split("Job stats:", 1)[1] if "Job stats:" in output else ""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A checkout with a user stage in plugins/, built once: train -> mine.scale -> tflite, no devices."""
    root = tmp_path_factory.mktemp("identity")
    for name in ("Snakefile", "workflow", "profiles", "devices"):
        (root / name).symlink_to(REPO / name)
    (root / "plugins").mkdir()
    (root / "plugins/mine.py").write_text(STAGE)
    (root / "config").mkdir()
    (root / "config/config.yaml").write_text(yaml.safe_dump({
        "dataset": {"name": "digits"},
        "recipes": {"scaled": ["train", {"mine.scale": {"factor": 2.0}}], "plain": ["train"]},
        "formats": ["tflite"],
        "lab": {"inventory": "devices/lab.yaml", "devices": []},
    }))
    done = snakemake(root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def test_editing_a_stage_reruns_its_artifacts_and_what_lies_below(built):
    assert "Nothing to be done" in snakemake(built, "-n").stdout
    plugin = built / "plugins/mine.py"
    original = plugin.read_text()
    plugin.write_text(original.replace("kernel * params.factor", "params.factor * kernel"))
    try:
        done = snakemake(built, "-n")
    finally:
        plugin.write_text(original)
    assert done.returncode == 0, done.stderr
    # mine.scale itself, its tflite conversion, and the report; train and the plain recipe stay.
    assert jobs(done.stdout) == {"compress": 1, "convert": 1, "report": 1, "steps_succeeded": 1, "all": 1}
    assert "Nothing to be done" in snakemake(built, "-n").stdout


def test_editing_a_comment_elsewhere_reruns_nothing(built):
    config = built / "config/config.yaml"
    config.write_text(config.read_text() + "# a comment\n")
    assert "Nothing to be done" in snakemake(built, "-n").stdout
