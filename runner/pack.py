"""What `ops run fetch` asks the host: which files a run dir holds, and a tar stream of those
the laptop lacks. Read-only; paths never leave the run dir.

Only regular files are ever sent: never a symbolic link, FIFO, socket or device, and never a
hard link to a file outside the run dir (a workload could `ln /etc/shadow-like-file out/x`; a
file whose link count is above 1 is sent only when every one of its links is in the run dir).
Files are opened component by component below the run dir without following links and without
blocking, so a link or FIFO swapped in after the listing is refused too.

`python -m runner.pack RUN_DIR` is fetch in one round trip: the laptop's request on stdin
(which files it already has), then on stdout one framed JSON answer (the listing and the run's
status, or an error) followed by the tar of the files the laptop lacks. It imports only what
that needs (no runner.cli). The tar is written the cheap way: headers and small files gathered
into one write, large files moved by the kernel (sendfile), so the host spends its CPU on the
SSH encryption, not on copying bytes through Python.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
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
FRAME_MAGIC = b"OPS-FETCH/1 "  # then the JSON answer's length in decimal, a newline, the JSON
MAX_FRAME = 64 << 20
_SMALL = 256 << 10  # files up to this size are read into the write buffer
_FLUSH_AT = 1 << 20
_RECORD = tarfile.RECORDSIZE
_PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux; Python 3.10+ names it
MTIME_SLACK = 1e-3  # the laptop's rule too: a file whose size and mtime match is current


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
    files, skipped, _counts = _sendable(run_dir, with_checkpoints)
    return {"run_id": run_dir.name, "files": files, "skipped_hard_links": skipped,
            "status": _run_status(run_dir)}


def _run_status(run_dir: Path) -> dict[str, Any]:
    from runner.status import run_status

    return run_status(run_dir)


def _sendable(run_dir: Path,
              with_checkpoints: bool) -> tuple[list[dict[str, Any]], int, Counter[Inode]]:
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
    return files, skipped, counts


def _parts(rel: str) -> list[str]:
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in rel:
        raise ValueError(f"path {rel!r} leaves the run dir")
    return parts


class _Opener:
    """Opens files below a run dir component by component, never following a link; the
    directories on the way stay open (one open per directory, not one per file and level)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self._dirs: dict[tuple[str, ...], int | None] = {}

    def _dir(self, parts: tuple[str, ...]) -> int | None:
        if parts in self._dirs:
            return self._dirs[parts]
        fd: int | None
        try:
            if not parts:
                fd = os.open(self.run_dir, _DIR_FLAGS)
            else:
                parent = self._dir(parts[:-1])
                fd = None if parent is None else os.open(parts[-1], _DIR_FLAGS, dir_fd=parent)
        except OSError:  # absent, or a link (ELOOP/ENOTDIR): nothing below it is sent
            fd = None
        self._dirs[parts] = fd
        return fd

    def open(self, rel: str) -> int | None:
        """A read-only fd of run_dir/rel when it is a regular file reached without any link;
        None when it is absent or anything else (a link, a FIFO, ...)."""
        parts = _parts(rel)
        parent = self._dir(tuple(parts[:-1]))
        if parent is None:
            return None
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=parent)
        except OSError:
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd

    def close(self) -> None:
        for fd in self._dirs.values():
            if fd is not None:
                os.close(fd)
        self._dirs.clear()


def open_inside(run_dir: Path, rel: str) -> BinaryIO | None:
    """Open run_dir/rel for reading if it is a regular file inside the run dir reached without
    any symbolic link; None when it is absent or anything else (a link, a FIFO, ...)."""
    opener = _Opener(run_dir)
    try:
        fd = opener.open(rel)
    finally:
        opener.close()
    return None if fd is None else os.fdopen(fd, "rb")


