"""Writing a file on the local host the way SSHHost.write_file does over SFTP.

LocalHost binds this as its ``write_file`` method, so code that uploads bytes to a host (the
git bundle of a code sync, the runner tarball) runs unchanged against the local machine: the
file appears atomically through runner.contract's one atomic write (a unique temp file in the
same directory, created 0600 so no byte is ever readable by others, fsync, rename, fsync of the
directory; ``mode`` is applied before the rename), and missing parent directories are created
0700.
"""

from __future__ import annotations

import os
from pathlib import Path

from ops.errors import HostError
from runner.contract import atomic_write_bytes


def write_local_file(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically with permission bits ``mode``."""
    target = Path(os.path.expanduser(path))
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write_bytes(target, data, mode)
    except OSError as exc:
        raise HostError(f"cannot write {target} on local: {exc}") from exc
