"""Host-key policy: which server keys ops trusts, and the one file it ever writes.

- A key found in the user's ~/.ssh/known_hosts (or a UserKnownHostsFile) is trusted. Those
  files are read, never written.
- A key found in the project's own `.ops/known_hosts` is trusted; that file is where
  trust-on-first-use stores keys (`accept_new=True`, e.g. a pod `ops pod up` just created).
- An unknown key is refused unless accept_new; a changed key (the host is known with another
  key) is always refused, with the file and the command that removes the stale entry.
- OpenSSH's markers: a key on a `@revoked` line is refused for every host, even where another
  line trusts it and even with accept_new. A `@cert-authority` line is skipped with a warning
  on stderr: paramiko cannot check host certificates, so such a host needs its plain key on
  record (or --accept-new). A line ops cannot read is skipped with a warning, as OpenSSH does;
  none of them makes the file unusable.

The files are read here line by line (not with paramiko's loader, which raises on a marker
line); the project's file is rewritten only through runner.contract's atomic write (unique
temp file, fsync, rename), under a lock shared with appends.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import os
import shlex
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from ops.errors import HostError
from runner.contract import atomic_write_bytes

PROJECT_FILE = Path(".ops") / "known_hosts"


class UnknownHostKeyError(HostError):
    """The server's key is in no known_hosts file and trust-on-first-use was not asked for."""


class HostKeyChangedError(HostError):
    """The server presented a key other than the one on record: refused, always."""


class HostKeyRevokedError(HostError):
    """The server presented a key a `@revoked` line names: refused, always."""


_warned: set[str] = set()


def _warn(message: str) -> None:
    """A warning on stderr, once per process (every connection reads the same files)."""
    if message not in _warned:
        _warned.add(message)
        sys.stderr.write(f"warning: {message}\n")


@dataclass
class KnownHostsFile:
    """What one known_hosts file says: plain entries, revoked keys, lines it skipped."""

    entries: list[paramiko.hostkeys.HostKeyEntry] = field(default_factory=list)
    revoked: set[tuple[str, str]] = field(default_factory=set)  # (key type, base64)
    skipped: list[str] = field(default_factory=list)


