"""The shared OpenSSH master (ops.hosts.mux) against a real sshd on loopback: reuse across
host objects, a private socket another uid cannot use, host keys exactly as the paramiko path
trusts them, and a killed master or a dropped connection costing nothing but a reconnect."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ops.hosts.base import ConnectionLostError
from ops.hosts.known_hosts import HostKeyChangedError, HostKeyRevokedError, UnknownHostKeyError
from ops.hosts.ssh import SSHHost, open_host

from .sshd_fixture import SshAlias, Sshd, hanging_up, write_alias

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client")


@pytest.fixture
def connect(tmp_path: Path) -> Iterator[Callable[..., SSHHost]]:
    """open_host with the shared master on; every master stopped afterwards."""
    hosts: list[SSHHost] = []

    def make(spec: str, *, accept_new: bool = False) -> SSHHost:
        hosts.append(open_host(spec, repo_root=tmp_path / "repo", accept_new=accept_new,
                               retry_for=2.0))
        return hosts[-1]

    yield make
    for host in hosts:
        if host._mux is not None:
            host._mux.stop()
        host.close()


def logins(sshd: Sshd) -> int:
    return sshd.log().count("Accepted publickey")


def master_pid(host: SSHHost) -> int:
    assert host._mux is not None
    out = subprocess.run(["ssh", "-O", "check", *host._mux._options()], capture_output=True,
                         text=True, check=False)
    match = re.search(r"pid=(\d+)", out.stderr + out.stdout)
    assert match, out.stderr
    return int(match.group(1))


def test_later_hosts_reuse_one_login(ssh_alias: SshAlias, sshd: Sshd,
                                     connect: Callable[..., SSHHost]) -> None:
    before = logins(sshd)
    first = connect(ssh_alias.name)
    assert first.exec(["echo", "one"]).stdout == "one\n"
    second = connect(ssh_alias.name)  # another ops process would build exactly this
    assert second.exec(["cat"], input_text="two").stdout == "two"
    assert second.home() == first.home() == os.path.expanduser("~" + sshd.user)
    assert first._client is None and second._client is None  # paramiko never connected
    assert logins(sshd) - before == 1


def test_stream_through_the_master(ssh_alias: SshAlias, connect: Callable[..., SSHHost]) -> None:
    host = connect(ssh_alias.name)
    with host.stream(["sh", "-c", "cat; head -c 3000000 /dev/zero"],
                     input_bytes=b"[1, 2]") as out:
        data = out.read()
    assert (data[:6], len(data)) == (b"[1, 2]", 3_000_006)
    assert host._mux is not None and host._mux.alive()


def test_socket_is_private_and_refuses_another_uid(ssh_alias: SshAlias,
                                                   connect: Callable[..., SSHHost]) -> None:
    if os.getuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a client as nobody")
    host = connect(ssh_alias.name)
    host.exec(["true"])
    assert host._mux is not None
    sock, directory = host._mux.socket, host._mux.socket.parent
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600 and stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    check = ["ssh", "-F", "/dev/null", "-S", str(sock), "-O", "check", "x"]
    assert subprocess.run(check, capture_output=True, check=False).returncode == 0  # ours: yes
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *check]
    refused = subprocess.run(as_nobody, capture_output=True, text=True, check=False)
    assert refused.returncode != 0
    # even with the directory and the socket opened up, the master refuses another uid
    chain = [p for p in sock.parents if p != Path("/")]
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in [sock, *chain]}
    try:
        for path, mode in modes.items():
            os.chmod(path, 0o777 if path == sock else mode | 0o711)
        refused = subprocess.run(as_nobody, capture_output=True, text=True, check=False)
    finally:
        for path, mode in modes.items():
            os.chmod(path, mode)
    assert refused.returncode != 0
    assert "Master running" not in refused.stderr
    assert "Permission denied" not in refused.stderr, refused.stderr  # the master said no
    assert host.exec(["echo", "still"]).stdout == "still\n"


def test_a_killed_master_falls_back_then_is_replaced(ssh_alias: SshAlias,
                                                     connect: Callable[..., SSHHost]) -> None:
    host = connect(ssh_alias.name)
    host.exec(["true"])
    old = master_pid(host)
    os.kill(old, signal.SIGKILL)
    result = host.exec(["echo", "after"])  # the stale socket: a fresh connection, no error
    assert (result.stdout, result.stderr) == ("after\n", "")
    again = connect(ssh_alias.name)
    assert again.exec(["echo", "next"]).stdout == "next\n"
    assert master_pid(again) != old


def test_a_master_dying_as_a_command_reaches_it_costs_no_noise(
        ssh_alias: SshAlias, connect: Callable[..., SSHHost], tmp_path: Path) -> None:
    """A master killed a moment before a command takes its socket can still accept it and
    then close it unread (the kernel holds the socket until the process is gone: under load,
    milliseconds). ssh then says "master hello exchange failed" and connects on its own; that
    note is ssh's, not the command's, and must not reach the command's stderr. Played here by
    a socket in the master's place that accepts and closes every connection."""
    import socket as socketlib

    host = connect(ssh_alias.name)
    host.exec(["true"])
    assert host._mux is not None
    mux = host._mux
    mux.stop()
    deadline = time.monotonic() + 10
    while mux.alive():
        assert time.monotonic() < deadline, "the master did not stop"
        time.sleep(0.05)
    mux.socket.unlink(missing_ok=True)
    try:
        with socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM) as dying:
            dying.bind(str(mux.socket))
            dying.listen(8)
            with hanging_up(dying):
                done = mux.run(["echo", "after"], None, 30)
    finally:
        mux.socket.unlink(missing_ok=True)
    assert (done.exit_code, done.stdout, done.stderr) == (0, b"after\n", b"")


