"""A connection that outlives one `ops` process: OpenSSH's ControlMaster, paramiko the fallback.

The first command on a host starts `ssh -M -N -f` (a master that stays up, idle for at most
`OPS_SSH_MUX_IDLE` seconds, 300 by default) on a control socket in a private directory; later
commands, in this process or the next, run `ssh -S SOCKET` through it: one exec costs a local
socket hop plus the host's own work, with no key exchange and no Python crypto.

Safety, point by point:
- Host keys: the master is started with `StrictHostKeyChecking=yes` against a known_hosts file
  written from exactly the keys the project's policy (ops.hosts.known_hosts, the paramiko path)
  trusts for this host, with every `@revoked` key listed as revoked; the user's and the
  system's files are not read (`-F /dev/null`, `GlobalKnownHostsFile=/dev/null`). A host whose
  key is not on record gets no master: paramiko connects and applies trust-on-first-use or the
  refusal, as before. The socket name hashes the known_hosts files' sizes and times, so a
  changed record never reuses an older master.
- Other users: the directory is 0700 and ours (checked with lstat, never followed through a
  link), OpenSSH creates the socket 0600 and its master refuses a client of another uid.
- Secrets: nothing but the host's address, port, user and key file paths is on a command line;
  data goes on stdin.
- Failures: a master that cannot be started (unknown key, auth, unreachable) leaves the command
  to paramiko, with its retries and messages. A killed master leaves a stale socket: the client
  then connects on its own (same options) and the stale socket is replaced on the next command.
  A connection that drops during a command is reported as lost, never run a second time.
- Not used through a jump host or a ProxyCommand (paramiko handles those), nor with
  `OPS_SSH_MUX=0`.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, NamedTuple

from runner.digest import sha256

if TYPE_CHECKING:
    from ops.hosts.known_hosts import KnownHosts
    from ops.hosts.ssh_config import SSHTarget

MUX_ENV = "OPS_SSH_MUX"
IDLE_ENV = "OPS_SSH_MUX_IDLE"
DEFAULT_IDLE_S = 300
KEEPALIVE_S = 15
MAX_SOCKET_PATH = 100  # sockaddr_un holds 104-108 bytes; OpenSSH adds a temp suffix on bind
_NAME_LEN = 24


# what an ssh client needs of our environment; nothing else reaches it (a master outlives
# the ops process that started it, and must not carry that process's secrets along)
SSH_ENV = ("HOME", "USER", "LOGNAME", "PATH", "SSH_AUTH_SOCK", "TMPDIR", "LANG", "TERM")


def ssh_env() -> dict[str, str]:
    return {k: os.environ[k] for k in SSH_ENV if k in os.environ}


# OpenSSH's default ciphers, AES-GCM first: with AES in hardware it takes about half the CPU
# of chacha20-poly1305 (the default first choice) per byte, which is what bulk fetches spend
FAST_CIPHERS = ("aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
                "aes128-ctr,aes192-ctr,aes256-ctr")


@functools.cache
def aes_in_hardware() -> bool:
    """False only where we can tell there is none (Linux without the `aes` CPU flag)."""
    try:
        with open("/proc/cpuinfo", "rb") as fh:
            info = fh.read(1 << 16)
    except OSError:
        return True
    flags = b" ".join(line for line in info.splitlines()
                      if line.startswith((b"flags", b"Features")))
    return not flags or b" aes" in flags


def enabled() -> bool:
    return os.environ.get(MUX_ENV, "1") != "0" and _ssh_on_path()


def _ssh_on_path() -> bool:
    """Whether `shutil.which("ssh")` finds one (an executable regular file in a PATH
    directory), without importing shutil, which imports bz2 and lzma, on every command."""
    if os.environ.get("PATH") == "":
        return False  # as shutil.which: an empty PATH names no directory at all
    for directory in os.get_exec_path():
        candidate = os.path.join(directory, "ssh")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return True
    return False


def idle_seconds() -> int:
    try:
        return max(1, int(os.environ.get(IDLE_ENV, DEFAULT_IDLE_S)))
    except ValueError:
        return DEFAULT_IDLE_S


def private_dir(path: Path) -> bool:
    """Make `path` a directory only we can enter (0700, ours, not a link); False if it is not
    and cannot be made so (say, another user's). The resident runner's rule, runner.serve."""
    from runner.serve import ServeError
    from runner.serve import private_dir as make_private

    try:
        make_private(path)
    except (ServeError, OSError):
        return False
    return True


def control_dir(repo_root: Path) -> Path | None:
    """Where sockets live: $XDG_RUNTIME_DIR/ops-mux, else the project's .ops/mux, else
    /tmp/ops-mux-UID, the first that is private and short enough for a socket path."""
    # the last: $TMPDIR, else /tmp, as tempfile.gettempdir() finds it on a POSIX system,
    # without its import (which would cost every command in a deep repository path)
    tmp = Path(os.path.abspath(os.environ.get("TMPDIR") or "/tmp"))  # noqa: S108
    candidates = [repo_root / ".ops" / "mux", tmp / f"ops-mux-{os.getuid()}"]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        candidates.insert(0, Path(runtime) / "ops-mux")
    for candidate in candidates:
        if len(str(candidate)) + 1 + _NAME_LEN + 30 <= MAX_SOCKET_PATH and private_dir(candidate):
            return candidate
    return None


def _file_stamp(path: Path) -> list[object]:
    try:
        info = path.stat()
    except OSError:
        return [str(path), None]
    return [str(path), info.st_size, info.st_mtime_ns]


def _ssh_config() -> Path:
    return Path.home() / ".ssh" / "config"


class MuxTarget(NamedTuple):
    """What the OpenSSH command line needs of a resolved target (ops.hosts.ssh_config's
    SSHTarget, without a jump host or a proxy command)."""

    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    identities_only: bool
    connect_timeout: float | None
    host_key_name: str

    @classmethod
    def of(cls, target: SSHTarget) -> MuxTarget:
        return cls(target.hostname, target.port, target.user, tuple(target.identity_files),
                   target.identities_only, target.connect_timeout, target.host_key_name)

    def to_json(self) -> dict[str, object]:
        return {"hostname": self.hostname, "port": self.port, "user": self.user,
                "identity_files": list(self.identity_files),
                "identities_only": self.identities_only,
                "connect_timeout": self.connect_timeout, "host_key_name": self.host_key_name}

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> MuxTarget:
        files = doc["identity_files"]
        timeout = doc["connect_timeout"]
        if not isinstance(files, list) or not isinstance(timeout, (int, float, type(None))):
            raise TypeError("malformed target")
        port = doc["port"]
        if not isinstance(port, int):
            raise TypeError("malformed target")
        return cls(str(doc["hostname"]), port, str(doc["user"]), tuple(str(f) for f in files),
                   bool(doc["identities_only"]), timeout, str(doc["host_key_name"]))


class MuxCommandResult(NamedTuple):
    exit_code: int
    stdout: bytes
    stderr: bytes


class MasterLostError(Exception):
    """The shared connection went away while a command ran on it."""


class Mux:
    """The OpenSSH master for one target under one host-key policy."""

    def __init__(self, target: MuxTarget, trust_sources: Sequence[Path], directory: Path):
        self.target = target
        self.trust_sources = tuple(trust_sources)
        key = json.dumps([target.hostname, target.port, target.user, target.identity_files,
                          target.identities_only, target.connect_timeout,
                          [_file_stamp(p) for p in self.trust_sources]])
        self.directory = directory
        name = sha256(key.encode()).hexdigest()[:_NAME_LEN]
        self.socket = directory / name
        self.trust_file = directory / f"{name}.known_hosts"
        self.home_file = directory / f"{name}.home"
        self.lock_file = directory / f"{name}.lock"
        self.last_error = ""

    @classmethod
    def for_target(cls, target: SSHTarget, known_hosts: KnownHosts) -> Mux | None:
        if not enabled() or target.jump is not None or target.proxy_command:
            return None
        directory = control_dir(known_hosts.project_file.parent.parent)
        if directory is None:
            return None
        sources = (*known_hosts.user_files(target.user_known_hosts), known_hosts.project_file)
        return cls(MuxTarget.of(target), sources, directory)

    # -- a later process: the master found from the host spec alone -----------------------

    @staticmethod
    def _spec_file(directory: Path, spec: str, address: str | None, repo_root: Path) -> Path:
        key = json.dumps([spec, address, str(repo_root), _file_stamp(_ssh_config())])
        return directory / f"spec-{sha256(key.encode()).hexdigest()[:_NAME_LEN]}.json"

    def remember_spec(self, spec: str, address: str | None, repo_root: Path) -> None:
        """Note which target a host spec resolved to (while ~/.ssh/config is unchanged), so
        that a later process finds this master without resolving the spec again."""
        doc = {"target": self.target.to_json(), "trust": [str(p) for p in self.trust_sources]}
        path = self._spec_file(self.directory, spec, address, repo_root)
        with contextlib.suppress(OSError):
            if json.loads(path.read_text()) == doc:
                return
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        with contextlib.suppress(OSError):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(doc, fh)
            os.replace(tmp, path)

    @classmethod
    def warm(cls, spec: str, address: str | None, repo_root: Path) -> Mux | None:
        """The live master of a spec a recent process resolved; None when there is none,
        when ~/.ssh/config or a known_hosts file changed since, or when anything is odd."""
        if not enabled():
            return None
        directory = control_dir(repo_root)
        if directory is None:
            return None
        try:
            doc = json.loads(cls._spec_file(directory, spec, address, repo_root).read_text())
            mux = cls(MuxTarget.from_json(doc["target"]), [Path(p) for p in doc["trust"]],
                      directory)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return mux if mux.alive() else None

    # -- argv -------------------------------------------------------------------------------

    def _options(self) -> list[str]:
        target = self.target
        timeout = int(target.connect_timeout or 10)
        opts = ["BatchMode=yes", "StrictHostKeyChecking=yes", "CheckHostIP=no",
                f"UserKnownHostsFile={self.trust_file}", "GlobalKnownHostsFile=/dev/null",
                "UpdateHostKeys=no", f"ConnectTimeout={timeout}",
                f"ServerAliveInterval={KEEPALIVE_S}", "ServerAliveCountMax=3",
                "ForwardAgent=no", "ForwardX11=no", "PermitLocalCommand=no", "LogLevel=ERROR"]
        if target.identities_only:
            opts.append("IdentitiesOnly=yes")
        if aes_in_hardware():
            opts.append(f"Ciphers={FAST_CIPHERS}")
        argv = ["-F", "/dev/null", "-T", "-S", str(self.socket)]
        for opt in opts:
            argv += ["-o", opt]
        for key_file in target.identity_files:
            if Path(key_file).is_file():
                argv += ["-i", key_file]
        return [*argv, "-p", str(target.port), "-l", target.user or os.environ.get("USER", ""),
                "--", target.hostname]

    def client_argv(self, argv: Sequence[str]) -> list[str]:
        """ssh through the master (or, if it died, on its own with the same options)."""
        opts = self._options()
        return ["ssh", "-o", "ControlMaster=no", *opts, shlex.join(argv)]

    # -- the master -------------------------------------------------------------------------

    def alive(self) -> bool:
        """A master listens on our socket (a connect succeeds; our dir is 0700)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            try:
                sock.connect(str(self.socket))
            except OSError:
                return False
        return True

    def ensure(self) -> bool:
        """A live master, started now if needed; False when none can be had (the caller
        then connects with paramiko, which reports why or applies trust-on-first-use)."""
        if self.alive():
            return True
        with self._locked():
            if self.alive():  # another ops process started it while we waited
                return True
            return self._start()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.lock_file, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _start(self) -> bool:
        if not self._write_trust_file():
            self.last_error = "no trusted host key on record"
            return False
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # a stale socket of a killed master
        argv = ["ssh", "-M", "-N", "-f", "-o", f"ControlPersist={idle_seconds()}",
                *self._options()]
        limit = int(self.target.connect_timeout or 10) + 5
        import tempfile  # only a master's start needs it (it imports shutil, random)

        with tempfile.TemporaryFile() as errors:
            try:
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=errors, timeout=limit, check=False, env=ssh_env())
            except subprocess.TimeoutExpired:
                self.last_error = "the master did not start in time"
                return False
            errors.seek(0)
            self.last_error = errors.read().decode(errors="replace").strip()[-500:]
        self.home_file.unlink(missing_ok=True)
        prune(self.directory)
        return proc.returncode == 0 and self.alive()

    def _write_trust_file(self) -> bool:
        """The keys the project's policy trusts for this host, and every revoked key."""
        from ops.hosts.mux_trust import trusted_lines

        lines = trusted_lines(self.trust_sources, self.target.host_key_name)
        if not any(not line.startswith("@") for line in lines):
            return False
        tmp = self.trust_file.with_name(f".{self.trust_file.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(f"{line}\n" for line in lines))
        os.replace(tmp, self.trust_file)
        return True

    def stop(self) -> None:
        """Ask the master to exit (tests, `ops pod rm`)."""
        self._control("exit")

    def forward(self, local: Path, remote: str, *, cancel: bool = False) -> bool:
        """Have the master listen on ``local`` (in our private dir) and carry each connection
        to the Unix socket ``remote`` on the host (``cancel``: stop doing so); True when it
        took the request. OpenSSH neither replaces nor removes the socket file itself."""
        return self._control("cancel" if cancel else "forward", "-L", f"{local}:{remote}")

    def _control(self, command: str, *args: str) -> bool:
        """One request to the master itself (`ssh -O`): local, no round trip to the host."""
        try:
            done = subprocess.run(["ssh", "-O", command, *args, *self._options()],
                                  capture_output=True, check=False, timeout=10, env=ssh_env())
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0

    # -- commands ---------------------------------------------------------------------------

    def run(self, argv: Sequence[str], input_bytes: bytes | None,
            timeout: float | None) -> MuxCommandResult:
        """One command through the master; MasterLostError when the connection died under it
        (ssh's own exit 255 and no master left)."""
        proc = subprocess.run(self.client_argv(argv), input=input_bytes or b"",
                              capture_output=True, timeout=timeout, check=False, env=ssh_env())
        stderr = strip_mux_noise(proc.stderr)
        if proc.returncode == 255 and not self.alive():
            raise MasterLostError(stderr.decode(errors="replace").strip() or "exit 255")
        return MuxCommandResult(proc.returncode, proc.stdout, stderr)

    def popen(self, argv: Sequence[str], stderr: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.client_argv(argv), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=stderr, env=ssh_env())

    def home(self, fetch: bool = True) -> str | None:
        """The remote home, remembered beside the socket for as long as this master lives."""
        with contextlib.suppress(OSError):
            cached = self.home_file.read_text()
            if cached.startswith("/"):
                return cached
        if not fetch:
            return None
        result = self.run(["sh", "-c", 'cd && pwd -P'], None, 30)
        home = result.stdout.decode(errors="replace").strip()
        if result.exit_code != 0 or not home.startswith("/"):
            return None
        tmp = self.home_file.with_name(f".{self.home_file.name}.{os.getpid()}")
        tmp.write_text(home)
        os.replace(tmp, self.home_file)
        return home


STALE_S = 86400.0


def prune(directory: Path) -> None:
    """Forget the notes of masters gone for a day (each master start tidies up a little)."""
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            base = entry.name.split(".", 1)[0]
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False) and \
                        now - entry.stat(follow_symlinks=False).st_mtime > STALE_S and \
                        (base.startswith("spec-") or not (directory / base).exists()):
                    os.unlink(entry.path)


_MUX_NOISE = (b"Control socket connect", b"mux_client", b"muxclient: ")


def strip_mux_noise(stderr: bytes) -> bytes:
    """Drop ssh's notes that the master was gone (it then connected on its own): a refused
    socket, or a master that accepted and died before the hello ("muxclient: master hello
    exchange failed", which a master killed a moment before leaves under load)."""
    if not any(mark in stderr for mark in _MUX_NOISE):
        return stderr
    kept = [line for line in stderr.splitlines(keepends=True)
            if not any(mark in line for mark in _MUX_NOISE)]
    return b"".join(kept)


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if proc.poll() is None:
        proc.kill()
    return proc.wait()
