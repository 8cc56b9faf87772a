"""The known_hosts file a multiplexer master is started with: exactly what the project's
host-key policy (ops.hosts.known_hosts, the paramiko path) would accept for one host.

Each trusted key is written under the host's OpenSSH name (patterns and hashed names are
matched here, by the same paramiko lookup the paramiko path uses, so OpenSSH cannot match more
than paramiko would); every revoked key of every file is written as `@revoked`. Keys OpenSSH
would read from elsewhere (the user's or the system's files directly, certificates) are not
offered to it: the master is started with only this file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import paramiko

from ops.errors import HostError
from ops.hosts.known_hosts import _warn, read_known_hosts


def trusted_lines(sources: Sequence[Path], host_key_name: str) -> list[str]:
    files = []
    for path in sources:
        if path.is_file():
            try:
                files.append(read_known_hosts(path))
            except HostError:
                continue  # unreadable: the paramiko path reports it when it connects
    revoked: set[tuple[str, str]] = set().union(*(f.revoked for f in files))
    keys = paramiko.HostKeys()
    for parsed in files:
        for message in parsed.skipped:  # the same warnings as the paramiko path gives
            _warn(message)
        for entry in parsed.entries:
            if (entry.key.get_name(), entry.key.get_base64()) in revoked:
                continue
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)
    found = keys.lookup(host_key_name) or {}
    lines = [f"{host_key_name} {key_type} {key.get_base64()}"
             for key_type, key in sorted(found.items())]
    lines += [f"@revoked * {key_type} {b64}" for key_type, b64 in sorted(revoked)]
    return lines