def test_a_dropped_connection_reconnects(ssh_alias: SshAlias, sshd: Sshd,
                                         connect: Callable[..., SSHHost]) -> None:
    host = connect(ssh_alias.name)
    host.exec(["true"])
    threading.Timer(0.5, sshd.drop_connection).start()
    with pytest.raises(ConnectionLostError):
        host.exec(["sleep", "10"], timeout=8)
    assert host.exec(["echo", "back"]).stdout == "back\n"
    sshd.drop_connection()  # between commands: the next one just connects again
    assert connect(ssh_alias.name).exec(["echo", "fresh"]).stdout == "fresh\n"


def test_an_unknown_key_gets_no_master_until_trusted(sshd: Sshd, hermetic_home: Path,
                                                     connect: Callable[..., SSHHost]) -> None:
    alias = write_alias(sshd, hermetic_home, "untrusted-pod", trust=False)
    with pytest.raises(UnknownHostKeyError):
        connect(alias.name).exec(["true"])
    tofu = connect(alias.name, accept_new=True)
    assert tofu.exec(["echo", "ok"]).stdout == "ok\n"  # paramiko: trust on first use
    assert tofu._client is not None
    later = connect(alias.name)  # the key is on record now: a master may start
    assert later.exec(["echo", "mux"]).stdout == "mux\n"
    assert later._mux is not None and later._mux.alive() and later._client is None


def test_a_revoked_key_is_refused_as_by_paramiko(ssh_alias: SshAlias,
                                                 connect: Callable[..., SSHHost]) -> None:
    key_type, key_b64 = ssh_alias.sshd.known_hosts_line().split()[1:3]
    with ssh_alias.known_hosts.open("a") as fh:
        fh.write(f"@revoked * {key_type} {key_b64}\n")
    host = connect(ssh_alias.name)
    with pytest.raises(HostKeyRevokedError):
        host.exec(["true"])
    assert host._mux is None  # no master was started


def test_a_changed_key_is_refused_even_with_a_master_before(
        sshd_factory: Callable[[], Sshd], hermetic_home: Path,
        connect: Callable[..., SSHHost]) -> None:
    server = sshd_factory()
    alias = write_alias(server, hermetic_home, "rekeyed-pod")
    assert connect(alias.name).exec(["true"]).ok
    server.restart(new_host_key=True)
    with pytest.raises(HostKeyChangedError):
        connect(alias.name).exec(["true"])


