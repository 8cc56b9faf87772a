"""Host-key policy: which server keys ops trusts, and the one file it ever writes.

- A key found in the user's ~/.ssh/known_hosts (or a UserKnownHostsFile) is trusted. Those
  files are read, never written.
- A key found in the project's own `.ops/known_hosts` is trusted; that file is where
  trust-on-first-use stores keys (`accept_new=True`, e.g. a pod `ops pod up` just created).
- An unknown key is refused unless accept_new; a changed key (the host is known with another
  key) is always refused, with the file and the command that removes the stale entry.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
from collections.abc import Sequence
from pathlib import Path

import paramiko

from ops.errors import HostError

PROJECT_FILE = Path(".ops") / "known_hosts"


class UnknownHostKeyError(HostError):
    """The server's key is in no known_hosts file and trust-on-first-use was not asked for."""


class HostKeyChangedError(HostError):
    """The server presented a key other than the one on record: refused, always."""


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

    @classmethod
    def for_repo(cls, repo_root: Path, *, accept_new: bool = False) -> KnownHosts:
        return cls(repo_root / PROJECT_FILE, accept_new=accept_new)

    def user_files(self, extra: Sequence[str] = ()) -> tuple[Path, ...]:
        """Read-only files: a target's UserKnownHostsFile, else ~/.ssh/known_hosts."""
        if extra:
            return tuple(Path(p) for p in extra)
        return self._user_files if self._user_files is not None else default_user_files()

    def install(self, client: paramiko.SSHClient, extra_user_files: Sequence[str] = ()) -> None:
        """Load every trusted key into the client (read-only: paramiko never saves "system"
        keys) and let this policy decide about a host it does not know."""
        for path in (*self.user_files(extra_user_files), self.project_file):
            if path.is_file():
                try:
                    client.load_system_host_keys(str(path))
                except (OSError, paramiko.SSHException) as exc:
                    raise HostError(f"cannot read known_hosts file {path}: {exc}") from exc
        client.set_missing_host_key_policy(_Policy(self, extra_user_files))

    def remember(self, host_key_name: str, key: paramiko.PKey) -> None:
        """Append a key to the project's known_hosts (created 0600 in a 0700 .ops/)."""
        self.project_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        line = f"{host_key_name} {key.get_name()} {key.get_base64()}\n"
        fd = os.open(self.project_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(line)

    def forget(self, host_key_name: str) -> int:
        """Drop a host's entries from the project's file (e.g. after `ops pod rm`, so a new pod
        that gets the same address is not taken for an impostor); returns how many."""
        if not self.project_file.is_file():
            return 0
        lines = self.project_file.read_text().splitlines(keepends=True)
        kept = [line for line in lines if not _names_host(line, host_key_name)]
        if len(kept) != len(lines):
            tmp = self.project_file.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.writelines(kept)
            os.replace(tmp, self.project_file)
        return len(lines) - len(kept)

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
                extra_user_files: Sequence[str] = ()) -> HostKeyChangedError:
        """The error for a key that does not match the one on record, naming the file."""
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
    try:
        return paramiko.HostKeys(str(path)).lookup(host_key_name) is not None
    except (OSError, paramiko.SSHException):
        return False


class _Policy(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]  # paramiko is untyped
    """Called by paramiko only for a host with no key on record in any loaded file."""

    def __init__(self, known: KnownHosts, extra_user_files: Sequence[str]):
        self.known = known
        self.extra_user_files = extra_user_files

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        if not self.known.accept_new:
            raise self.known.unknown(hostname, key, self.extra_user_files)
        self.known.remember(hostname, key)
