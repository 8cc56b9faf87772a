"""Resolving a host spec into an `SSHTarget`: where to connect, as whom, with which keys.

A spec is a host named in project.json `hosts` (its `address` is resolved in turn), an alias
from ~/.ssh/config, or `[user@]host[:port]` (also `ssh://user@host:port` and `[v6addr]:port`).
~/.ssh/config applies to the host part as OpenSSH would apply it: explicit user and port in the
spec win over User and Port. Supported keywords: HostName, User, Port, IdentityFile,
IdentitiesOnly, ProxyJump (a chain `a,b` is a through b through a), ProxyCommand,
UserKnownHostsFile (read-only, like ~/.ssh/known_hosts) and ConnectTimeout.

`Include` is followed as OpenSSH follows it (paramiko's parser ignores it): each argument is a
glob, `~` is the home directory, a relative path is relative to ~/.ssh, the matches are read in
sorted order where the Include line stands, and recursion stops at 16 levels with an error. An
Include inside a Host or Match block applies only to that block: after the included lines the
enclosing block resumes. Each target remembers the file and line of the Host block that named
its alias (`SSHTarget.source`), which connection errors show.
"""

from __future__ import annotations

import fnmatch
import getpass
import glob
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import paramiko

from ops.errors import UsageError

DEFAULT_PORT = 22
MAX_JUMP_DEPTH = 8
MAX_INCLUDE_DEPTH = 16  # OpenSSH's READCONF_MAX_DEPTH
_KEYWORD_RE = re.compile(r"^\s*([A-Za-z]+)(?:\s*=\s*|\s+)(.*?)\s*$")
_SPEC_RE = re.compile(
    r"^(?:ssh://)?(?:(?P<user>[^@\s/]+)@)?"
    r"(?:\[(?P<v6>[0-9A-Fa-f:.%]+)\]|(?P<host>[A-Za-z0-9_.-]+))"
    r"(?::(?P<port>\d{1,5}))?/?$"
)


class HasAddress(Protocol):
    """What resolve_target needs of a project.json host (HostConfig)."""

    @property
    def address(self) -> str: ...


@dataclass(frozen=True)
class SSHTarget:
    """A resolved SSH destination, possibly reached through a jump host or a proxy command."""

    name: str
    hostname: str
    port: int = DEFAULT_PORT
    user: str = ""
    identity_files: tuple[str, ...] = ()
    identities_only: bool = False
    jump: SSHTarget | None = None
    proxy_command: str | None = None
    user_known_hosts: tuple[str, ...] = ()
    connect_timeout: float | None = None
    source: str | None = None
    """`FILE:LINE` of the ~/.ssh/config Host block that named this alias, if one did."""

    @property
    def host_key_name(self) -> str:
        """The name of this host in a known_hosts file (OpenSSH's spelling)."""
        if self.port == DEFAULT_PORT:
            return self.hostname
        return f"[{self.hostname}]:{self.port}"

    @property
    def address(self) -> str:
        """user@hostname:port, for messages."""
        return f"{self.user}@{self.hostname}:{self.port}"

    def describe(self) -> str:
        """The address with how it is reached, for messages."""
        if self.jump is not None:
            return f"{self.address} via {self.jump.describe()}"
        if self.proxy_command:
            return f"{self.address} via ProxyCommand"
        return self.address


@dataclass(frozen=True)
class _Spec:
    user: str | None
    host: str
    port: int | None


def parse_spec(spec: str) -> _Spec:
    """Split `[ssh://][user@]host[:port]`; raise UsageError for anything else."""
    match = _SPEC_RE.match(spec.strip())
    if match is None:
        raise UsageError(f"not a host spec: {spec!r}",
                         hint="use a host from project.json, an alias from ~/.ssh/config, "
                              "or user@host[:port]")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"port out of range in host spec {spec!r}")
    return _Spec(match["user"], match["v6"] or match["host"], port)


def default_config_path() -> Path:
    return Path.home() / ".ssh" / "config"


class SSHConfigFile(paramiko.SSHConfig):  # type: ignore[misc]  # paramiko is untyped
    """paramiko's config, parsed from text with every Include inlined, plus where each Host
    line came from."""

    def __init__(self) -> None:
        super().__init__()
        self.origins: list[tuple[tuple[str, ...], str]] = []

    def source_of(self, alias: str) -> str | None:
        """FILE:LINE of the first Host line naming `alias` literally, else of the first one
        whose pattern (other than a bare `*`) matches it."""
        literal = [where for patterns, where in self.origins if alias in patterns]
        if literal:
            return literal[0]
        for patterns, where in self.origins:
            if _host_matches(patterns, alias):
                return where
        return None


def _host_matches(patterns: tuple[str, ...], alias: str) -> bool:
    if any(p.startswith("!") and fnmatch.fnmatchcase(alias, p[1:]) for p in patterns):
        return False
    return any(p != "*" and not p.startswith("!") and fnmatch.fnmatchcase(alias, p)
               for p in patterns)


