"""Issue 9 on real OpenSSH boards: known_hosts, key passphrases, deadlines, work folders.

Every test says which behaviour of the old code (commit 82ee2fe) it catches.
"""

import base64
import contextlib
import json
import logging
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from slimlab.lab.transport import DeviceOffline, DeviceToolError
from slimlab.registry import transports
from tests.lab.entries import ssh_device, ssh_entry
from tests.support import REPO, UNSAFE_WORKDIRS, unsafe_workdir

pytestmark = [pytest.mark.lab, pytest.mark.timeout(60)]


def host_key(board) -> tuple[str, str]:
    """The board's host key as (type, base64)."""
    return tuple(board.known_hosts.read_text().split()[1:3])


def host_key_line(board) -> str:
    """The line an OpenSSH client writes for the board: a port-22 host by its bare address."""
    name = board.address if board.port == 22 else f"[{board.address}]:{board.port}"
    return f"{name} {' '.join(host_key(board))}"


def other_key() -> str:
    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def security_key() -> str:
    """A FIDO key (``sk-ssh-ed25519@openssh.com``): valid OpenSSH, a type paramiko cannot read."""
    def string(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    blob = string(b"sk-ssh-ed25519@openssh.com") + string(os.urandom(32)) + string(b"ssh:")
    return f"sk-ssh-ed25519@openssh.com {base64.b64encode(blob).decode()}"


# A user's known_hosts as OpenSSH leaves it: comments, a `host,ip` entry, a key type paramiko does not know,
# and no newline at the end.
USERS_FILE = (f"# work machines: keep this comment\ngit.example.org,192.0.2.5 {other_key()}\n"
              f"yubi.example.org {security_key()}")


def test_first_use_appends_one_line_and_keeps_the_rest(ssh_board, tmp_path):
    # Old: trust_on_first_use called paramiko's save_host_keys on every connect, rewriting the user's file:
    # the comment and the sk-ssh-ed25519 line were gone afterwards.
    known = tmp_path / "known_hosts"
    known.write_text(USERS_FILE)
    for _ in range(2):  # the second connect finds the key and writes nothing
        transport = transports()["ssh"](ssh_device(ssh_board, tmp_path / "w", known_hosts=str(known),
                                                   trust_on_first_use=True))
        assert transport.run(["true"], timeout=10).returncode == 0
        transport.close()
        assert known.read_text() == f"{USERS_FILE}\n{host_key_line(ssh_board)}\n"


# Connects to every board given, each in a thread, when told "go" on stdin.
CONNECT_ALL = """
import json, sys
from concurrent.futures import ThreadPoolExecutor
from slimlab.registry import transports
from tests.lab.entries import lab_device
made = [transports()["ssh"](lab_device(f"board{i}", entry)) for i, entry in enumerate(json.loads(sys.argv[1]))]
print("ready", flush=True)
sys.stdin.readline()
with ThreadPoolExecutor(len(made)) as pool:
    print(list(pool.map(lambda transport: transport.run(["true"], timeout=20).returncode, made)))
"""


def test_parallel_first_connects_append_each_key_once(ssh_boards, tmp_path):
    # Old: every job loaded known_hosts, connected, then rewrote the file with what it had loaded plus its own
    # key: the comment and the sk key were dropped and `host,ip` split in two (seen on 82ee2fe), and when two
    # jobs loaded the file before either wrote it, the last writer dropped the other board's key.
    known = tmp_path / "known_hosts"
    known.write_text(USERS_FILE + "\n")
    entries = [ssh_entry(board, tmp_path / board.name, known_hosts=str(known), trust_on_first_use=True)
               for board in ssh_boards]
    # Two processes, each connecting to both boards from two threads at the same moment.
    jobs = [subprocess.Popen([sys.executable, "-c", CONNECT_ALL, json.dumps(entries)], cwd=REPO, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)]
    for job in jobs:
        assert job.stdout.readline() == "ready\n", job.communicate()[1]
    for job in jobs:
        job.stdin.write("go\n")
        job.stdin.flush()
    for job in jobs:
        out, err = job.communicate(timeout=40)
        assert job.returncode == 0 and out == "[0, 0]\n", err
    lines = known.read_text().splitlines()
    assert lines[:3] == USERS_FILE.splitlines()
    assert sorted(lines[3:]) == sorted(host_key_line(board) for board in ssh_boards)


def test_cert_authority_and_damaged_lines_are_skipped_with_a_warning(ssh_board, tmp_path, caplog):
    # Old: paramiko's load_host_keys raised InvalidHostKey on the @cert-authority line, outside any `try`:
    # every SSH job died with a traceback. A line cut off inside its key still raised after the first fix.
    known = tmp_path / "known_hosts"
    text = (f"@cert-authority *.example.org {other_key()}\n"
            "cut.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG\n" + ssh_board.known_hosts.read_text())
    known.write_text(text)
    transport = transports()["ssh"](ssh_device(ssh_board, tmp_path / "w", known_hosts=str(known)))
    with caplog.at_level(logging.WARNING, logger="slimlab.lab.known_hosts"):
        assert transport.run(["true"], timeout=10).returncode == 0
    transport.close()
    assert f"{known} line 1: @cert-authority entries are not supported" in caplog.text
    assert f"{known} line 2: not a valid host key line; skipped" in caplog.text
    assert known.read_text() == text


@pytest.mark.parametrize("trust_on_first_use", [False, True])
def test_a_revoked_host_key_is_refused(ssh_board, tmp_path, trust_on_first_use):
    # Old: the @revoked line made load_host_keys raise (a traceback, no failure note). With trust_on_first_use
    # and only the revocation listed, the first fix still appended the revoked key to the file before refusing.
    known = tmp_path / "known_hosts"
    listed = "" if trust_on_first_use else ssh_board.known_hosts.read_text()
    text = listed + "@revoked * {} {}\n".format(*host_key(ssh_board))
    known.write_text(text)
    transport = transports()["ssh"](ssh_device(ssh_board, tmp_path / "w", known_hosts=str(known),
                                               trust_on_first_use=trust_on_first_use))
    with pytest.raises(DeviceToolError, match=rf"^device 'board': the host key of .* is marked @revoked in {known}; "
                                              "refusing to connect$"):
        transport.run(["touch", str(tmp_path / "PWNED")], timeout=10)
    assert not (tmp_path / "PWNED").exists()
    assert known.read_text() == text


def client_key(board, folder: Path, passphrase: bytes | None) -> Path:
    """The board's client key, stored encrypted with ``passphrase`` (or in the clear)."""
    key = serialization.load_ssh_private_key(board.client_key.read_bytes(), None)
    encryption = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    path = folder / "id_ed25519"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption))
    path.chmod(0o600)
    return path


