"""A dropped SSH connection: the next command connects afresh, and every error has a reason.

paramiko's transport may still call itself active for a moment after the server side of the
connection died (its reader thread has not seen the EOF yet); the next command must not fail
on that stale connection, and a failure must never print an empty reason (`str(EOFError())`).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ops.hosts.base import ConnectionLostError, error_reason
from ops.hosts.ssh import SSHHost, open_host

from .sshd_fixture import Sshd


@pytest.mark.parametrize(("exc", "expected"), [
    (EOFError(), "EOFError"),
    (OSError(), "OSError"),
    (ConnectionResetError(104, "Connection reset by peer"), "[Errno 104] Connection reset by peer"),
    (EOFError("  "), "EOFError"),
], ids=["eof", "bare-oserror", "reset", "blank"])
def test_error_reason_is_never_empty(exc: BaseException, expected: str) -> None:
    assert error_reason(exc) == expected


def test_a_lost_connection_names_the_reason_even_for_a_bare_eof(tmp_path: Path) -> None:
    host = open_host("nobody@127.0.0.1:1", repo_root=tmp_path, retry_for=0)
    error = host._lost(EOFError())
    assert isinstance(error, ConnectionLostError)
    assert error.message.endswith("failed during a command: EOFError")
    assert not error.message.rstrip().endswith(":")


def _wait_until_dead(transport: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while getattr(transport, "active", False) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not getattr(transport, "active", False), "paramiko never saw the drop"


@pytest.mark.ssh
def test_next_command_reconnects_when_paramiko_still_calls_a_dead_link_active(
        ssh_host: SSHHost, sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> None:
    ssh_host.exec(["true"])
    stale = ssh_host.transport
    assert sshd.drop(ssh_host) >= 1  # kill the sshd child serving this connection
    _wait_until_dead(stale)
    # the race a real drop produces now and then: is_active() still true for the dead link
    # (a mock only for timing no real server can produce on demand)
    monkeypatch.setattr(stale, "is_active", lambda: True)
    assert ssh_host.exec(["echo", "back"]).stdout == "back\n"
    assert ssh_host.transport is not stale


@pytest.mark.ssh
def test_a_command_right_after_a_drop_reconnects(ssh_host: SSHHost, sshd: Sshd) -> None:
    for _ in range(5):  # no wait between the drop and the command: the natural race
        ssh_host.exec(["true"])
        assert sshd.drop(ssh_host) >= 1
        assert ssh_host.exec(["echo", "again"]).stdout == "again\n"


@pytest.mark.ssh
def test_a_drop_during_a_command_is_reported_with_a_reason_and_never_rerun(
        ssh_host: SSHHost, sshd: Sshd, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    ssh_host.exec(["true"])

    def drop_once_started() -> None:  # the command has run its first line: drop it now
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        sshd.drop(ssh_host)

    threading.Thread(target=drop_once_started, daemon=True).start()
    with pytest.raises(ConnectionLostError) as caught:
        ssh_host.exec(["sh", "-c", f"echo x >> {marker}; sleep 10"], timeout=8)
    assert not caught.value.message.rstrip().endswith(":")
    assert marker.read_text() == "x\n"  # started once, and not started again
    assert ssh_host.exec(["echo", "back"]).stdout == "back\n"


@pytest.mark.ssh
def test_sftp_after_a_drop_reconnects(ssh_host: SSHHost, sshd: Sshd, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    first = tmp_path / "first.txt"
    ssh_host.write_file(str(first), b"one\n")
    stale = ssh_host.transport
    assert sshd.drop(ssh_host) >= 1
    _wait_until_dead(stale)
    monkeypatch.setattr(stale, "is_active", lambda: True)  # the stale view, as above
    second = tmp_path / "second.txt"
    ssh_host.write_file(str(second), b"two\n")
    assert second.read_bytes() == b"two\n"
    assert ssh_host.read_file(str(first)) == b"one\n"
