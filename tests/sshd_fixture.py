"""A real OpenSSH sshd on 127.0.0.1 for the ssh tier (a pytest plugin, see conftest).

`sshd` (session scope) starts one server with throwaway host and user keys, its own config and
`Subsystem sftp internal-sftp`; `sshd_factory` starts extra servers a test may restart with a
new host key. `ssh_alias` writes ~/.ssh/config and ~/.ssh/known_hosts in the test's pinned HOME
so that the alias reaches the server; `ssh_host` is an `SSHHost` on that alias. A missing sshd
or ssh-keygen skips the tier with a reason (CI installs openssh-server and openssh-client).
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

if TYPE_CHECKING:
    from ops.hosts.ssh import SSHHost

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")
ALIAS = "ops-test-pod"
START_TIMEOUT_S = 10.0

_CONFIG = """\
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
AuthorizedKeysFile {authorized_keys}
PidFile {pid_file}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
# any environment a client sent would be accepted: the canary test relies on that
AcceptEnv *
MaxSessions 64
MaxStartups 64
LogLevel VERBOSE
Subsystem sftp internal-sftp
"""


def keygen(path: Path, comment: str) -> None:
    path.unlink(missing_ok=True)
    path.with_suffix(".pub").unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Sshd:
    """One sshd process and everything a client needs to reach it."""

    workdir: Path
    port: int = 0
    user: str = field(default_factory=getpass.getuser)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host_key(self) -> Path:
        return self.workdir / "ssh_host_ed25519_key"

    @property
    def client_key(self) -> Path:
        return self.workdir / "id_ed25519"

    @property
    def log_path(self) -> Path:
        return self.workdir / "sshd.log"

    @property
    def address(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"

    def known_hosts_line(self) -> str:
        key_type, key_b64 = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {key_type} {key_b64}\n"

    def trust(self, known_hosts: Path) -> None:
        """Append this server's host key to a known_hosts file."""
        known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with known_hosts.open("a") as fh:
            fh.write(self.known_hosts_line())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def setup_keys(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        keygen(self.host_key, "ops-test-host")
        keygen(self.client_key, "ops-test-user")
        shutil.copy(self.client_key.with_suffix(".pub"), self.workdir / "authorized_keys")

    def start(self) -> None:
        """Start on self.port (a free one when 0); retry on another port if it was taken."""
        for _ in range(3):
            port = self.port or free_port()
            if self._start_on(port):
                self.port = port
                return
            if self.port:
                break
        raise RuntimeError(f"sshd did not start:\n{self.log()}")

    def _start_on(self, port: int) -> bool:
        config = self.workdir / "sshd_config"
        config.write_text(_CONFIG.format(port=port, host_key=self.host_key,
                                         authorized_keys=self.workdir / "authorized_keys",
                                         pid_file=self.workdir / "sshd.pid"))
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)],
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if f"Server listening on 127.0.0.1 port {port}" in self.log():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.02)
        self.stop()
        return False

    def stop(self) -> None:
        """Stop the server and every connection it serves."""
        if self.proc is None:
            return
        try:
            master = psutil.Process(self.proc.pid)
            children = master.children(recursive=True)
        except psutil.Error:
            children = []
        for child in children:
            _kill(child)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self, *, new_host_key: bool = False) -> None:
        """Stop and start again on the same port, optionally with a regenerated host key."""
        self.stop()
        if new_host_key:
            keygen(self.host_key, "ops-test-host")
        self.start()

    def drop_connection(self, client_port: int | None = None) -> int:
        """Kill the sshd processes serving the client connection from `client_port` (the
        client's local port; every connection when None), as a network drop would. Commands
        those connections ran are killed with them. Returns how many processes were killed."""
        assert self.proc is not None, "sshd is not running"
        killed = 0
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                conns = child.net_connections(kind="tcp")
            except psutil.Error:
                continue
            if any(c.raddr and (client_port is None or c.raddr.port == client_port)
                   for c in conns):
                killed += _kill(child)
        return killed

    def drop(self, host: SSHHost) -> int:
        """drop_connection for the connection an SSHHost holds (not through a jump host)."""
        return self.drop_connection(host.transport.sock.getsockname()[1])