def with_passphrase(monkeypatch, passphrase: str | None) -> dict:
    """The ssh block's keys that hand the transport ``passphrase`` through an environment variable."""
    if passphrase is None:
        return {}
    monkeypatch.setenv("SLIMLAB_TEST_KEY_PASS", passphrase)
    return {"key_passphrase_env": "SLIMLAB_TEST_KEY_PASS"}


@pytest.mark.parametrize("encrypted, passphrase, refusal", [
    (True, "wrong", r"cannot read key {key} \(wrong passphrase, or not a private key\)"),
    (True, None, r"key {key} is encrypted; set ssh.key_passphrase_env$"),
    (False, "right", r"key {key} is not encrypted; drop ssh.key_passphrase_env$"),
], ids=["wrong passphrase", "no passphrase", "a passphrase for a plain key"])
def test_a_key_that_cannot_be_unlocked_is_a_tool_error_and_never_retried(ssh_board, tmp_path, monkeypatch,
                                                                          encrypted, passphrase, refusal):
    # Old: paramiko reported a wrong passphrase as an SSHException, tagged `offline`, and the connect was tried
    # `attempts` (3) times with backoff. The first fix read the key with a str passphrase, which paramiko 5
    # refuses with a TypeError: each of these three ended in a traceback.
    key = client_key(ssh_board, tmp_path, b"right" if encrypted else None)
    connects = []
    real_connect = paramiko.SSHClient.connect
    monkeypatch.setattr(paramiko.SSHClient, "connect",
                        lambda client, *args, **kwargs: connects.append(1) or real_connect(client, *args, **kwargs))
    transport = transports()["ssh"](ssh_device(ssh_board, tmp_path / "w", key_file=str(key), attempts=3,
                                               **with_passphrase(monkeypatch, passphrase)))
    with pytest.raises(DeviceToolError, match="^device 'board': " + refusal.format(key=key)):
        transport.run(["true"], timeout=10)
    assert connects == []  # the key is read before connecting: nothing was tried, nothing is retried


