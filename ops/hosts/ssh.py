"""SSHHost: the host interface over SSH, the one module that talks SSH.

Commands and streams go through a shared OpenSSH master when the system ssh is there and the
host's key is on record (ops.hosts.mux: one login serves this and later ops processes);
otherwise, and for SFTP and port forwards, through paramiko, imported on first use. On the
paramiko path one connection serves a whole CLI command: commands are channels on it, files
go over SFTP on it. Connecting retries with backoff while a pod boots (refused, reset, timed
out, no banner yet), each failed attempt shown on a terminal; authentication and host-key
errors are final. The retry loop is written here rather than with tenacity: it is a dozen
lines, tenacity is not a dependency, and what is worth retrying is SSH-specific anyway (the
classification in `_retryable` is the part that matters).

Commands are sent as one shlex-quoted string, which the login shell on the host splits back
into the same argv. Nothing is ever sent as SSH environment (no setenv/env requests): secrets
travel on stdin or as files written over SFTP.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import posixpath
import select
import shlex
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from ops.errors import HostError, NotFoundError, OpsError
from ops.hosts.base import (
    ConnectionLostError,
    ExecResult,
    HostCommandError,
    error_reason,
    progress,
)
from ops.hosts.mux import Mux
from ops.hosts.mux_commands import mux_exec, mux_stream

if TYPE_CHECKING:
    import paramiko

    from ops.hosts.known_hosts import KnownHosts
    from ops.hosts.served import Served
    from ops.hosts.ssh_config import HasAddress, SSHTarget
else:
    paramiko = importlib.import_module("ops.hosts.mux_lazy").LazyModule("paramiko")

_RETRY_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT,
                 errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EPIPE}


def _io_errors() -> tuple[type[BaseException], ...]:
    """What a dropped connection raises (a function: paramiko is imported on first use)."""
    return (OSError, EOFError, paramiko.SSHException)

_POLL_S = 0.1
_EOF_GRACE_S = 2.0  # after the exit status: a background child may keep stdout open
_BUF = 1 << 16
# Bulk transfers (tar streams, SFTP): a wider window and bigger packets than paramiko's 2 MiB /
# 32 KiB defaults, and AES-GCM preferred, bring paramiko to about OpenSSH's speed on loopback.
STREAM_WINDOW = 1 << 24
STREAM_PACKET = 1 << 18
_FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


class HostUnreachableError(HostError):
    """No SSH session could be established within the retry budget."""


class HostAuthError(HostError):
    """The server refused every key offered: retrying would not help."""


class ConnectPolicy(NamedTuple):
    retry_for: float = 60.0
    """Seconds to keep retrying a refused/timed-out connect (a pod that is still booting)."""
    connect_timeout: float = 10.0
    """Seconds for one attempt's TCP connect, SSH banner and authentication each."""
    first_delay: float = 0.5
    max_delay: float = 5.0
    keepalive_s: int = 15


_NO_RETRY = ConnectPolicy(retry_for=0.0)




def _retryable(exc: BaseException, depth: int = 0) -> bool:
    """Errors a booting pod (or a bastion in front of one) produces, by type and errno only.
    paramiko reports a socket failure during the banner or the key exchange as a bare
    SSHException raised while handling it: the exception it wraps decides."""
    if isinstance(exc, (paramiko.AuthenticationException, paramiko.BadHostKeyException,
                        socket.gaierror)):
        return False
    if isinstance(exc, (paramiko.ChannelException, paramiko.ProxyCommandFailure, EOFError,
                        paramiko.ssh_exception.NoValidConnectionsError, TimeoutError)):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _RETRY_ERRNOS
    if isinstance(exc, paramiko.SSHException) and depth < 8:
        cause = exc.__cause__ or exc.__context__
        return cause is not None and _retryable(cause, depth + 1)
    return False


