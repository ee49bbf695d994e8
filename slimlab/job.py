"""What a workflow job knows about itself: when its process started.

A job's command may run in a zygote's child (:mod:`slimlab.zygote`), which was forked
long after the job began; the client records its own start in ``SLIMLAB_JOB_STARTED``
so that a step's ``startup_s`` is what the job really waited for.
"""

import os
import time
from pathlib import Path


def started() -> float:
    """When this job's process started (epoch seconds): the job's own, even in a zygote's child."""
    if "SLIMLAB_JOB_STARTED" in os.environ:
        return float(os.environ["SLIMLAB_JOB_STARTED"])
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


def mark_started() -> None:
    """Record this process's start for the zygote child that may run the command."""
    os.environ.setdefault("SLIMLAB_JOB_STARTED", str(started()))
