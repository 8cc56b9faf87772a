"""The SSH transport against a real OpenSSH sshd on loopback: exec, files, host keys, aliases,
jump hosts, retries, dropped connections, runner bootstrap and the no-secrets rule."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import stat
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest

from ops.errors import ExitCode, HostError, NotFoundError, UsageError
from ops.hosts.base import HostCommandError, call_runner
from ops.hosts.known_hosts import (
    HostKeyChangedError,
    KnownHosts,
    UnknownHostKeyError,
    fingerprint,
)
from ops.hosts.ssh import (
    ConnectionLostError,
    HostAuthError,
    HostUnreachableError,
    SSHHost,
    open_host,
)
from ops.hosts.ssh_config import load_ssh_config, parse_spec, resolve_target
from ops.services.bootstrap import RunnerBuild, ensure_runner, local_build

from .sshd_fixture import SshAlias, Sshd, free_port, keygen, require_sshd, write_alias

Factory = Callable[[], Sshd]


@pytest.fixture
def connect(tmp_path: Path) -> Iterator[Callable[..., SSHHost]]:
    """open_host with the project's .ops/ under tmp_path; every host closed afterwards."""
    hosts: list[SSHHost] = []

    def make(spec: str, *, accept_new: bool = False, retry_for: float = 2.0) -> SSHHost:
        hosts.append(open_host(spec, repo_root=tmp_path, accept_new=accept_new,
                               retry_for=retry_for))
        return hosts[-1]

    yield make
    for host in hosts:
        host.close()


# -- exec ---------------------------------------------------------------------------------------

def test_exec_returns_exit_code_stdout_stderr_and_keeps_argv_intact(ssh_host: SSHHost) -> None:
    argv = ["sh", "-c", 'printf "%s|" "$@"; echo oops >&2; exit 3', "x", "a b", "$HOME", "it's"]
    result = ssh_host.exec(argv, check=False)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "a b|$HOME|it's|", "oops\n")
    assert result.argv == tuple(argv)
    assert result.host == ssh_host.name


def test_nonzero_exit_raises_host_command_error_holding_the_result(ssh_host: SSHHost) -> None:
    with pytest.raises(HostCommandError) as caught:
        ssh_host.exec(["sh", "-c", "echo bad news >&2; exit 7"])
    assert caught.value.result.exit_code == 7
    assert caught.value.exit_code == ExitCode.HOST
    assert "bad news" in caught.value.render()


def test_stdin_and_large_output_on_both_streams(ssh_host: SSHHost) -> None:
    assert ssh_host.exec(["cat"], input_text="héllo\n").stdout == "héllo\n"
    big = "head -c 3000000 /dev/zero | tr '\\0' e >&2; head -c 3000000 /dev/zero | tr '\\0' o"
    result = ssh_host.exec(["sh", "-c", big], timeout=30)
    assert (len(result.stdout), len(result.stderr)) == (3_000_000, 3_000_000)


def test_exec_timeout_is_a_host_error(ssh_host: SSHHost) -> None:
    started = time.monotonic()
    with pytest.raises(HostError, match="longer than"):
        ssh_host.exec(["sleep", "10"], timeout=0.5)
    assert time.monotonic() - started < 3


def test_one_connection_serves_many_commands(ssh_host: SSHHost) -> None:
    ssh_host.exec(["true"])
    transport = ssh_host.transport
    for _ in range(3):
        ssh_host.exec(["true"])
    assert ssh_host.transport is transport


def test_dropped_connection_raises_then_reconnects(ssh_host: SSHHost, sshd: Sshd,
                                                   tmp_path: Path) -> None:
    started = tmp_path / "started"
    ssh_host.exec(["true"])

    def drop_once_started() -> None:  # the command runs on the host (an event, not a delay)
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        sshd.drop(ssh_host)

    threading.Thread(target=drop_once_started, daemon=True).start()
    with pytest.raises(ConnectionLostError):
        ssh_host.exec(["sh", "-c", f"touch {started}; sleep 10"], timeout=8)
    assert ssh_host.exec(["echo", "back"]).stdout == "back\n"


