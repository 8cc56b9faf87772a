"""Issue 15, SSH fidelity: known_hosts markers, Include in ~/.ssh/config (checked against
`ssh -G`), retry decisions by type and errno, and one atomic write."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from ops.errors import UsageError
from ops.hosts import known_hosts as kh
from ops.hosts.known_hosts import HostKeyRevokedError, KnownHosts
from ops.hosts.local_files import write_local_file
from ops.hosts.ssh import SSHHost, _retryable, open_host
from ops.hosts.ssh_config import load_ssh_config, resolve_target

from .sshd_fixture import SshAlias, hanging_up

# -- 1. @cert-authority and @revoked in known_hosts ------------------------------------------


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kh, "_warned", set())


def test_a_cert_authority_line_is_skipped_with_a_warning(
        ssh_alias: SshAlias, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        fresh_warnings: None) -> None:
    ca_key = ssh_alias.sshd.client_key.with_suffix(".pub").read_text().split()[:2]
    plain = ssh_alias.known_hosts.read_text()
    ssh_alias.known_hosts.write_text(f"@cert-authority *.corp.example {' '.join(ca_key)}\n"
                                     "old.example ssh-ed25519 not!base64\n"
                                     f"{plain}")
    with open_host(ssh_alias.name, repo_root=tmp_path, retry_for=0) as host:
        assert host.exec(["echo", "in"]).stdout == "in\n"
    err = capsys.readouterr().err
    assert f"{ssh_alias.known_hosts}:1: @cert-authority line skipped" in err
    assert f"{ssh_alias.known_hosts}:2: unreadable line skipped" in err


def test_a_revoked_key_is_refused_even_when_trusted_and_with_accept_new(
        ssh_alias: SshAlias, tmp_path: Path) -> None:
    key_type, key_b64 = ssh_alias.sshd.host_key.with_suffix(".pub").read_text().split()[:2]
    with ssh_alias.known_hosts.open("a") as fh:
        fh.write(f"@revoked * {key_type} {key_b64}\n")
    for accept_new in (False, True):
        host = open_host(ssh_alias.name, repo_root=tmp_path, accept_new=accept_new, retry_for=0)
        with host, pytest.raises(HostKeyRevokedError, match="REVOKED"):
            host.exec(["true"])
    assert not (tmp_path / ".ops" / "known_hosts").exists()  # never trusted on first use


# -- 2. Include in ~/.ssh/config, compared with OpenSSH's own reading --------------------------

INCLUDE_CASES = {
    "an alias defined in an included glob": (
        "Include {d}/conf.d/*.conf\n",
        {"conf.d/a.conf": "Host work\n  HostName 10.0.0.5\n  User alice\n  Port 2201\n"},
        "work", "conf.d/a.conf:1"),
    "the glob's files in sorted order, the first value wins": (
        "Include {d}/conf.d/*.conf\n",
        {"conf.d/20.conf": "Host dup\n  HostName second.example\n  Port 2222\n",
         "conf.d/10.conf": "Host dup\n  HostName first.example\n"},
        "dup", "conf.d/10.conf:1"),
    "lines after a top-level Include are global again": (
        "Include {d}/inc\nUser carol\n",
        {"inc": "Host a\n  HostName a.example\n"},
        "b", None),
    "an Include inside a Host block, then that block resumes": (
        "Host inner\n  Include {d}/inner.conf\n  Port 2300\nHost other\n  HostName o.example\n",
        {"inner.conf": "User bob\nHost *.lab\n  Port 2400\n"},
        "inner", "config:1"),
    "a nested Include": (
        "Include {d}/one\n",
        {"one": "Include {d}/two\n", "two": "Host deep\n  HostName deep.example\n  Port 2500\n"},
        "deep", "two:1"),
}


def _write_configs(home: Path, main: str, files: dict[str, str]) -> Path:
    ssh_dir = home / ".ssh"
    for name, text in files.items():
        (ssh_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (ssh_dir / name).write_text(text.format(d=ssh_dir))
    config = ssh_dir / "config"
    config.write_text(main.format(d=ssh_dir))
    return config


def _ssh_g(config: Path, alias: str) -> dict[str, str]:
    out = subprocess.run(["ssh", "-G", "-F", str(config), alias], capture_output=True,
                         text=True, check=True, timeout=30).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


@pytest.mark.skipif(shutil.which("ssh") is None, reason="ssh is not installed (CI installs it)")
@pytest.mark.parametrize("case", sorted(INCLUDE_CASES))
def test_include_resolves_as_ssh_G_does(case: str, hermetic_home: Path) -> None:
    main, files, alias, source = INCLUDE_CASES[case]
    config = _write_configs(hermetic_home, main, files)
    target = resolve_target(alias, config=load_ssh_config(config))
    expected = _ssh_g(config, alias)
    assert (target.hostname, str(target.port), target.user) == \
        (expected["hostname"], expected["port"], expected["user"])
    ssh_dir = hermetic_home / ".ssh"
    assert target.source == (f"{ssh_dir / source.split(':')[0]}:{source.split(':')[1]}"
                             if source else None)


def test_a_relative_include_is_relative_to_dot_ssh(hermetic_home: Path) -> None:
    _write_configs(hermetic_home, "Include conf.d/*\n",
                   {"conf.d/pods": "Host pod7\n  HostName 192.0.2.7\n  User ubuntu\n"})
    target = resolve_target("pod7", config=load_ssh_config())
    assert (target.hostname, target.user) == ("192.0.2.7", "ubuntu")
    assert target.source == f"{hermetic_home / '.ssh' / 'conf.d' / 'pods'}:1"


def test_an_include_loop_is_a_clear_error(hermetic_home: Path) -> None:
    config = _write_configs(hermetic_home, "Include {d}/loop\n", {"loop": "Include {d}/loop\n"})
    with pytest.raises(UsageError, match="Include nested deeper than 16 levels"):
        load_ssh_config(config)
    if shutil.which("ssh"):
        assert subprocess.run(["ssh", "-G", "-F", str(config), "x"], capture_output=True,
                              check=False, timeout=30).returncode != 0  # OpenSSH refuses too


# -- 3. retry decisions by exception type and errno --------------------------------------------


def _wrapped(cause: BaseException, message: str) -> paramiko.SSHException:
    """An SSHException raised while handling `cause`, as paramiko's banner check does."""
    try:
        try:
            raise cause
        except BaseException as exc:
            raise paramiko.SSHException(message) from exc
    except paramiko.SSHException as wrapped:
        return wrapped