def read_known_hosts(path: Path) -> KnownHostsFile:
    """Parse a known_hosts file as OpenSSH does, markers included; unreadable lines are
    listed in `skipped` (with file and line number) instead of failing the file."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise HostError(f"cannot read known_hosts file {path}: {exc.strerror or exc}") from exc
    parsed = KnownHostsFile()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{lineno}"
        if line.startswith("@"):
            _marker_line(line, where, parsed)
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, lineno)
        except (paramiko.hostkeys.InvalidHostKey, paramiko.SSHException, binascii.Error,
                ValueError, IndexError) as exc:
            parsed.skipped.append(f"{where}: unreadable line skipped ({type(exc).__name__})")
            continue
        if entry is None:  # a key type paramiko does not know, or too few fields
            parsed.skipped.append(f"{where}: line skipped (key type not supported)")
            continue
        parsed.entries.append(entry)
    return parsed


def _marker_line(line: str, where: str, parsed: KnownHostsFile) -> None:
    fields = line.split()
    if fields[0] == "@revoked" and len(fields) >= 4:
        parsed.revoked.add((fields[2], fields[3]))
    elif fields[0] == "@cert-authority":
        parsed.skipped.append(f"{where}: @cert-authority line skipped: ops cannot check host "
                              "certificates, so such a host needs its plain key in known_hosts "
                              "(or --accept-new)")
    else:
        parsed.skipped.append(f"{where}: {fields[0]} line skipped (unknown or malformed marker)")


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def default_user_files() -> tuple[Path, ...]:
    return (Path.home() / ".ssh" / "known_hosts",)


class KnownHosts:
    """The host-key policy of one ops command (shared by a connection and its jump hosts)."""

    def __init__(self, project_file: Path, *, accept_new: bool = False,
                 user_files: Sequence[Path] | None = None):
        self.project_file = project_file
        self.accept_new = accept_new
        self._user_files = tuple(user_files) if user_files is not None else None
        self.revoked: set[tuple[str, str]] = set()

    @classmethod
    def for_repo(cls, repo_root: Path, *, accept_new: bool = False) -> KnownHosts:
        return cls(repo_root / PROJECT_FILE, accept_new=accept_new)

    def user_files(self, extra: Sequence[str] = ()) -> tuple[Path, ...]:
        """Read-only files: a target's UserKnownHostsFile, else ~/.ssh/known_hosts."""
        if extra:
            return tuple(Path(p) for p in extra)
        return self._user_files if self._user_files is not None else default_user_files()

    def install(self, client: paramiko.SSHClient, extra_user_files: Sequence[str] = ()) -> None:
        """Load every trusted key into the client (which never saves them) and let this
        policy decide about a host it does not know or a key that is revoked."""
        files = [read_known_hosts(path)
                 for path in (*self.user_files(extra_user_files), self.project_file)
                 if path.is_file()]
        self.revoked = set().union(*(f.revoked for f in files))
        keys = client.get_host_keys()
        for parsed in files:
            for message in parsed.skipped:
                _warn(message)
            for entry in parsed.entries:
                if (entry.key.get_name(), entry.key.get_base64()) in self.revoked:
                    continue  # never "known": the policy below refuses it by name
                for name in entry.hostnames:
                    keys.add(name, entry.key.get_name(), entry.key)
        client.set_missing_host_key_policy(_Policy(self, extra_user_files))

    def is_revoked(self, key: paramiko.PKey) -> bool:
        return (key.get_name(), key.get_base64()) in self.revoked

    def refuse_revoked(self, host_key_name: str, key: paramiko.PKey) -> HostKeyRevokedError:
        return HostKeyRevokedError(
            f"host key of {host_key_name} is REVOKED: refusing to connect",
            details=[f"{key.get_name()} {fingerprint(key)} is on a @revoked line in "
                     f"{', '.join(str(p) for p in self.user_files())} or {self.project_file}"],
            hint="the host must be given a new key; ask whoever runs it")

    def remember(self, host_key_name: str, key: paramiko.PKey) -> None:
        """Append a key to the project's known_hosts (created 0600 in a 0700 .ops/)."""
        line = f"{host_key_name} {key.get_name()} {key.get_base64()}\n"
        with self._locked():
            fd = os.open(self.project_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())

    def forget(self, host_key_name: str) -> int:
        """Drop a host's entries from the project's file (e.g. after `ops pod rm`, so a new pod
        that gets the same address is not taken for an impostor); returns how many."""
        if not self.project_file.is_file():
            return 0
        with self._locked():
            lines = self.project_file.read_text().splitlines(keepends=True)
            kept = [line for line in lines if not _names_host(line, host_key_name)]
            if len(kept) != len(lines):
                atomic_write_bytes(self.project_file, "".join(kept).encode(), 0o600)
        return len(lines) - len(kept)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Two ops processes never interleave a rewrite with an append."""
        self.project_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = self.project_file.with_name(self.project_file.name + ".lock")
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def unknown(self, host_key_name: str, key: paramiko.PKey,
                extra_user_files: Sequence[str] = ()) -> UnknownHostKeyError:
        looked = [*self.user_files(extra_user_files), self.project_file]
        return UnknownHostKeyError(
            f"host key of {host_key_name} is not known: refusing to connect",
            details=[f"{key.get_name()} {fingerprint(key)}",
                     f"looked in: {', '.join(str(p) for p in looked)}"],
            hint=f"if this is the host you meant, re-run with --accept-new to trust this key "
                 f"(stored in {self.project_file}), or add it to ~/.ssh/known_hosts",
        )

    def changed(self, host_key_name: str, exc: paramiko.BadHostKeyException,
                extra_user_files: Sequence[str] = ()) -> HostError:
        """The error for a key that does not match the one on record, naming the file (or
        the revocation, when the key presented is revoked)."""
        if self.is_revoked(exc.key):
            return self.refuse_revoked(host_key_name, exc.key)
        files = [p for p in (*self.user_files(extra_user_files), self.project_file)
                 if _has_entry(p, host_key_name)]
        where = files[0] if files else self.project_file
        return HostKeyChangedError(
            f"host key of {host_key_name} has CHANGED: refusing to connect",
            details=[f"on record in {where}: {exc.expected_key.get_name()} "
                     f"{fingerprint(exc.expected_key)}",
                     f"presented now: {exc.key.get_name()} {fingerprint(exc.key)}",
                     "someone may be intercepting the connection, or the host was rebuilt"],
            hint=f"if you trust the new key, remove the stale entry with "
                 f"`ssh-keygen -R {shlex.quote(host_key_name)} -f {shlex.quote(str(where))}` "
                 f"and connect again (with --accept-new when it is in the project's file)",
        )


def _names_host(line: str, host_key_name: str) -> bool:
    fields = line.split()
    return bool(fields) and host_key_name in fields[0].split(",")


def _has_entry(path: Path, host_key_name: str) -> bool:
    if not path.is_file():
        return False
    keys = paramiko.HostKeys()
    try:
        for entry in read_known_hosts(path).entries:
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)
    except HostError:
        return False
    return keys.lookup(host_key_name) is not None


class _Policy(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]  # paramiko is untyped
    """Called by paramiko only for a host with no key on record in any loaded file."""

    def __init__(self, known: KnownHosts, extra_user_files: Sequence[str]):
        self.known = known
        self.extra_user_files = extra_user_files

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        if self.known.is_revoked(key):
            raise self.known.refuse_revoked(hostname, key)
        if not self.known.accept_new:
            raise self.known.unknown(hostname, key, self.extra_user_files)
        self.known.remember(hostname, key)
