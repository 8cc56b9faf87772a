"""Writing a file on the local host the way SSHHost.write_file does over SFTP.

LocalHost binds this as its ``write_file`` method, so code that uploads bytes to a host (the
git bundle of a code sync, the runner tarball) runs unchanged against the local machine: the
file appears atomically (temp file in the same directory, then rename) with its mode set
before any byte is written, and missing parent directories are created 0700.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from ops.errors import HostError


def write_local_file(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically with permission bits ``mode``."""
    target = Path(os.path.expanduser(path))
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # os.open's mode is filtered by the umask
            fh.write(data)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise HostError(f"cannot write {target} on local: {exc}") from exc