class SSHHost:
    """A host reached over SSH. Connects lazily; `close()` (or `with`) ends the connection."""

    def __init__(self, target: SSHTarget | None, known_hosts: KnownHosts | None, *,
                 connect: ConnectPolicy | None = None, python: str = "python3",
                 name: str | None = None, multiplex: bool = True, mux: Mux | None = None,
                 resolve: Callable[[], tuple[SSHTarget, KnownHosts]] | None = None):
        """`target` and `known_hosts`, or (a later process that found a live shared master
        by the host's name) `mux` and `resolve`, called only if paramiko is needed after all."""
        self._target, self._known_hosts, self._resolve = target, known_hosts, resolve
        self.name = name or (target.name if target is not None else "?")
        self.policy = connect or ConnectPolicy()
        self.runner_command: tuple[str, ...] = (python, "-m", "runner")
        # set when runner_command is remembered rather than checked: a full check, run once
        # by call_runner if that runner turns out to be gone
        self.runner_recheck: Callable[[], None] | None = None
        self._client: paramiko.SSHClient | None = None
        self._jump: SSHHost | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._home: str | None = None
        # commands and streams go through a shared OpenSSH master when one can be had
        self._mux = mux
        if mux is None and multiplex and target is not None and known_hosts is not None:
            self._mux = Mux.for_target(target, known_hosts)
        self._served: Served | None = None  # the resident runner reached through _mux

    @property
    def target(self) -> SSHTarget:
        if self._target is None:
            self._late_resolve()
        assert self._target is not None  # noqa: S101 - set by _late_resolve
        return self._target

    @property
    def known_hosts(self) -> KnownHosts:
        if self._known_hosts is None:
            self._late_resolve()
        assert self._known_hosts is not None  # noqa: S101 - set by _late_resolve
        return self._known_hosts

    def _late_resolve(self) -> None:
        if self._resolve is None:
            raise HostError(f"{self.name}: no SSH target")
        self._target, self._known_hosts = self._resolve()

    # -- the Host protocol ------------------------------------------------------------------

    def exec(self, argv: Sequence[str], *, input_text: str | None = None, check: bool = True,
             timeout: float | None = None) -> ExecResult:
        """Run argv on the host; a non-zero exit raises HostCommandError unless check=False."""
        if self._use_mux():
            assert self._mux is not None  # noqa: S101 - checked by _use_mux
            served = self._served_by(self._mux).command(self.runner_argv(), argv, input_text) \
                if timeout is None else None  # the resident runner has no time limits
            if served is not None:
                if check and not served.ok:
                    raise HostCommandError(served)
                return served
            return mux_exec(self._mux, self.name, argv, input_text, check=check,
                            timeout=timeout)
        chan = self.open_exec_stream(argv)
        try:
            if input_text is not None:
                chan.sendall(input_text.encode())
            chan.shutdown_write()
            deadline = None if timeout is None else time.monotonic() + timeout
            out, err = _collect(chan, deadline, argv[0], self.name)
            code = self._exit_code(chan)
        except _io_errors() as exc:
            raise self._lost(exc) from exc
        finally:
            with contextlib.suppress(*_io_errors()):  # closing after a drop may fail too
                chan.close()
        result = ExecResult(self.name, tuple(argv), code, out.decode(errors="replace"),
                            err.decode(errors="replace"))
        if check and not result.ok:
            raise HostCommandError(result)
        return result

    def _use_mux(self) -> bool:
        """A live shared master (started now if needed); False for good, on this host
        object, once one could not be started: paramiko then connects, retries and says why."""
        if self._mux is None:
            return False
        if self._mux.ensure():
            return True
        self._mux = None
        return False

    def runner_call(self, args: Sequence[str], *, input_text: str | None = None,
                    timeout: float | None = None) -> ExecResult:
        """One runner verb (unchecked): through the host's resident runner where the shared
        master reaches one (ops.hosts.served), else over exec."""
        if self._use_mux():
            assert self._mux is not None  # noqa: S101 - checked by _use_mux
            return self._served_by(self._mux).call(self.runner_argv(), args, input_text,
                                                   timeout)
        return self.exec([*self.runner_argv(), *args], input_text=input_text, check=False,
                         timeout=timeout)

    def _served_by(self, mux: Mux) -> Served:
        """This host's resident runner, reached through ``mux`` (ops.hosts.served)."""
        from ops.hosts.served import Served

        if self._served is None or self._served.mux is not mux:
            self._served = Served(mux, self.name)
        return self._served

    def runner_argv(self) -> list[str]:
        """How to start the runner here; `ensure_runner` points it at the uploaded build."""
        return list(self.runner_command)

    def expand(self, path: str) -> str:
        """`~` and `~/x` in terms of the remote home; other paths unchanged."""
        if path == "~" or path.startswith("~/"):
            return self.home() + path[1:]
        return path

    def home(self) -> str:
        if self._home is None and self._use_mux():
            assert self._mux is not None  # noqa: S101 - checked by _use_mux
            self._home = self._mux.home()
        if self._home is None:
            self._home = str(self.sftp().normalize("."))
        return self._home

    # -- streams and files ------------------------------------------------------------------

    def open_exec_stream(self, argv: Sequence[str], *, bulk: bool = False) -> paramiko.Channel:
        """Start argv and return its channel (stdin/stdout/stderr streams, exit status) for
        the caller to read and close; `bulk` sizes it for megabytes of output."""
        sizes = {"window_size": STREAM_WINDOW, "max_packet_size": STREAM_PACKET} if bulk else {}
        chan = self._open_session(sizes)
        try:
            chan.exec_command(shlex.join(argv))
        except _io_errors() as exc:
            with contextlib.suppress(*_io_errors()):
                chan.close()
            raise self._lost(exc) from exc  # it may have started: never run it a second time
        return chan

    def _open_session(self, sizes: Mapping[str, int]) -> paramiko.Channel:
        """A new session channel. A connection that turns out dead here (paramiko may still
        call it active for a moment after a drop) is replaced once: nothing has run on the
        channel yet, so opening it again is safe."""
        for attempt in (1, 2):
            try:
                return self.transport.open_session(timeout=self.policy.connect_timeout, **sizes)
            except paramiko.ChannelException as exc:  # refused by a live server: not a drop
                raise self._lost(exc) from exc
            except _io_errors() as exc:
                if attempt == 2:
                    raise self._lost(exc) from exc
                self._discard()  # the next `transport` connects afresh
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def stream(self, argv: Sequence[str], *, input_bytes: bytes = b"") -> Iterator[BinaryIO]:
        """Run argv with `input_bytes` on stdin and yield its stdout as a binary stream (a
        tar, say). Leaving the block normally waits for the exit: non-zero raises
        HostCommandError, a drop raises ConnectionLostError. An error inside the block just
        closes the channel, which stops the command."""
        if self._use_mux():
            assert self._mux is not None  # noqa: S101 - checked by _use_mux
            with mux_stream(self._mux, self.name, argv, input_bytes) as stdout:
                yield stdout
            return
        chan = self.open_exec_stream(argv, bulk=True)
        try:
            try:
                chan.sendall(input_bytes)
                chan.shutdown_write()
                stdout = chan.makefile("rb")
            except _io_errors() as exc:
                raise self._lost(exc) from exc
            yield stdout
            chan.status_event.wait()
            code = self._exit_code(chan)
            stderr = bytearray()
            _drain(chan, bytearray(), stderr)
        finally:
            # after a drop, closing may itself fail (EOFError): the error that matters is
            # the one already on its way out of the block
            with contextlib.suppress(*_io_errors()):
                chan.close()
        if code != 0:
            raise HostCommandError(ExecResult(self.name, tuple(argv), code, "",
                                              stderr.decode(errors="replace")))

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        """Write a file over SFTP atomically (temp file, then rename), with `mode` set before
        any byte is written. Parent directories are created (0700). Never a command line."""
        import secrets  # only an SFTP write needs it (it imports hmac, random, base64)

        path = self.expand(path)
        parent, base = posixpath.split(path)
        self.makedirs(parent)
        tmp = f"{parent}/.{base}.{secrets.token_hex(4)}.tmp"
        sftp = self.sftp()
        try:
            with sftp.open(tmp, "wb") as fh:
                fh.chmod(mode)
                fh.set_pipelined(True)
                fh.write(data)
            sftp.posix_rename(tmp, path)
        except _io_errors() as exc:
            self._forget_if_dropped(exc)
            raise HostError(f"cannot write {path} on {self.name}: {error_reason(exc)}") from exc

    def read_file(self, path: str) -> bytes:
        path = self.expand(path)
        try:
            with self.sftp().open(path, "rb") as fh:
                fh.prefetch()
                data: bytes = fh.read()
                return data
        except FileNotFoundError as exc:
            raise NotFoundError(f"{path} does not exist on {self.name}") from exc
        except _io_errors() as exc:
            self._forget_if_dropped(exc)
            raise HostError(f"cannot read {path} on {self.name}: {error_reason(exc)}") from exc

    def makedirs(self, path: str, mode: int = 0o700) -> None:
        """mkdir -p over SFTP."""
        path = self.expand(path)
        sftp = self.sftp()
        missing: list[str] = []
        while path not in ("", "/"):
            try:
                sftp.stat(path)
                break
            except FileNotFoundError:
                missing.append(path)
                path = posixpath.dirname(path)
        for directory in reversed(missing):
            try:
                sftp.mkdir(directory, mode)
            except OSError as exc:
                raise HostError(f"cannot create {directory} on {self.name}: "
                                f"{error_reason(exc)}") from exc

    def sftp(self) -> paramiko.SFTPClient:
        """The SFTP session on this connection; like a command's channel, one that cannot be
        opened on a connection that turns out dead is opened once more on a fresh one."""
        for attempt in (1, 2):
            if self._sftp is not None and not self._sftp.get_channel().closed:
                return self._sftp
            try:
                self._sftp = paramiko.SFTPClient.from_transport(
                    self.transport, window_size=STREAM_WINDOW, max_packet_size=STREAM_PACKET)
            except _io_errors() as exc:
                if attempt == 2 or isinstance(exc, paramiko.ChannelException):
                    raise HostError(f"SFTP is not available on {self.name}: "
                                    f"{error_reason(exc)}",
                                    hint="the host's sshd needs an sftp Subsystem") from exc
                self._discard()
        assert self._sftp is not None  # noqa: S101 - from_transport returns None only on failure
        return self._sftp

    # -- connection -------------------------------------------------------------------------

    @property
    def transport(self) -> paramiko.Transport:
        """The live connection, (re)connecting with the retry policy when there is none."""
        client = self._client
        if client is None or not client.get_transport() or not client.get_transport().is_active():
            self.close()
            self._connect_with_retry()
            client = self._client
        assert client is not None  # noqa: S101 - set by _connect_with_retry or it raised
        transport: paramiko.Transport = client.get_transport()
        return transport

    def close(self) -> None:
        for closable in (self._sftp, self._client, self._jump):
            if closable is not None:
                closable.close()
        self._sftp = self._client = self._jump = None

    def __enter__(self) -> SSHHost:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _connect_with_retry(self) -> None:
        deadline = time.monotonic() + self.policy.retry_for
        delay, attempts = self.policy.first_delay, 0
        while True:
            attempts += 1
            try:
                self._attempt()
                return
            except OpsError:
                raise  # final: authentication and host keys
            except Exception as exc:
                if not _retryable(exc):
                    raise self._unreachable(exc, attempts, final=True) from exc
                if time.monotonic() + delay > deadline:
                    raise self._unreachable(exc, attempts, final=False) from exc
                progress(f"ssh {self.name}: attempt {attempts} failed "
                         f"({type(exc).__name__}: {error_reason(exc)}); "
                         f"retrying in {delay:.1f} s")
            time.sleep(delay)
            delay = min(delay * 2, self.policy.max_delay)

    def _attempt(self) -> None:
        """One connect; final failures come out as ops errors, retryable ones as they are."""
        try:
            self._connect_once()
        except paramiko.BadHostKeyException as exc:
            raise self.known_hosts.changed(self.target.host_key_name, exc,
                                           self.target.user_known_hosts) from exc
        except paramiko.AuthenticationException as exc:
            raise self._auth_error(exc) from exc

    def _connect_once(self) -> None:
        """One attempt: the socket (direct, via jump host or proxy command), then SSH."""
        self.close()
        timeout = self.target.connect_timeout or self.policy.connect_timeout
        sock = self._open_socket(timeout)
        client = paramiko.SSHClient()
        self.known_hosts.install(client, self.target.user_known_hosts)
        try:
            client.connect(self.target.hostname, port=self.target.port,
                           username=self.target.user, key_filename=self._key_files(),
                           look_for_keys=not self.target.identities_only, allow_agent=True,
                           timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                           sock=sock, transport_factory=_fast_transport)
        except BaseException:
            client.close()
            sock.close()
            raise
        client.get_transport().set_keepalive(self.policy.keepalive_s)
        self._client = client

    def _open_socket(self, timeout: float) -> socket.socket | paramiko.Channel:
        target = self.target
        if target.jump is not None:
            self._jump = SSHHost(target.jump, self.known_hosts, connect=_NO_RETRY)
            self._jump._attempt()
            dest = (target.hostname, target.port)
            return self._jump.transport.open_channel("direct-tcpip", dest, ("127.0.0.1", 0),
                                                     timeout=timeout)
        if target.proxy_command:
            return paramiko.ProxyCommand(target.proxy_command)
        return socket.create_connection((target.hostname, target.port), timeout=timeout)

    def _key_files(self) -> list[str] | None:
        files = [p for p in self.target.identity_files if Path(p).is_file()]
        return files or None

    def _exit_code(self, chan: paramiko.Channel) -> int:
        code: int = chan.exit_status
        if code == -1 and not chan.get_transport().is_active():
            self._discard()
            raise ConnectionLostError(f"connection to {self.name} dropped during the command",
                                      hint="run the command again; it reconnects")
        return code  # -1 on a live connection: killed by a signal (no exit status)

    # -- errors -----------------------------------------------------------------------------

    def _lost(self, exc: BaseException) -> HostError:
        """A command's connection failed: the next command connects afresh (paramiko may still
        call a dropped transport active), and the reason is never empty (EOFError has no text)."""
        if not isinstance(exc, paramiko.ChannelException):
            self._discard()
        return ConnectionLostError(
            f"connection to {self.name} failed during a command: {error_reason(exc)}",
            hint="run the command again; it reconnects")

    def _forget_if_dropped(self, exc: BaseException) -> None:
        """After an SFTP failure that is the connection's, not the file's (EOF, reset, a dead
        transport), the next call connects afresh instead of reusing a dead SFTP session."""
        dropped = isinstance(exc, (EOFError, ConnectionError, paramiko.SSHException))
        transport = self._client.get_transport() if self._client is not None else None
        if dropped or transport is None or not transport.is_active():
            self._discard()

    def _discard(self) -> None:
        """Forget the connection without failing: closing a dead one may raise."""
        with contextlib.suppress(*_io_errors()):
            self.close()
        self._sftp = self._client = self._jump = None

    def _auth_error(self, exc: paramiko.AuthenticationException) -> HostAuthError:
        keys = self._key_files() or ["(agent and ~/.ssh/id_* only)"]
        return HostAuthError(
            f"authentication as {self.target.user} on {self.target.describe()} failed: "
            f"{error_reason(exc)}",
            details=[f"keys offered: {', '.join(keys)}", *self._config_source()],
            hint="check User and IdentityFile for this host in ~/.ssh/config, "
                 "or load the key into your agent with ssh-add",
        )

    def _unreachable(self, exc: BaseException, attempts: int, *, final: bool) -> HostError:
        reason = f"{type(exc).__name__}: {exc}".rstrip(": ")  # the type says most here
        tried = "" if final else f" after {attempts} attempts over {self.policy.retry_for:g} s"
        return HostUnreachableError(f"cannot connect to {self.target.describe()}{tried}: {reason}",
                                    details=self._config_source(),
                                    hint="is the pod up and its sshd running? "
                                         "check the host's address and port")

    def _config_source(self) -> list[str]:
        """Where the address came from: the ssh config block of the alias, or nowhere."""
        target = self.target
        if target.source:
            return [f"{target.name}: Host block at {target.source}"]
        return [f"{target.name}: no Host block in ~/.ssh/config (or its Includes) names it"]


