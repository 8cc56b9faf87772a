"""What `ops run fetch` asks the host: a listing of a run dir, then one tar stream of the files
it still lacks. Both verbs are read-only; paths never leave the run dir.

Only regular files are ever sent: never a symbolic link, FIFO, socket or device, and never a
hard link to a file outside the run dir (a workload could `ln /etc/shadow-like-file out/x`; a
file whose link count is above 1 is sent only when every one of its links is in the run dir).
Files are opened component by component below the run dir without following links and without
blocking, so a link or FIFO swapped in after the listing is refused too.
"""

from __future__ import annotations

import os
import stat
import sys
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from runner import contract

SKIP_NAMES = (".claimed",)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = (os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
               | getattr(os, "O_NOCTTY", 0))
Inode = tuple[int, int]


def _walk(run_dir: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of every regular file below run_dir; links are not followed."""
    for root, dirs, names in os.walk(run_dir, followlinks=False):
        dirs.sort()
        base = Path(root)
        for name in sorted(names):
            try:
                info = os.lstat(base / name)
            except OSError:
                continue  # gone since the directory was read
            if stat.S_ISREG(info.st_mode):
                yield (base / name).relative_to(run_dir).as_posix(), info


def _inode_counts(run_dir: Path) -> Counter[Inode]:
    return Counter((info.st_dev, info.st_ino) for _, info in _walk(run_dir))


def _all_links_inside(info: os.stat_result, counts: Counter[Inode]) -> bool:
    """A file with one link, or whose every link is a file under the run dir."""
    return info.st_nlink <= 1 or counts[(info.st_dev, info.st_ino)] >= info.st_nlink


def listing(run_dir: Path, with_checkpoints: bool) -> dict[str, Any]:
    """Every sendable file under the run dir (relative path, size, mtime), and the run status."""
    from runner.status import run_status

    found = list(_walk(run_dir))
    counts = Counter((info.st_dev, info.st_ino) for _, info in found)
    files, skipped = [], 0
    for rel, info in found:
        if rel.rsplit("/", 1)[-1] in SKIP_NAMES:
            continue
        if not with_checkpoints and rel.split("/", 1)[0] == contract.CHECKPOINTS_DIR:
            continue
        if not _all_links_inside(info, counts):
            skipped += 1
            continue
        files.append({"path": rel, "size": info.st_size, "mtime": info.st_mtime})
    return {"run_id": run_dir.name, "files": files, "skipped_hard_links": skipped,
            "status": run_status(run_dir)}


def _parts(rel: str) -> list[str]:
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in rel:
        raise ValueError(f"path {rel!r} leaves the run dir")
    return parts


def open_inside(run_dir: Path, rel: str) -> BinaryIO | None:
    """Open run_dir/rel for reading if it is a regular file inside the run dir reached without
    any symbolic link; None when it is absent or anything else (a link, a FIFO, ...)."""
    parts = _parts(rel)
    fd = os.open(run_dir, _DIR_FLAGS)
    try:
        for part in parts[:-1]:
            below = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = below
        handle = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
    except OSError:  # absent, a link (ELOOP/ENOTDIR), unreadable: not sent
        return None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(handle).st_mode):
        os.close(handle)
        return None
    return os.fdopen(handle, "rb")


def write_tar(run_dir: Path, paths: Iterable[str], out: BinaryIO) -> None:
    """Stream the named files as an uncompressed tar (the files are mostly logs and JSON;
    checkpoints do not compress). A file is sent at the size it has when it is opened; one
    that is no longer a sendable regular file is left out (the next listing tells)."""
    counts: Counter[Inode] | None = None
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel in paths:
            fh = open_inside(run_dir, rel)
            if fh is None:
                continue
            with fh:
                info = os.fstat(fh.fileno())
                if info.st_nlink > 1:
                    counts = counts if counts is not None else _inode_counts(run_dir)
                    if not _all_links_inside(info, counts):
                        continue
                tar.addfile(_member(rel, info), _Exactly(fh, info.st_size, rel))


def _member(rel: str, info: os.stat_result) -> tarfile.TarInfo:
    """Always a plain file entry (tarfile's gettarinfo would make a second name of the same
    inode a hard-link entry, which the receiver refuses)."""
    member = tarfile.TarInfo(rel)
    member.type = tarfile.REGTYPE
    member.size = info.st_size
    member.mtime = info.st_mtime  # a float: PAX keeps the sub-second part
    member.mode = stat.S_IMODE(info.st_mode) & 0o755
    return member


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
