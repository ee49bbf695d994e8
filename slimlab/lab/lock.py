"""One benchmark per device at a time, also across concurrent snakemake runs.

Snakemake's ``device_<name>`` resource serialises a device's jobs within one
run; two runs started side by side (a nightly and a manual one) would still
time on the same board at once and skew each other. Every bench job therefore
holds ``<lock_dir>/<device>.lock`` with ``fcntl.flock`` while it measures.

The kernel releases a flock when its holder dies, however it dies, so a lock is
never stale. The file's text (pid, host, start time) only tells a waiting job
who it waits for. flock is reliable on local file systems; keep ``results/``
off NFS when several hosts share one lab.
"""

import datetime as dt
import fcntl
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path

from slimlab.lab.transport import DeviceTimeout

DEFAULT_LOCK_DIR = "results/lab/locks"


def lock_dir() -> Path:
    """``$SLIMLAB_LOCK_DIR``, else results/lab/locks under the working directory (the workflow's)."""
    return Path(os.environ.get("SLIMLAB_LOCK_DIR", DEFAULT_LOCK_DIR))


@contextmanager
def device_lock(device: str, folder: Path, wait_s: float, poll_s: float = 0.1):
    """Hold the device's lock; wait up to ``wait_s`` for another holder, then fail with ``timeout``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{device}.lock"
    with open(path, "a+") as lock:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    lock.seek(0)
                    holder = lock.read().strip() or "another process"
                    raise DeviceTimeout(
                        f"device {device!r}: still busy after waiting {wait_s:g}s for {holder} ({path})"
                    ) from None
                time.sleep(poll_s)
        lock.truncate(0)
        since = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        lock.write(f"pid {os.getpid()} on {platform.node()} since {since}\n")
        lock.flush()
        try:
            yield path
        finally:
            lock.truncate(0)
            fcntl.flock(lock, fcntl.LOCK_UN)