@pytest.mark.parametrize(("exc", "retry"), [
    (_wrapped(ConnectionResetError(errno.ECONNRESET, "reset"), "key exchange failed"), True),
    (_wrapped(EOFError(), "Error reading SSH protocol banner"), True),
    (_wrapped(PermissionError(errno.EACCES, "denied"), "Error reading SSH protocol banner"),
     False),
    (paramiko.SSHException("Unable to connect to 10.0.0.1: banner"), False),
    (OSError(errno.ECONNREFUSED, "refused"), True),
    (OSError(errno.EACCES, "denied"), False),
    (paramiko.AuthenticationException("no"), False),
])
def test_retry_is_decided_by_type_and_errno_never_by_message(exc: BaseException,
                                                             retry: bool) -> None:
    assert _retryable(exc) is retry


@pytest.fixture
def closing_server() -> Iterator[int]:
    """A TCP port that accepts and hangs up at once, as a booting pod's port forwarder does."""
    with socket.create_server(("127.0.0.1", 0)) as server, hanging_up(server):
        yield server.getsockname()[1]


def test_a_real_hang_up_before_the_banner_is_retried(closing_server: int,
                                                     tmp_path: Path) -> None:
    target = resolve_target(f"nobody@127.0.0.1:{closing_server}")
    host = SSHHost(target, KnownHosts(tmp_path / "kh", user_files=()))
    with pytest.raises(paramiko.SSHException, match="banner") as raised:
        host._connect_once()
    assert _retryable(raised.value)


# -- 4. one atomic write --------------------------------------------------------------------


def test_forget_never_touches_another_writers_temp_file_and_fsyncs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    known = KnownHosts(tmp_path / ".ops" / "known_hosts", user_files=())
    known.project_file.parent.mkdir()
    known.project_file.write_text("gone ssh-ed25519 AAAA\nkept ssh-ed25519 BBBB\n")
    other = known.project_file.with_suffix(".tmp")  # the old fixed temp name
    other.write_text("another ops process, mid-write\n")
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    assert known.forget("gone") == 1
    assert known.project_file.read_text() == "kept ssh-ed25519 BBBB\n"
    assert other.read_text() == "another ops process, mid-write\n"
    assert len(synced) >= 2  # the file and its directory
    assert oct(known.project_file.stat().st_mode & 0o777) == oct(0o600)


def test_local_write_file_is_the_contract_write(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    target = tmp_path / "new" / "bundle"
    write_local_file(str(target), b"data", 0o640)
    assert target.read_bytes() == b"data"
    assert oct(target.stat().st_mode & 0o777) == oct(0o640)
    assert oct(target.parent.stat().st_mode & 0o777) == oct(0o700)
    assert len(synced) >= 2
    assert os.listdir(target.parent) == ["bundle"]