def test_a_later_process_needs_neither_paramiko_nor_the_ssh_config(
        ssh_alias: SshAlias, tmp_path: Path, connect: Callable[..., SSHHost]) -> None:
    assert connect(ssh_alias.name).exec(["true"]).ok  # starts the master, notes the spec
    probe = ("import sys\nfrom pathlib import Path\nfrom ops.hosts.ssh import open_host\n"
             f"h = open_host({ssh_alias.name!r}, repo_root=Path({str(tmp_path / 'repo')!r}))\n"
             "print(h.exec(['echo', 'warm']).stdout.strip(), h.expand('~/x'))\n"
             "print(sorted(m for m in sys.modules if m.startswith(('paramiko', 'ops.hosts'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == f"warm {os.path.expanduser('~' + ssh_alias.sshd.user)}/x"
    assert "paramiko" not in out[1] and "ssh_config" not in out[1] and "known_hosts" not in out[1]
    with ssh_alias.config.open("a") as fh:  # an edited ~/.ssh/config: resolved afresh
        fh.write("\n# edited\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert "ssh_config" in out[1]


def test_the_master_carries_none_of_our_environment(
        ssh_alias: SshAlias, connect: Callable[..., SSHHost],
        monkeypatch: pytest.MonkeyPatch) -> None:
    canary = f"canary-{os.getpid()}-mux"
    monkeypatch.setenv("OPS_TEST_TOKEN", canary)
    host = connect(ssh_alias.name)
    assert host.exec(["echo", "$OPS_TEST_TOKEN"]).stdout == "$OPS_TEST_TOKEN\n"  # quoted argv
    environ = Path(f"/proc/{master_pid(host)}/environ").read_bytes()
    assert canary.encode() not in environ and b"OPS_TEST_TOKEN" not in environ
    assert b"HOME=" in environ  # what ssh itself needs is there


def test_the_master_prefers_aes_gcm_among_openssh_defaults(
        ssh_alias: SshAlias, connect: Callable[..., SSHHost]) -> None:
    from ops.hosts.mux import FAST_CIPHERS, aes_in_hardware

    if not aes_in_hardware():
        pytest.skip("no AES in hardware: OpenSSH's own order stays")
    host = connect(ssh_alias.name)
    assert host.exec(["true"]).ok
    argv = Path(f"/proc/{master_pid(host)}/cmdline").read_bytes().split(b"\0")
    assert f"Ciphers={FAST_CIPHERS}".encode() in argv
    defaults = subprocess.run(["ssh", "-F", "/dev/null", "-G", "x"], capture_output=True,
                              text=True, check=True).stdout
    default_set = next(line.split()[1] for line in defaults.splitlines()
                       if line.startswith("ciphers "))
    assert set(FAST_CIPHERS.split(",")) == set(default_set.split(","))  # reordered, not weaker


def test_notes_of_masters_gone_for_a_day_are_pruned(tmp_path: Path) -> None:
    from ops.hosts.mux import STALE_S, prune

    old, fresh, live = tmp_path / "aaa.known_hosts", tmp_path / "bbb.lock", tmp_path / "ccc.home"
    spec = tmp_path / "spec-ddd.json"
    for path in (old, fresh, live, spec, tmp_path / "ccc"):
        path.write_text("x")
    stale = time.time() - STALE_S - 60
    for path in (old, live, spec):
        os.utime(path, (stale, stale))
    prune(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bbb.lock", "ccc", "ccc.home"]


def test_the_socket_dir_is_the_first_private_one_that_fits(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """$XDG_RUNTIME_DIR/ops-mux, else the repository's .ops/mux, else $TMPDIR (or /tmp) as
    tempfile would find it, a relative one taken from the current directory; each only when
    its socket paths fit in a socket address."""
    from ops.hosts.mux import control_dir

    uid = os.getuid()
    base = Path(tempfile.mkdtemp(prefix="m", dir="/tmp"))  # short enough for socket paths
    try:
        short, deep = base / "repo", base / ("d" * 60) / ("e" * 60)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(base / "run"))
        assert control_dir(short) == base / "run" / "ops-mux"
        monkeypatch.delenv("XDG_RUNTIME_DIR")
        assert control_dir(short) == short / ".ops" / "mux"
        (base / "t").mkdir()
        monkeypatch.setenv("TMPDIR", str(base / "t"))
        assert control_dir(deep) == base / "t" / f"ops-mux-{uid}"
        (base / "rel").mkdir()
        monkeypatch.chdir(base)
        monkeypatch.setenv("TMPDIR", "rel")
        assert control_dir(deep) == base / "rel" / f"ops-mux-{uid}"
        assert stat.S_IMODE((base / "rel" / f"ops-mux-{uid}").stat().st_mode) == 0o700
    finally:
        shutil.rmtree(base)
