"""Device entries and bench blocks for lab tests, checked as the inventory and the config check them."""

import sys

from slimlab.lab.devices import Device
from tests.support import bench_block, lab_device

__all__ = ["bench_block", "lab_device", "ssh_device", "ssh_entry"]


def ssh_entry(board, workdir, **ssh) -> dict:
    """An inventory entry for a virtual board; ``ssh`` adds or replaces keys of its ``ssh:`` block."""
    # The board runs commands on this host (netns shares the file system), so the venv's Python works there.
    return {"transport": "ssh", "runner": "python", "runtimes": ["tflite"],
            "workdir": str(workdir), "python": {"interpreter": sys.executable},
            "ssh": {**board.ssh_config_entry(), "connect_timeout_s": 3, "attempts": 2, **ssh}}


def ssh_device(board, workdir, **ssh) -> Device:
    return lab_device("board", ssh_entry(board, workdir, **ssh))
