"""The ssh transport against real OpenSSH boards: host keys, uploads, commands, timeouts, a full bench."""

import contextlib
import logging
import os
import shutil
import sys
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from slimlab.errors import DeviceError
from slimlab.lab import bench
from slimlab.lab.transport import DeviceTimeout, DeviceToolError
from slimlab.records import BenchRecord, load
from slimlab.registry import runners, transports
from tests.lab.entries import bench_block, lab_device, ssh_device, ssh_entry

pytestmark = [pytest.mark.lab, pytest.mark.timeout(60)]

HOSTILE = "it's a \"dir\"; touch PWNED; $(touch PWNED2) `touch PWNED3`"
BENCH = bench_block(warmup=2, runs=20, min_seconds=0.0, timeout_s=60)


def no_injection(root):
    return not [p for p in root.rglob("PWNED*")]


def test_push_is_verified_content_addressed_and_pulls_back(ssh_board, tmp_path):
    transport = transports()["ssh"](ssh_device(ssh_board, tmp_path / HOSTILE))
    local = tmp_path / "model.tflite"
    local.write_bytes(os.urandom(200_000))
    remote = transport.push(local)
    assert remote.startswith(str(tmp_path / HOSTILE / "blobs")) and remote.endswith(".tflite")
    first = os.stat(remote).st_mtime_ns
    assert transport.push(local) == remote and os.stat(remote).st_mtime_ns == first  # uploaded once
    with open(remote, "r+b") as f:  # a damaged copy on the board is replaced, not trusted
        f.write(b"\0" * 8)
    transport.push(local)
    back = tmp_path / "back.bin"
    transport.pull(remote, back)
    assert back.read_bytes() == local.read_bytes()
    assert not list((tmp_path / HOSTILE / "blobs").glob("*.part-*"))  # no temp files left behind
    transport.close()
    assert no_injection(tmp_path)


def test_run_quotes_every_argument_and_reports_exit_status(ssh_board, tmp_path):
    transport = transports()["ssh"](ssh_device(ssh_board, tmp_path / HOSTILE))
    echoed = transport.run([sys.executable, "-c", "import os, sys; print(sys.argv[1]); print(os.getcwd())", HOSTILE],
                           timeout=20)
    assert echoed.returncode == 0
    assert echoed.stdout.splitlines() == [HOSTILE, str(tmp_path / HOSTILE)]
    failed = transport.run(["sh", "-c", "echo oops >&2; exit 7"], timeout=20)
    assert (failed.returncode, failed.stdout, failed.stderr) == (7, "", "oops\n")
    transport.close()
    assert no_injection(tmp_path)


def test_command_timeout_kills_the_remote_command(ssh_board, tmp_path):
    transport = transports()["ssh"](ssh_device(ssh_board, tmp_path / "w"))
    pid_file = tmp_path / "sleeper.pid"
    started = time.monotonic()
    with pytest.raises(DeviceTimeout, match=r"device 'board': command on .* timed out after 1s"):
        transport.run(["sh", "-c", f"echo $$ > {pid_file}; sleep 30"], timeout=1)
    assert time.monotonic() - started < 5
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5  # the board shares our pid namespace: its process is visible here
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}"), "the timed-out command is still running on the board"
    assert transport.run(["echo", "still usable"], timeout=10).stdout == "still usable\n"
    transport.close()