def test_stream_reads_stdout_and_checks_the_exit(ssh_host: SSHHost) -> None:
    with ssh_host.stream(["sh", "-c", "cat; head -c 1000000 /dev/zero"],
                         input_bytes=b"[1, 2]") as out:
        data = out.read()
    assert (data[:6], len(data)) == (b"[1, 2]", 1_000_006)
    failing = ssh_host.stream(["sh", "-c", "echo partial; exit 4"])
    with pytest.raises(HostCommandError, match="exited with 4"), failing as out:
        assert out.read() == b"partial\n"


def test_a_drop_during_a_stream_is_a_lost_connection(ssh_host: SSHHost, sshd: Sshd) -> None:
    ssh_host.exec(["true"])
    streaming = ssh_host.stream(["sh", "-c", "head -c 100000 /dev/zero; sleep 10"])
    with pytest.raises(ConnectionLostError), streaming as out:
        assert len(out.read(100_000)) == 100_000
        assert sshd.drop(ssh_host) >= 1
        assert out.read() == b""  # the stream ends early; leaving the block says why
    assert ssh_host.exec(["echo", "again"]).stdout == "again\n"


def test_files_over_sftp(ssh_host: SSHHost, tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "secret.txt"
    ssh_host.write_file(str(target), b"token=abc\n", 0o600)
    assert target.read_bytes() == b"token=abc\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["secret.txt"]  # no temp file left
    assert ssh_host.read_file(str(target)) == b"token=abc\n"
    with pytest.raises(NotFoundError):
        ssh_host.read_file(str(tmp_path / "missing"))
    assert ssh_host.expand("~/x") == ssh_host.home() + "/x"
    assert ssh_host.expand("/abs/~") == "/abs/~"


# -- host keys ----------------------------------------------------------------------------------

def test_unknown_host_key_is_refused_without_accept_new(
        sshd: Sshd, hermetic_home: Path, tmp_path: Path,
        connect: Callable[..., SSHHost]) -> None:
    alias = write_alias(sshd, hermetic_home, trust=False)
    with pytest.raises(UnknownHostKeyError) as caught:
        connect(alias.name).exec(["true"])
    assert "--accept-new" in caught.value.render()
    assert "SHA256:" in caught.value.render()
    assert not (tmp_path / ".ops" / "known_hosts").exists()


def test_accept_new_stores_the_key_in_the_project_file_only(
        sshd: Sshd, hermetic_home: Path, tmp_path: Path,
        connect: Callable[..., SSHHost]) -> None:
    alias = write_alias(sshd, hermetic_home, trust=False)
    connect(alias.name, accept_new=True).exec(["true"])
    project_file = tmp_path / ".ops" / "known_hosts"
    assert project_file.read_text() == sshd.known_hosts_line()
    assert stat.S_IMODE(project_file.stat().st_mode) == 0o600
    assert not alias.known_hosts.exists()  # the user's file is never written
    connect(alias.name).exec(["true"])  # now known, no --accept-new needed
    assert project_file.read_text() == sshd.known_hosts_line()
    known = KnownHosts.for_repo(tmp_path)
    assert (known.forget(f"[127.0.0.1]:{sshd.port}"), known.forget("other")) == (1, 0)
    assert project_file.read_text() == ""


def test_changed_host_key_is_refused_naming_the_file(
        sshd_factory: Factory, hermetic_home: Path, tmp_path: Path,
        connect: Callable[..., SSHHost]) -> None:
    server = sshd_factory()
    alias = write_alias(server, hermetic_home, trust=False)
    connect(alias.name, accept_new=True).exec(["true"])
    server.restart(new_host_key=True)
    with pytest.raises(HostKeyChangedError) as caught:
        connect(alias.name, accept_new=True).exec(["true"])  # accept-new never overrides
    text = caught.value.render()
    project_file = tmp_path / ".ops" / "known_hosts"
    assert str(project_file) in text
    assert f"ssh-keygen -R '[127.0.0.1]:{server.port}' -f {project_file}" in text
    assert caught.value.exit_code == ExitCode.HOST


def test_changed_key_in_the_users_known_hosts_names_that_file(
        sshd_factory: Factory, hermetic_home: Path,
        connect: Callable[..., SSHHost]) -> None:
    server = sshd_factory()
    alias = write_alias(server, hermetic_home)
    subprocess.run(["ssh-keygen", "-H", "-f", str(alias.known_hosts)], capture_output=True,
                   check=True)  # hashed names, as Debian and Ubuntu write them
    connect(alias.name).exec(["true"])  # trusted from ~/.ssh/known_hosts
    before = alias.known_hosts.read_text()
    server.restart(new_host_key=True)
    with pytest.raises(HostKeyChangedError, match="CHANGED") as caught:
        connect(alias.name).exec(["true"])
    assert str(alias.known_hosts) in caught.value.render()
    assert alias.known_hosts.read_text() == before


# -- resolving a host spec ----------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "user", "host", "port"), [
    ("pod", None, "pod", None),
    ("alice@10.0.0.5", "alice", "10.0.0.5", None),
    ("alice@10.0.0.5:2222", "alice", "10.0.0.5", 2222),
    ("ssh://bob@gpu.example.org:22022", "bob", "gpu.example.org", 22022),
    ("root@[::1]:2200", "root", "::1", 2200),
], ids=["alias", "user-host", "user-host-port", "ssh-url", "ipv6"])
def test_parse_spec(spec: str, user: str | None, host: str, port: int | None) -> None:
    parsed = parse_spec(spec)
    assert (parsed.user, parsed.host, parsed.port) == (user, host, port)