def _kill(proc: psutil.Process) -> int:
    try:
        proc.kill()
    except psutil.NoSuchProcess:
        return 0
    return 1


def require_sshd() -> None:
    if not SSHD.exists():
        pytest.skip(f"{SSHD} is not installed (CI installs openssh-server)")
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed (CI installs openssh-client)")
    # not root: sshd then runs unprivileged and only logs in its own user
    with contextlib.suppress(PermissionError):
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)


def start_sshd(workdir: Path) -> Sshd:
    require_sshd()
    server = Sshd(workdir)
    server.setup_keys()
    server.start()
    return server


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """One sshd for the whole session: the "pod" is this machine, reached only through SSH."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def sshd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Sshd]]:
    """Extra servers a test may restart or re-key; all stopped after the test."""
    servers: list[Sshd] = []

    def make() -> Sshd:
        servers.append(start_sshd(tmp_path_factory.mktemp("sshd-extra")))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


@dataclass(frozen=True)
class SshAlias:
    """An alias in the pinned ~/.ssh/config that reaches `sshd`."""

    name: str
    sshd: Sshd
    config: Path
    known_hosts: Path

    def ssh_argv(self) -> list[str]:
        """The OpenSSH client on this alias (it reads the passwd home, not $HOME: hence -F)."""
        return ["ssh", "-F", str(self.config), "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "BatchMode=yes", self.name]


def write_alias(server: Sshd, home: Path, name: str = ALIAS, *, trust: bool = True) -> SshAlias:
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    config = ssh_dir / "config"
    with config.open("a") as fh:
        fh.write(f"Host {name}\n  HostName 127.0.0.1\n  Port {server.port}\n"
                 f"  User {server.user}\n  IdentityFile {server.client_key}\n"
                 "  IdentitiesOnly yes\n")
    known_hosts = ssh_dir / "known_hosts"
    if trust:
        server.trust(known_hosts)
    return SshAlias(name, server, config, known_hosts)


@pytest.fixture
def ssh_alias(sshd: Sshd, hermetic_home: Path) -> SshAlias:
    """~/.ssh/config with an alias for `sshd`, whose host key is in ~/.ssh/known_hosts."""
    return write_alias(sshd, hermetic_home)


@pytest.fixture
def ssh_host(ssh_alias: SshAlias, tmp_path: Path) -> Iterator[SSHHost]:
    """An SSHHost on the alias, with the project's .ops/ under tmp_path; closed afterwards.
    paramiko only (no shared OpenSSH master): its tests drop and inspect that connection."""
    from ops.hosts.ssh import open_host

    host = open_host(ssh_alias.name, repo_root=tmp_path, retry_for=5.0, multiplex=False)
    yield host
    host.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    ssh_fixtures = {"sshd", "sshd_factory", "ssh_alias", "ssh_host"}
    for item in items:
        if ssh_fixtures & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ssh)



@contextlib.contextmanager
def hanging_up(listener: socket.socket,
               handle: Callable[[socket.socket], None] | None = None) -> Iterator[None]:
    """While inside: every connection to ``listener`` (bound and listening) is accepted and
    closed at once, unread, as a booting pod's port forwarder or a dying ssh master does; or,
    given ``handle``, closed once ``handle`` is done with it."""
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                if handle is not None:
                    handle(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def served_requests(ops_home: Path) -> int:
    """Requests the resident runners of ``ops_home`` answered (runner.serve logs one line
    each beside its socket): the round trips that are not execs."""
    from ops.hosts.served import serve_dirs

    return sum(len(log.read_bytes().splitlines()) for place in serve_dirs(str(ops_home))
               for log in Path(place).glob("*.sock.log"))
