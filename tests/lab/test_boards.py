"""The SSH test boards are real: key auth, host-key checking, SFTP, cut-off."""

import errno
import hashlib
import os
import subprocess
import sys
import time

import paramiko
import pytest

from tests.support import lab_unavailable

pytestmark = [pytest.mark.lab, pytest.mark.timeout(30)]


def test_two_boards_answer_on_their_own_addresses(ssh_boards):
    a, b = ssh_boards
    assert (a.address, a.port) != (b.address, b.port)
    for board in ssh_boards:
        uname = board.run("uname -a")
        assert uname.returncode == 0 and uname.stdout.startswith("Linux"), uname
        client_ip, _, server_ip, server_port = board.run("echo $SSH_CONNECTION").stdout.split()
        assert (server_ip, int(server_port)) == (board.address, board.port)
        assert client_ip == board.client_address


def test_sftp_round_trips_1mb(ssh_board, tmp_path):
    payload = os.urandom(1 << 20)
    digest = hashlib.sha256(payload).hexdigest()
    local, back = tmp_path / "payload.bin", tmp_path / "back.bin"
    remote = str(ssh_board.workdir / "remote.bin")
    local.write_bytes(payload)
    with ssh_board.connect() as client, client.open_sftp() as sftp:
        sftp.get_channel().settimeout(10)
        sftp.put(str(local), remote)
        sftp.get(remote, str(back))
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
    assert ssh_board.run(f"sha256sum {remote}").stdout.split()[0] == digest


def test_unknown_host_key_is_refused(ssh_board, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        ssh_board.connect(known_hosts=empty)


def test_cut_board_drops_off_while_the_other_works(ssh_boards):
    a, b = ssh_boards
    in_flight = a.connect()
    a.cut()
    started = time.monotonic()
    with pytest.raises(OSError):  # timeout when packets vanish, refused when sshd is dead
        a.connect(timeout=3).close()
    assert time.monotonic() - started < 5
    if a.netns:
        # Like a board gone off WiFi: the open connection hangs instead of being reset.
        with pytest.raises(paramiko.SSHException, match="Timeout"):
            in_flight.get_transport().open_session(timeout=2)
        assert in_flight.get_transport().is_active()
    in_flight.close()
    assert b.run("echo alive").stdout == "alive\n"
    a.restore()
    assert a.run("echo back").stdout == "back\n"


def test_board_is_only_reachable_at_its_own_address(ssh_boards, tmp_path):
    a, b = ssh_boards
    if not a.netns:
        lab_unavailable(f"needs network namespaces: {a.mode.reason}")
    # b's address leads to b's sshd, never to a's: a's host key is rejected there.
    a_key_at_b = tmp_path / "a_key_at_b"
    a_key_at_b.write_text(a.known_hosts.read_text().replace(a.address, b.address))
    with pytest.raises(paramiko.BadHostKeyException):
        b.connect(known_hosts=a_key_at_b)
    # From inside a's namespace, b does not exist: no route to it at all.
    probe = (
        "import socket, sys\n"
        "try:\n"
        "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)\n"
        "except OSError as e:\n"
        "    print(type(e).__name__, e.errno)\n"
    )
    inside = subprocess.run(
        ["ip", "netns", "exec", a.netns, sys.executable, "-c", probe, b.address, str(b.port)],
        capture_output=True, text=True, timeout=10, check=True,
    )
    assert inside.stdout.split() == ["OSError", str(errno.ENETUNREACH)], inside