@pytest.mark.parametrize("spec", ["", "a b", "user@", "host:99999", "/path"])
def test_bad_spec_is_a_usage_error(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_spec(spec)


def test_alias_and_project_host_resolve_from_ssh_config(ssh_alias: SshAlias) -> None:
    server = ssh_alias.sshd
    target = resolve_target(ssh_alias.name)
    assert (target.hostname, target.port, target.user) == ("127.0.0.1", server.port, server.user)
    assert target.identity_files == (str(server.client_key),)
    assert target.identities_only
    named = resolve_target("gpu1", hosts={"gpu1": _Address(f"someone@{ssh_alias.name}:2")})
    assert (named.name, named.hostname, named.user, named.port) == ("gpu1", "127.0.0.1",
                                                                    "someone", 2)


def test_proxy_jump_chain_and_proxy_command_resolve(hermetic_home: Path) -> None:
    (hermetic_home / ".ssh").mkdir()
    (hermetic_home / ".ssh" / "config").write_text(
        "Host inner\n  ProxyJump a,b@bastion:2200\n"
        "Host viacmd\n  ProxyCommand nc %h %p\n  Port 2022\n")
    target = resolve_target("inner")
    assert target.jump is not None and target.jump.jump is not None
    assert (target.jump.user, target.jump.hostname, target.jump.port) == ("b", "bastion", 2200)
    assert target.jump.jump.hostname == "a"
    assert resolve_target("viacmd").proxy_command == "nc viacmd 2022"
    assert load_ssh_config(hermetic_home / "absent").lookup("x")["hostname"] == "x"


def test_proxy_jump_through_the_sshd_reaches_the_host(
        ssh_alias: SshAlias, connect: Callable[..., SSHHost]) -> None:
    server = ssh_alias.sshd
    with ssh_alias.config.open("a") as fh:
        fh.write(f"Host behind\n  HostName 127.0.0.1\n  Port {server.port}\n"
                 f"  IdentityFile {server.client_key}\n  ProxyJump {ssh_alias.name}\n")
    host = connect("behind")
    assert host.exec(["echo", "through"]).stdout == "through\n"
    assert isinstance(host.transport.sock, paramiko.Channel)  # direct-tcpip via the jump


def test_proxy_command_reaches_the_host(ssh_alias: SshAlias,
                                        connect: Callable[..., SSHHost]) -> None:
    server = ssh_alias.sshd
    inner_ssh = " ".join([*ssh_alias.ssh_argv()[:-1], "-W", "%h:%p"])
    with ssh_alias.config.open("a") as fh:
        fh.write(f"Host viacmd\n  HostName 127.0.0.1\n  Port {server.port}\n"
                 f"  IdentityFile {server.client_key}\n"
                 f"  ProxyCommand {inner_ssh} {ssh_alias.name}\n")
    assert connect("viacmd").exec(["echo", "proxied"]).stdout == "proxied\n"


# -- connecting ---------------------------------------------------------------------------------

def test_connect_retry_gives_up_on_a_closed_port_quickly(
        connect: Callable[..., SSHHost]) -> None:
    started = time.monotonic()
    with pytest.raises(HostUnreachableError, match="attempts") as caught:
        connect(f"root@127.0.0.1:{free_port()}", retry_for=1.0).exec(["true"])
    assert time.monotonic() - started < 3
    assert "ConnectionRefused" in caught.value.message or "refused" in caught.value.message


@pytest.mark.ssh
def test_connect_retries_until_a_booting_host_listens(
        tmp_path: Path, hermetic_home: Path, connect: Callable[..., SSHHost]) -> None:
    require_sshd()
    server = Sshd(tmp_path / "late", port=free_port())
    server.setup_keys()
    alias = write_alias(server, hermetic_home)
    starter = threading.Timer(1.0, server.start)
    starter.start()
    try:
        assert connect(alias.name, retry_for=15).exec(["echo", "up"]).stdout == "up\n"
    finally:
        starter.join()
        server.stop()


def test_authentication_failure_is_final(
        sshd: Sshd, hermetic_home: Path, tmp_path: Path,
        connect: Callable[..., SSHHost]) -> None:
    stranger = tmp_path / "id_stranger"
    keygen(stranger, "not-authorized")
    alias = write_alias(sshd, hermetic_home)
    with alias.config.open("a") as fh:
        fh.write(f"Host stranger\n  HostName 127.0.0.1\n  Port {sshd.port}\n"
                 f"  IdentityFile {stranger}\n  IdentitiesOnly yes\n")
    started = time.monotonic()
    with pytest.raises(HostAuthError, match="authentication") as caught:
        connect("stranger", retry_for=30).exec(["true"])
    assert time.monotonic() - started < 5
    assert str(stranger) in caught.value.render()


# -- the runner on the host ---------------------------------------------------------------------

def test_bootstrap_uploads_the_runner_once_then_only_shakes_hands(
        ssh_host: SSHHost, tmp_path: Path) -> None:
    ops_home = str(tmp_path / "ops-home")
    first = ensure_runner(ssh_host, ops_home, python=sys.executable)
    build = local_build()
    assert first.actions == (f"uploaded runner {build.build_id}",)
    assert first.runner_dir == f"{ops_home}/runner/{build.build_id}"
    assert (Path(first.runner_dir) / "runner" / "schemas" / "summary.schema.json").is_file()
    second = ensure_runner(ssh_host, ops_home, python=sys.executable)
    assert second.actions == ()
    assert ssh_host.runner_argv() == ["env", f"PYTHONPATH={first.runner_dir}",
                                      f"OPS_RUNNER_DIR={first.runner_dir}", sys.executable,
                                      "-m", "runner"]
    where = ssh_host.exec([*ssh_host.runner_argv()[:-2], "-c",
                           "import runner; print(runner.__file__)"]).stdout
    assert where.startswith(first.runner_dir)  # the uploaded build, not the checkout


def test_an_edited_runner_is_a_new_build(ssh_host: SSHHost, tmp_path: Path) -> None:
    build = local_build()
    files = (*build.files, ("runner/_edited.py", b"# edited\n"))
    edited = RunnerBuild(build.version, hashlib.sha256(repr(files).encode()).hexdigest(), files)
    ops_home = str(tmp_path / "ops-home")
    ensure_runner(ssh_host, ops_home, python=sys.executable)
    info = ensure_runner(ssh_host, ops_home, python=sys.executable, build=edited)
    assert info.actions == (f"uploaded runner {edited.build_id}",)
    assert (Path(info.runner_dir) / "runner" / "_edited.py").is_file()


def test_call_runner_answers_json_over_ssh(ssh_host: SSHHost, tmp_path: Path) -> None:
    ensure_runner(ssh_host, str(tmp_path / "ops-home"), python=sys.executable)
    (tmp_path / "runs").mkdir()
    answer = call_runner(ssh_host, ["status", str(tmp_path / "runs")])
    assert (answer["schema"], answer["runs"]) == ("ops.runner_status/1", [])
    with pytest.raises(NotFoundError):
        call_runner(ssh_host, ["status", str(tmp_path / "runs"), "no-such-run"])


def test_bootstrap_refuses_a_python_the_host_lacks(ssh_host: SSHHost, tmp_path: Path) -> None:
    with pytest.raises(HostError, match="cannot run /nonexistent/python3"):
        ensure_runner(ssh_host, str(tmp_path / "h"), python="/nonexistent/python3")


def _fake_wheel(directory: Path) -> Path:
    """A one-module wheel, so pip can install something without an index."""
    files = {"ops_fake_dep.py": b"VALUE = 42\n",
             "ops_fake_dep-1.0.dist-info/METADATA":
                 b"Metadata-Version: 2.1\nName: ops-fake-dep\nVersion: 1.0\n",
             "ops_fake_dep-1.0.dist-info/WHEEL":
                 b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{name},sha256={_b64(hashlib.sha256(data).digest())},{len(data)}"
              for name, data in files.items()]
    files["ops_fake_dep-1.0.dist-info/RECORD"] = "\n".join(
        [*record, "ops_fake_dep-1.0.dist-info/RECORD,,", ""]).encode()
    wheel = directory / "ops_fake_dep-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@pytest.mark.slow
def test_missing_modules_get_a_venv_that_sees_system_packages(
        ssh_host: SSHHost, tmp_path: Path) -> None:
    if importlib.util.find_spec("ensurepip") is None:
        pytest.skip("this python has no ensurepip, so no venv with pip (python3-venv)")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _fake_wheel(wheels)
    main = (b"import json, ops_fake_dep\n"
            b"print(json.dumps({'runner_version': '9.9.9', 'dep': ops_fake_dep.VALUE}))\n")
    stub = RunnerBuild("9.9.9", "f" * 64, (("runner/__init__.py", b""),
                                            ("runner/__main__.py", main)))
    ops_home = tmp_path / "ops-home"
    info = ensure_runner(ssh_host, str(ops_home), python=sys.executable, build=stub,
                         requirements={"ops_fake_dep": "ops-fake-dep==1.0"},
                         pip_args=["--no-index", "--find-links", str(wheels)])
    assert info.venv and info.python == f"{ops_home}/venv/bin/python"
    assert [a.split()[0] for a in info.actions] == ["created", "installed", "uploaded"]
    assert "include-system-site-packages = true" in (ops_home / "venv" / "pyvenv.cfg").read_text()
    again = ensure_runner(ssh_host, str(ops_home), python=sys.executable, build=stub,
                          requirements={"ops_fake_dep": "ops-fake-dep==1.0"})
    assert again.actions == ()


# -- no secrets through argv or environment -----------------------------------------------------

def test_no_environment_value_reaches_the_host(
        ssh_host: SSHHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    canary = "canary-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]
    monkeypatch.setenv("OPS_TEST_SECRET", canary)
    monkeypatch.setenv("LC_OPS_SECRET", canary)  # OpenSSH clients forward LC_* by default

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the SSH transport sent environment variables")

    commands: list[str] = []
    real_exec = paramiko.Channel.exec_command
    monkeypatch.setattr(paramiko.Channel, "update_environment", refuse)
    monkeypatch.setattr(paramiko.Channel, "set_environment_variable", refuse)
    monkeypatch.setattr(paramiko.Channel, "exec_command",
                        lambda self, cmd: (commands.append(cmd), real_exec(self, cmd))[1])
    ensure_runner(ssh_host, str(tmp_path / "ops-home"), python=sys.executable)
    (tmp_path / "runs").mkdir()
    call_runner(ssh_host, ["status", str(tmp_path / "runs")])
    remote_env = ssh_host.exec(["env"]).stdout  # sshd here accepts any env a client sends
    assert commands and not [c for c in commands if canary in c]
    assert canary not in remote_env


class _Address:
    """A stand-in for HostConfig: resolve_target needs only `address`."""

    def __init__(self, address: str):
        self.address = address


def test_fingerprint_matches_ssh_keygen(sshd: Sshd) -> None:
    key = paramiko.Ed25519Key.from_private_key_file(str(sshd.host_key))
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(sshd.host_key.with_suffix(".pub"))],
                            capture_output=True, text=True, check=True).stdout.split()[1]
    assert fingerprint(key) == listed


def test_before_bootstrap_the_runner_is_the_hosts_python(tmp_path: Path) -> None:
    host = SSHHost(resolve_target("root@pod.invalid"), KnownHosts(tmp_path / "kh"),
                   python="/opt/py/bin/python")
    assert host.runner_argv() == ["/opt/py/bin/python", "-m", "runner"]
    assert host.name == "root@pod.invalid"
