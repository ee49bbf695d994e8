"""Shared test helpers.

Lab tests need root, network namespaces, sshd or adb. On a laptop without them
they skip with the reason; in CI ``SLIMLAB_REQUIRE_LAB=1`` turns the skip into
a failure so that a missing peer can never pass silently.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The small data set unit tests train on (scikit-learn's 8x8 digits).
DIGITS = {"name": "digits", "seed": 7, "val_fraction": 0.1, "test_fraction": 0.2}
LAB_REQUIRED = os.environ.get("SLIMLAB_REQUIRE_LAB") == "1"


def lab_unavailable(reason: str) -> None:
    """Skip (or, in CI, fail) a test whose real peer cannot be provided here."""
    if LAB_REQUIRED:
        pytest.fail(f"lab requirement missing (SLIMLAB_REQUIRE_LAB=1): {reason}")
    pytest.skip(reason)


def slimlab(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the ``slimlab`` CLI in a fresh interpreter, as the workflow does."""
    return subprocess.run(
        [sys.executable, "-m", "slimlab.cli", *args],
        cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout,
    )
