"""The fake ADB device works with the real adb client and server."""

import hashlib
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from labpeers.adb_device import DEFAULT_FEATURES

pytestmark = [pytest.mark.lab, pytest.mark.timeout(60)]


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_connected_peer_is_listed_as_device(adb_server, adb_peer):
    assert adb_server.state(adb_peer.serial) == "device"
    listing = adb_server.run("devices", "-l").stdout.decode()
    assert f"{adb_peer.serial}" in listing and "model:slimlab_peer" in listing, listing
    features = adb_server.run("-s", adb_peer.serial, "features")
    assert features.stdout.decode().split() == list(DEFAULT_FEATURES)


def test_shell_returns_exit_status_and_separates_streams(adb_server, adb_peer):
    result = adb_server.run("-s", adb_peer.serial, "shell", "echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    # Commands run in the sandbox, which is the device's "/".
    pwd = adb_server.run("-s", adb_peer.serial, "shell", "pwd")
    assert pwd.stdout.decode().strip() == str(adb_peer.sandbox)


def test_shell_forwards_stdin(adb_server, adb_peer):
    result = adb_server.run("-s", adb_peer.serial, "shell", "cat; echo end", input=b"hello\n")
    assert (result.returncode, result.stdout) == (0, b"hello\nend\n")


def test_exec_out_merges_stderr_like_adbd(adb_server, adb_peer):
    result = adb_server.run("-s", adb_peer.serial, "exec-out", "echo out; echo err >&2")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"out\nerr\n", b"")


def test_push_pull_3mb_round_trip(adb_server, adb_peer, tmp_path):
    local, back = tmp_path / "blob.bin", tmp_path / "back.bin"
    local.write_bytes(os.urandom(3 * 1024 * 1024))
    # The parent directory does not exist yet: SEND must create it.
    device = "/data/local/tmp/slimlab/blob.bin"
    pushed = adb_server.run("-s", adb_peer.serial, "push", str(local), device)
    assert pushed.returncode == 0, pushed.stderr
    on_device = adb_peer.sandbox / device.lstrip("/")
    assert sha256(on_device) == sha256(local)
    pulled = adb_server.run("-s", adb_peer.serial, "pull", device, str(back))
    assert pulled.returncode == 0, pulled.stderr
    assert sha256(back) == sha256(local)
    # The shell sees the pushed file at the same place, relative to "/".
    remote_sum = adb_server.run("-s", adb_peer.serial, "shell", f"sha256sum {device.lstrip('/')}")
    assert remote_sum.stdout.split()[0].decode() == sha256(local)


def test_awkward_file_name_round_trips(adb_server, adb_peer, tmp_path):
    name = "it's a \"quoted\" file with spaces.txt"
    local, back = tmp_path / name, tmp_path / "back.txt"
    local.write_text("awkward\n")
    device = f"/data/local/tmp/{name}"
    pushed = adb_server.run("-s", adb_peer.serial, "push", str(local), device)
    assert pushed.returncode == 0, pushed.stderr
    assert (adb_peer.sandbox / "data/local/tmp" / name).read_text() == "awkward\n"
    cat = adb_server.run("-s", adb_peer.serial, "shell", f"cat {shlex.quote(device.lstrip('/'))}")
    assert cat.stdout == b"awkward\n"
    pulled = adb_server.run("-s", adb_peer.serial, "pull", device, str(back))
    assert pulled.returncode == 0, pulled.stderr
    assert back.read_text() == "awkward\n"


def test_streams_run_concurrently(adb_server, adb_peer):
    # The first command only finishes once the second one has run, which is
    # impossible unless the peer serves both streams at the same time.
    waiter = subprocess.Popen(
        [adb_server.adb, "-s", adb_peer.serial, "shell",
         "i=0; while [ ! -e go ]; do i=$((i+1)); [ $i -gt 200 ] && exit 1; sleep 0.05; done; echo waited"],
        env=adb_server.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert adb_server.run("-s", adb_peer.serial, "shell", "touch go").returncode == 0
        out, err = waiter.communicate(timeout=15)
    finally:
        waiter.kill()
        waiter.wait()
    assert (waiter.returncode, out) == (0, b"waited\n"), err


def test_stopped_peer_goes_offline_and_can_be_reconnected(adb_server, adb_peer):
    port = adb_peer.port
    adb_peer.stop()
    assert adb_server.wait_for_state(adb_peer.serial, lambda state: state != "device", timeout=5) in ("offline", None)
    adb_peer.start()
    assert adb_peer.port == port
    # adb 29's `adb reconnect offline` would cancel the server's pending
    # reconnection and drop the device; disconnect + connect is immediate.
    adb_server.run("disconnect", adb_peer.serial, timeout=10)
    adb_server.connect(adb_peer.serial)
    assert adb_server.run("-s", adb_peer.serial, "shell", "echo back").stdout == b"back\n"


def test_server_reconnects_by_itself_after_restart(adb_server, adb_peer):
    adb_peer.stop()
    assert adb_server.wait_for_state(adb_peer.serial, lambda state: state != "device", timeout=5) == "offline"
    adb_peer.start()
    # The server retries a lost TCP device by itself: at once, then every 10 s (adb 29).
    assert adb_server.wait_for_state(adb_peer.serial, lambda state: state == "device", timeout=15) == "device"
    assert adb_server.run("-s", adb_peer.serial, "shell", "echo back").stdout == b"back\n"


def test_stop_mid_command_truncates_output_and_kills_the_command(adb_server, adb_peer):
    running = subprocess.Popen(
        [adb_server.adb, "-s", adb_peer.serial, "shell", "echo $$ > pid; echo started; sleep 30; echo finished"],
        env=adb_server.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert running.stdout.readline() == b"started\n"
        adb_peer.stop()
        out, _ = running.communicate(timeout=10)
    finally:
        running.kill()
        running.wait()
    # adb 29 exits 0 here although no exit status arrived: only the missing
    # output shows that the command never finished.
    assert b"finished" not in out
    pid = int((adb_peer.sandbox / "pid").read_text())
    assert _wait_dead(pid), "the command outlived the peer"


def test_client_hanging_up_kills_its_command(adb_server, adb_peer):
    running = subprocess.Popen(
        [adb_server.adb, "-s", adb_peer.serial, "shell", "echo $$; sleep 30"],
        env=adb_server.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        pid = int(running.stdout.readline())
    finally:
        running.kill()  # the adb server then closes the stream on the device
        running.communicate(timeout=10)
    assert _wait_dead(pid), "the command outlived its client"
    assert adb_server.state(adb_peer.serial) == "device"


def test_background_job_outlives_its_command_but_not_the_peer(adb_server, adb_peer):
    started = adb_server.run("-s", adb_peer.serial, "shell", "sleep 30 >/dev/null 2>&1 & echo $!")
    assert started.returncode == 0, started.stderr
    pid = int(started.stdout)
    assert _alive(pid), "a finished command took its background job with it"
    adb_peer.stop()
    assert _wait_dead(pid), "the background job outlived the peer"


def _wait_dead(pid, timeout=5.0):
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def _alive(pid):
    """True while pid runs; a killed process waiting to be reaped counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone before or while reading
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