def _fast_transport(sock: socket.socket | paramiko.Channel,
                    **kwargs: object) -> paramiko.Transport:
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    offered = tuple(options.ciphers)
    options.ciphers = (tuple(c for c in _FAST_CIPHERS if c in offered)
                       + tuple(c for c in offered if c not in _FAST_CIPHERS))
    return transport


def _drain(chan: paramiko.Channel, out: bytearray, err: bytearray) -> None:
    while chan.recv_ready():
        out += chan.recv(_BUF)
    while chan.recv_stderr_ready():
        err += chan.recv_stderr(_BUF)


def _collect(chan: paramiko.Channel, deadline: float | None, what: str,
             host: str) -> tuple[bytes, bytes]:
    """stdout and stderr of a command, read together (neither can fill and stall the other),
    until the channel closes or, after the exit status, EOF arrives or a grace period ends."""
    out, err = bytearray(), bytearray()
    status_at: float | None = None
    while not chan.closed:
        _drain(chan, out, err)
        if chan.status_event.is_set():
            status_at = status_at or time.monotonic()
            if chan.eof_received or time.monotonic() - status_at > _EOF_GRACE_S:
                break
        if deadline is not None and time.monotonic() > deadline:
            raise HostError(f"{what} on {host} took longer than its time limit")
        if chan.eof_received:
            chan.status_event.wait(_POLL_S)
        else:
            select.select([chan], [], [], _POLL_S)
    _drain(chan, out, err)
    return bytes(out), bytes(err)


