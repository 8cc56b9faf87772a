"""What `ops run fetch` asks the host: a listing of a run dir, then one tar stream of the files
it still lacks. Both verbs are read-only; paths never leave the run dir."""

from __future__ import annotations

import os
import sys
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from runner import contract

SKIP_NAMES = (".claimed",)


def listing(run_dir: Path, with_checkpoints: bool) -> dict[str, Any]:
    """Every regular file under the run dir (relative path, size, mtime), and the run status."""
    from runner.status import run_status

    files = []
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if not path.is_file() or path.is_symlink() or path.name in SKIP_NAMES:
            continue
        if not with_checkpoints and rel.split("/", 1)[0] == contract.CHECKPOINTS_DIR:
            continue
        stat = path.stat()
        files.append({"path": rel, "size": stat.st_size, "mtime": stat.st_mtime})
    return {"run_id": run_dir.name, "files": files, "status": run_status(run_dir)}


def _safe(run_dir: Path, rel: str) -> Path:
    path = (run_dir / rel).resolve()
    if run_dir.resolve() not in path.parents:
        raise ValueError(f"path {rel!r} leaves the run dir")
    return path


def write_tar(run_dir: Path, paths: Iterable[str], out: BinaryIO) -> None:
    """Stream the named files as an uncompressed tar (the files are mostly logs and JSON;
    checkpoints do not compress). A file is sent at the size it has when it is opened."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel in paths:
            path = _safe(run_dir, rel)
            try:
                with open(path, "rb") as fh:
                    info = tar.gettarinfo(arcname=rel, fileobj=fh)
                    info.size = os.fstat(fh.fileno()).st_size
                    tar.addfile(info, _Exactly(fh, info.size, rel))
            except FileNotFoundError:
                continue  # vanished since the listing (a temp file): the next fetch sees it


class _Exactly:
    """Read exactly ``size`` bytes from a file that may still grow (an append-only log)."""

    def __init__(self, fh: BinaryIO, size: int, name: str):
        self._fh = fh
        self._left = size
        self._name = name

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if n < 0 else min(n, self._left)
        data = self._fh.read(want)
        if len(data) < want:  # truncated under us: break the stream, never send a fake tail
            raise OSError(f"{self._name} shrank while it was being sent")
        self._left -= len(data)
        return data


def pack_to_stdout(run_dir: Path, paths: list[str]) -> None:
    write_tar(run_dir, paths, sys.stdout.buffer)
    sys.stdout.buffer.flush()