def test_unknown_host_key_is_refused_by_default(ssh_board, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    transport = transports()["ssh"](ssh_device(ssh_board, tmp_path / "w", known_hosts=str(empty)))
    with pytest.raises(DeviceToolError, match=rf"host key of .* is not in {empty}; .*trust_on_first_use"):
        transport.run(["touch", str(tmp_path / "PWNED")], timeout=10)
    assert no_injection(tmp_path)
    assert empty.read_text() == ""


def test_changed_host_key_is_refused_even_with_trust_on_first_use(ssh_board, tmp_path):
    impostor = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    known = tmp_path / "known_hosts"
    real = ssh_board.known_hosts.read_text()
    known.write_text(real.replace(real.split()[2], impostor.decode().split()[1]))  # same names, another key
    transport = transports()["ssh"](ssh_device(ssh_board, tmp_path / "w", known_hosts=str(known),
                                               trust_on_first_use=True))
    with pytest.raises(DeviceToolError, match=rf"host key of .* does not match {known}"):
        transport.run(["touch", str(tmp_path / "PWNED")], timeout=10)
    assert no_injection(tmp_path)


def test_trust_on_first_use_is_logged_and_saves_the_key(ssh_board, tmp_path, caplog):
    known = tmp_path / "new" / "known_hosts"
    transport = transports()["ssh"](ssh_device(ssh_board, tmp_path / "w", known_hosts=str(known),
                                               trust_on_first_use=True))
    with caplog.at_level(logging.WARNING):
        assert transport.run(["echo", "hi"], timeout=10).stdout == "hi\n"
    assert "trust_on_first_use" in caplog.text
    saved = known.read_text().split()
    assert saved[1:] == ssh_board.known_hosts.read_text().split()[1:3]  # the board's real host key
    transport.close()
    # Now it is known: the default policy accepts it.
    strict = transports()["ssh"](ssh_device(ssh_board, tmp_path / "w", known_hosts=str(known)))
    assert strict.run(["true"], timeout=10).returncode == 0
    strict.close()


def test_missing_passphrase_variable_is_named_not_guessed(ssh_board, tmp_path, monkeypatch):
    monkeypatch.delenv("SLIMLAB_TEST_KEY_PASS", raising=False)
    transport = transports()["ssh"](ssh_device(ssh_board, tmp_path / "w", key_passphrase_env="SLIMLAB_TEST_KEY_PASS"))
    with pytest.raises(DeviceToolError, match=r"\$SLIMLAB_TEST_KEY_PASS, which is not set"):
        transport.run(["true"], timeout=10)


def test_bench_record_on_an_ssh_board(ssh_board, tiny_artifacts, tmp_path):
    device = ssh_device(ssh_board, tmp_path / "board work")
    out = tmp_path / "rec" / "threads-1.json"
    record = bench.run(device, tiny_artifacts["int8"].sidecar, 1, BENCH, out, locks=tmp_path / "locks")
    assert out.is_file() and record.status == "ok" and record.transport == "ssh"
    assert load(BenchRecord, out, "bench record") == record  # what was written is what was returned
    assert record.latency.n >= 20 and record.latency.median_ms > 0
    assert record.runtime.startswith("ai_edge_litert")
    assert record.wall_ms > sum(record.latencies_ms)
    # The model landed on the board under its sha256.
    assert (tmp_path / "board work" / "blobs" / f"{tiny_artifacts['int8'].sha256}.tflite").is_file()


def test_remote_device_defaults_to_python3(ssh_board, tiny_artifacts, tmp_path, monkeypatch):
    entry = ssh_entry(ssh_board, tmp_path / "w")
    del entry["python"]  # no interpreter named
    device = lab_device("board", entry)
    transport = transports()["ssh"](device)
    ran = []
    real_run = transport.run
    monkeypatch.setattr(transport, "run", lambda argv, timeout: ran.append(argv[0]) or real_run(argv, timeout))
    with contextlib.suppress(DeviceError):  # the board's python3 may lack LiteRT; only which Python ran matters
        runners()["python"](device, transport).measure(tiny_artifacts["fp32"], 1,
                                                        bench.measurement_settings(device, BENCH))
    transport.close()
    assert ran == ["python3"]


@pytest.mark.parametrize("workdir", ["slimlab-relative-{token}/lab", None])
def test_a_relative_or_default_workdir_is_resolved_on_the_board(ssh_board, tiny_artifacts, tmp_path, workdir):
    # "x" and the default "~/.cache/slimlab" are in the login's home: commands run there, files are named absolutely.
    requested = workdir.format(token=tmp_path.name) if workdir else None
    entry = ssh_entry(ssh_board, "unused")
    entry.pop("workdir") if requested is None else entry.update(workdir=requested)
    device = lab_device("board", entry)
    transport = transports()["ssh"](device)
    home = transport.run(["sh", "-c", 'printf %s "$HOME"'], timeout=20).stdout
    expected = f"{home}/{requested}" if requested else f"{home}/.cache/slimlab"
    assert str(transport.workdir) == expected
    assert transport.push(tiny_artifacts["int8"].path).startswith(f"{expected}/blobs/")
    transport.close()
    try:
        record = bench.run(device, tiny_artifacts["int8"].sidecar, 1, BENCH, tmp_path / "r.json", locks=tmp_path / "locks")
        assert record.status == "ok" and record.latency.n >= BENCH["runs"]
    finally:
        if requested:
            shutil.rmtree(f"{home}/{requested.split('/')[0]}", ignore_errors=True)