def open_host(spec: str, *, repo_root: Path, hosts: Mapping[str, HasAddress] | None = None,
              accept_new: bool = False, python: str = "python3",
              retry_for: float = ConnectPolicy._field_defaults["retry_for"],
              multiplex: bool = True) -> SSHHost:
    """An SSHHost for a host spec, trusting keys per the project's .ops/known_hosts policy;
    `multiplex=False` keeps every byte on paramiko (no shared OpenSSH master)."""
    policy = ConnectPolicy(retry_for=retry_for)
    config = (hosts or {}).get(spec)
    address = config.address if config is not None else None

    def resolve() -> tuple[SSHTarget, KnownHosts]:
        from ops.hosts.known_hosts import KnownHosts
        from ops.hosts.ssh_config import resolve_target

        return (resolve_target(spec, hosts=hosts),
                KnownHosts.for_repo(repo_root, accept_new=accept_new))

    warm = Mux.warm(spec, address, repo_root) if multiplex else None
    if warm is not None:  # nothing to parse, no paramiko: the master knows the way
        return SSHHost(None, None, connect=policy, python=python, name=spec, mux=warm,
                       resolve=resolve)
    target, known = resolve()
    host = SSHHost(target, known, connect=policy, python=python, name=spec,
                   multiplex=multiplex)
    if host._mux is not None:
        host._mux.remember_spec(spec, address, repo_root)
    return host
