"""One benchmark per physical device at a time, also across concurrent runs and checkouts.

Snakemake's ``device_<name>`` resource serialises a device's jobs within one
run; two runs started side by side (a nightly and a manual one, or two clones)
would still time on the same board at once and skew each other. Every bench
job therefore holds a lock named after the device as its transport reaches it
(``local:<hostname>``, ``ssh:<host>:<port>``, ``adb:<serial>``) with
``fcntl.flock`` while it measures, in a per-user folder shared by every
checkout: ``$SLIMLAB_LOCK_DIR``, else ``$XDG_RUNTIME_DIR/slimlab/locks``, else
``~/.cache/slimlab/locks``. The payload also flocks a file on the device itself.

The kernel releases a flock when its holder dies, however it dies, so a lock is
never stale. The file's text (pid, host, start time) only tells a waiting job
who it waits for.
"""

import datetime as dt
import hashlib
import fcntl
import os
import platform
import re
import time
from contextlib import contextmanager
from pathlib import Path

from slimlab.lab.transport import DeviceTimeout


def lock_dir() -> Path:
    if os.environ.get("SLIMLAB_LOCK_DIR"):
        return Path(os.environ["SLIMLAB_LOCK_DIR"])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return (Path(runtime) / "slimlab" if runtime else Path.home() / ".cache" / "slimlab") / "locks"


def lock_file(folder: Path, physical_id: str) -> Path:
    """A short, safe file name for any device identity (a hash keeps long or odd ones apart)."""
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", physical_id)[:60]
    return folder / f"{readable}-{hashlib.sha256(physical_id.encode()).hexdigest()[:12]}.lock"


@contextmanager
def device_lock(physical_id: str, folder: Path, wait_s: float, poll_s: float = 0.1):
    """Hold the device's lock; wait up to ``wait_s`` for another holder, then fail with ``timeout``."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = lock_file(folder, physical_id)
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
                        f"device {physical_id}: still busy after waiting {wait_s:g}s for {holder} ({path})"
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