class _TarOut:
    """An uncompressed PAX tar written to a file descriptor (or, for tests, any binary stream):
    headers and small files gathered in one buffer and written together, large files sent by
    the kernel. The files are mostly logs and JSON; checkpoints do not compress."""

    def __init__(self, out: BinaryIO):
        self._out = out
        self._fd = _fileno(out)
        self._buf = bytearray()
        self.written = 0

    def add(self, rel: str, fd: int, info: os.stat_result) -> None:
        """One entry: the header, then exactly ``info.st_size`` bytes (a file that shrank
        since its fstat breaks the stream: never a fake tail)."""
        self._put(_member(rel, info).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        size = info.st_size
        if size <= _SMALL or self._fd is None:
            self._copy_through(fd, size, rel)
        else:
            self.flush()
            self._sendfile(fd, size, rel)
        self._put(bytes(-size % tarfile.BLOCKSIZE))

    def _copy_through(self, fd: int, size: int, rel: str) -> None:
        left = size
        while left:
            data = os.read(fd, min(left, _FLUSH_AT))
            if not data:
                raise OSError(f"{rel} shrank while it was being sent")
            self._put(data)
            left -= len(data)

    def _sendfile(self, fd: int, size: int, rel: str) -> None:
        assert self._fd is not None  # noqa: S101 - only called with an fd
        offset = 0
        while offset < size:
            try:
                sent = os.sendfile(self._fd, fd, offset, size - offset)
            except OSError as exc:  # an output the kernel cannot send to: through a buffer
                if offset or exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSOCK):
                    raise
                os.lseek(fd, 0, os.SEEK_SET)
                self._fd = None
                self._copy_through(fd, size, rel)
                return
            if sent == 0:
                raise OSError(f"{rel} shrank while it was being sent")
            offset += sent
        self.written += size

    def _put(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= _FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        self.written += len(self._buf)
        if self._fd is None:
            self._out.write(self._buf)
        else:
            with memoryview(self._buf) as whole:
                done = 0
                while done < len(whole):
                    done += os.write(self._fd, whole[done:])
        self._buf.clear()

    def close(self) -> None:
        """The end-of-archive marker (two zero blocks), padded to a whole record."""
        end = self.written + len(self._buf) + 2 * tarfile.BLOCKSIZE
        self._put(bytes(2 * tarfile.BLOCKSIZE + (-end % _RECORD)))
        self.flush()
        if self._fd is None:
            self._out.flush()


def _fileno(out: BinaryIO) -> int | None:
    """The descriptor behind ``out`` (flushed first), or None for an in-memory stream."""
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    out.flush()
    return fd


def write_tar(run_dir: Path, paths: Iterable[str], out: BinaryIO,
              counts: Counter[Inode] | None = None) -> None:
    """Stream the named files as a tar. A file is sent at the size it has when it is opened;
    one that is no longer a sendable regular file is left out (the next listing tells)."""
    tar, opener = _TarOut(out), _Opener(run_dir)
    try:
        for rel in paths:
            fd = opener.open(rel)
            if fd is None:
                continue
            try:
                info = os.fstat(fd)
                if info.st_nlink > 1:
                    counts = counts if counts is not None else _inode_counts(run_dir)
                    if not _all_links_inside(info, counts):
                        continue
                tar.add(rel, fd, info)
            finally:
                os.close(fd)
        tar.close()
    finally:
        opener.close()


def _member(rel: str, info: os.stat_result) -> tarfile.TarInfo:
    """Always a plain file entry (tarfile's gettarinfo would make a second name of the same
    inode a hard-link entry, which the receiver refuses)."""
    member = tarfile.TarInfo(rel)
    member.type = tarfile.REGTYPE
    member.size = info.st_size
    member.mtime = info.st_mtime  # a float: PAX keeps the sub-second part
    member.mode = stat.S_IMODE(info.st_mode) & 0o755
    return member


def pack_to_stdout(run_dir: Path, paths: list[str]) -> None:
    """The `pack` verb (a tar of the files named on stdin)."""
    widen_pipe(sys.stdout.fileno())
    write_tar(run_dir, paths, sys.stdout.buffer)


def widen_pipe(fd: int) -> None:
    """A 1 MiB pipe instead of 64 KiB: 16 times fewer hand-overs between writer and reader
    (sshd here, the ssh client and ops on the laptop), each of which waits for a CPU on a
    loaded machine. Not a pipe, or a limit below 1 MiB: left as it is."""
    with contextlib.suppress(OSError):  # a limit below 1 MiB: the default size works too
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)


# -- fetch in one round trip: `python -m runner.pack RUN_DIR` ---------------------------------

def _current(have: Any) -> dict[str, tuple[int, float]]:
    """The laptop's files from its request: {path: (size, mtime)}; anything malformed is
    treated as absent (the file is then simply sent)."""
    current: dict[str, tuple[int, float]] = {}
    if not isinstance(have, list):
        return current
    for item in have:
        if (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                and isinstance(item[1], int) and isinstance(item[2], (int, float))):
            current[item[0]] = (item[1], float(item[2]))
    return current


def wanted(files: list[dict[str, Any]], have: Any) -> list[str]:
    """The listed files the laptop lacks, or holds at another size or mtime."""
    current = _current(have)
    out = []
    for entry in files:
        mine = current.get(entry["path"])
        if mine is None or mine[0] != entry["size"] or abs(mine[1] - entry["mtime"]) > MTIME_SLACK:
            out.append(entry["path"])
    return out


def frame(doc: dict[str, Any]) -> bytes:
    body = json.dumps(doc, separators=(",", ":")).encode()
    return FRAME_MAGIC + str(len(body)).encode() + b"\n" + body


def answer(run_dir: Path, request: Any, out: BinaryIO) -> int:
    """The framed answer to one fetch request, then the tar of what the laptop lacks."""
    if not isinstance(request, dict):
        return _fail(out, "usage", "fetch: the request is not a JSON object")
    if not (run_dir / contract.SPEC).exists():
        return _fail(out, "not_found", f"no run at {run_dir}")
    files, skipped, counts = _sendable(run_dir, request.get("with_checkpoints") is True)
    doc = {"schema": "ops.runner_fetch/1", "run_id": run_dir.name, "files": files,
           "skipped_hard_links": skipped, "status": _run_status(run_dir)}
    out.write(frame(doc))
    write_tar(run_dir, wanted(files, request.get("have")), out, counts)
    return 0


def _fail(out: BinaryIO, kind: str, message: str) -> int:
    out.write(frame({"error": {"kind": kind, "message": message}}))
    out.flush()
    return {"usage": 2, "not_found": 3}.get(kind, 1)


def main(argv: list[str]) -> int:
    if not contract.from_expected_build():
        sys.stderr.write(f"No module named runner in {os.environ.get('OPS_RUNNER_DIR')}\n")
        return 127
    out = sys.stdout.buffer
    if len(argv) != 1:
        return _fail(out, "usage", "usage: python -m runner.pack RUN_DIR < request.json")
    try:
        request = json.loads(sys.stdin.buffer.read(MAX_FRAME))
    except (ValueError, RecursionError):
        return _fail(out, "usage", "fetch: stdin is not a JSON request")
    widen_pipe(out.fileno())
    return answer(Path(argv[0]), request, out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