def test_an_encrypted_key_logs_in_with_its_passphrase(ssh_board, tmp_path, monkeypatch):
    # Old: worked. The first fix broke it (a str passphrase: TypeError); this keeps it working.
    key = client_key(ssh_board, tmp_path, b"right")
    transport = transports()["ssh"](ssh_device(ssh_board, tmp_path / "w", key_file=str(key),
                                               **with_passphrase(monkeypatch, "right")))
    assert transport.run(["true"], timeout=10).returncode == 0
    transport.close()


def silent_after_next_channel(board, monkeypatch) -> None:
    """The board stops answering right after the next SSH channel opens: a session or SFTP waits for replies."""
    real_open_session = paramiko.Transport.open_session

    def open_then_cut(transport, *args, **kwargs):
        channel = real_open_session(transport, *args, **kwargs)
        monkeypatch.setattr(paramiko.Transport, "open_session", real_open_session)
        board.cut()
        return channel

    monkeypatch.setattr(paramiko.Transport, "open_session", open_then_cut)


@pytest.mark.parametrize("call", ["exec_command", "open_sftp"])
def test_a_board_that_stops_answering_is_offline_within_the_connect_timeout(ssh_board, tmp_path, monkeypatch, call):
    # Old: exec_command and open_sftp waited for the board's reply with no deadline: with the board gone silent
    # (netns mode: packets dropped) the job hung until TCP gave up, many minutes later.
    connect_timeout = 2
    transport = transports()["ssh"](ssh_device(ssh_board, tmp_path / "w", connect_timeout_s=connect_timeout))
    assert transport.run(["true"], timeout=10).returncode == 0  # connected, workdir checked
    local = tmp_path / "blob.bin"
    local.write_bytes(os.urandom(1000))
    silent_after_next_channel(ssh_board, monkeypatch)
    started = time.monotonic()
    with pytest.raises(DeviceOffline, match=r"^device 'board': "):
        if call == "exec_command":
            transport.run(["true"], timeout=60)
        else:
            transport.copy_to(local, str(tmp_path / "w" / "blob.bin"))
    assert time.monotonic() - started < connect_timeout + 3  # closing a dead link takes a moment; old: >20 s
    transport.close()


@pytest.mark.parametrize("workdir", ["~", "~/.cache/slimlab-test-{}"])
def test_a_home_relative_workdir_is_in_the_logins_home(ssh_board, tmp_path, workdir):
    # Old: the workdir was quoted as it was, so `~/x` made a folder named `~` in the login's home and worked in
    # `~/~/x`. The first fix took `~/x`, but a workdir of just `~` still made and used a folder `~`.
    home = Path(pwd.getpwnam(ssh_board.user).pw_dir)
    workdir = workdir.format(secrets.token_hex(4))
    expected = home / workdir[2:]
    transport = transports()["ssh"](ssh_device(ssh_board, workdir))
    try:
        assert transport.run(["pwd"], timeout=10).stdout == f"{expected}\n"
        if workdir != "~":  # uploads (SFTP) land there too; not tried in the home folder itself, the login's own
            local = tmp_path / "model.tflite"
            local.write_bytes(os.urandom(1000))
            assert (home / transport.push(local)).read_bytes() == local.read_bytes()
    finally:
        transport.close()
        if workdir != "~":
            shutil.rmtree(expected, ignore_errors=True)
            shutil.rmtree(home / "~" / workdir[2:], ignore_errors=True)  # what the old code made
        with contextlib.suppress(OSError):
            (home / "~").rmdir()  # only if empty: what the old code made for `~`


@pytest.mark.parametrize("unsafe", UNSAFE_WORKDIRS)
def test_an_unsafe_workdir_on_a_board_is_refused(ssh_board, tmp_path, unsafe):
    # Old: any workdir was used as it was: others could swap the payload that the board then runs.
    workdir = unsafe_workdir(tmp_path / "shared", unsafe)
    transport = transports()["ssh"](ssh_device(ssh_board, workdir))
    with pytest.raises(DeviceToolError, match=rf"^device 'board': workdir {workdir} is not owned by the login user, "
                                              "or others may write to it; set `workdir` to a folder of your own$"):
        transport.run(["touch", "PWNED"], timeout=10)
    transport.close()
    assert not (workdir / "PWNED").exists()