@dataclass
class _Inliner:
    """Reads a config file with its Includes inlined (see the module docstring)."""

    ssh_dir: Path
    lines: list[str] = field(default_factory=list)
    origins: list[tuple[tuple[str, ...], str]] = field(default_factory=list)

    def read(self, path: Path, depth: int) -> None:
        if depth > MAX_INCLUDE_DEPTH:
            raise UsageError(f"ssh config: Include nested deeper than {MAX_INCLUDE_DEPTH} "
                             f"levels at {path}", hint="look for an Include loop")
        try:
            text = path.read_text(errors="replace")
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
        header = "Host *"  # the block in force: restored after an Include's lines
        for lineno, line in enumerate(text.splitlines(), 1):
            match = _KEYWORD_RE.match(line)
            keyword = match[1].lower() if match else ""
            if keyword == "include" and match is not None:
                self._include(match[2], f"{path}:{lineno}", depth)
                self.lines.append(header)
                continue
            if keyword in ("host", "match") and match is not None:
                header = line.strip()
                if keyword == "host":
                    self.origins.append((tuple(_split(match[2], path, lineno)),
                                         f"{path}:{lineno}"))
            self.lines.append(line)

    def _include(self, value: str, where: str, depth: int) -> None:
        for arg in _split(value, Path(where), 0):
            # a relative pattern is relative to ~/.ssh; join keeps an absolute one as it is
            pattern = os.path.join(self.ssh_dir, os.path.expanduser(arg))
            for name in sorted(glob.glob(pattern)):
                if os.path.isfile(name):
                    self.read(Path(name), depth + 1)


def _split(value: str, path: Path, lineno: int) -> list[str]:
    try:
        return shlex.split(value, comments=False)
    except ValueError as exc:
        where = f"{path}:{lineno}" if lineno else str(path)
        raise UsageError(f"ssh config: cannot parse {value!r} at {where}: {exc}") from None


def load_ssh_config(path: Path | None = None) -> SSHConfigFile:
    """~/.ssh/config (of $HOME, so tests can pin it) with its Includes, or an empty config
    when there is none."""
    path = default_config_path() if path is None else path
    if not path.is_file():
        return SSHConfigFile()
    inliner = _Inliner(Path.home() / ".ssh")
    inliner.read(path, 0)
    try:
        config: SSHConfigFile = SSHConfigFile.from_text("\n".join(inliner.lines) + "\n")
    except paramiko.ConfigParseError as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    config.origins = inliner.origins
    return config


def resolve_target(spec: str, *, hosts: Mapping[str, HasAddress] | None = None,
                   config: paramiko.SSHConfig | None = None) -> SSHTarget:
    """The SSH target a host spec names (see the module docstring for the forms)."""
    config = load_ssh_config() if config is None else config
    if hosts and spec in hosts:
        return replace(_resolve(hosts[spec].address, config, 0), name=spec)
    return _resolve(spec, config, 0)


def _resolve(spec: str, config: paramiko.SSHConfig, depth: int) -> SSHTarget:
    if depth > MAX_JUMP_DEPTH:
        raise UsageError(f"ProxyJump chain deeper than {MAX_JUMP_DEPTH} at {spec!r}",
                         hint="look for a ProxyJump loop in ~/.ssh/config")
    parsed = parse_spec(spec)
    opts = _lookup(config, parsed.host)
    jump_spec = _option(opts, "proxyjump")
    return SSHTarget(
        name=spec,
        hostname=str(opts.get("hostname") or parsed.host),
        port=parsed.port or _int_option(opts, "port", spec) or DEFAULT_PORT,
        user=parsed.user or str(opts.get("user") or "") or getpass.getuser(),
        identity_files=tuple(os.path.expanduser(p) for p in opts.get("identityfile", [])),
        identities_only=str(opts.get("identitiesonly", "no")).lower() == "yes",
        jump=_resolve_jumps(jump_spec, config, depth) if jump_spec else None,
        proxy_command=None if jump_spec else _option(opts, "proxycommand"),
        user_known_hosts=tuple(os.path.expanduser(p) for p in
                               str(opts.get("userknownhostsfile", "")).split()),
        connect_timeout=_int_option(opts, "connecttimeout", spec),
        source=config.source_of(parsed.host) if isinstance(config, SSHConfigFile) else None,
    )


def _resolve_jumps(value: str, config: paramiko.SSHConfig, depth: int) -> SSHTarget:
    """`a,b`: the first hop uses its own config; each later hop is reached through the one
    before it (as OpenSSH's -J does)."""
    previous: SSHTarget | None = None
    for hop in (h.strip() for h in value.split(",")):
        target = _resolve(hop, config, depth + 1)
        if previous is not None:
            target = replace(target, jump=previous, proxy_command=None)
        previous = target
    if previous is None:
        raise UsageError(f"empty ProxyJump value {value!r}")
    return previous


def _lookup(config: paramiko.SSHConfig, host: str) -> paramiko.SSHConfigDict:
    try:
        return config.lookup(host)
    except paramiko.ssh_exception.SSHException as exc:
        raise UsageError(f"~/.ssh/config: cannot evaluate the entry for {host}: {exc}") from exc


def _option(opts: Mapping[str, object], key: str) -> str | None:
    value = opts.get(key)
    if value is None or str(value).lower() == "none":
        return None
    return str(value)


def _int_option(opts: Mapping[str, object], key: str, spec: str) -> int | None:
    value = opts.get(key)
    if value is None:
        return None
    try:
        return int(str(value))
    except ValueError:
        raise UsageError(f"~/.ssh/config: {key} for {spec!r} is not a number: {value!r}") from None
