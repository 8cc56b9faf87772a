"""Reading fetch's tar stream straight from a pipe: headers parsed here (ustar + pax, as the
runner's `pack` writes them), file bytes moved from the pipe into the file by the kernel
(`os.splice`), never through Python buffers.

This is the receiving end when the stream is an OpenSSH client's stdout (a pipe): a 500 MB
checkpoint then costs the laptop a few thousand splice calls instead of four copies of every
byte through tarfile and io buffers. Every check of the tarfile path stays the caller's
(fetch._receive_pipe): names, entry types, exact sizes, files placed only when whole.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ops.errors import HostError

BLOCK = 512
_CHUNK = 1 << 20
_MAX_PAX = 1 << 20  # an extended header larger than this is not one `pack` writes
_MAX_TRAILER = 1 << 20  # what may follow the end-of-archive marker (record padding)


def pipe_fd(stream: object) -> int | None:
    """The file descriptor behind ``stream`` when it is a pipe nothing was read from yet."""
    fileno = getattr(stream, "fileno", None)
    if fileno is None or not hasattr(os, "splice"):
        return None
    try:
        fd = fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return None
    except (OSError, ValueError):
        return None
    return fd if isinstance(fd, int) else None


@dataclass(frozen=True)
class Member:
    name: str
    type: bytes
    size: int
    mtime: float


class PipeTarReader:
    """The members of a tar stream on a pipe; call `copy_to` or `skip` for each one."""

    def __init__(self, fd: int):
        self.fd = fd
        self._left = 0  # data bytes of the current member not yet consumed
        self._pad = 0

    def _read_exact(self, count: int) -> bytes:
        parts, got = [], 0
        while got < count:
            data = os.read(self.fd, count - got)
            if not data:
                raise HostError("fetch: the stream ended in the middle of an entry")
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def members(self) -> Iterator[Member]:
        pax: dict[str, str] = {}
        while True:
            if self._left or self._pad:
                raise HostError("fetch: an entry's data was not consumed")  # a caller's bug
            block = self._read_exact(BLOCK)
            if block == bytes(BLOCK):
                self._drain_trailer()
                return
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError as exc:
                raise HostError(f"fetch: a malformed tar header in the stream: {exc}") from exc
            if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
                pax = self._pax(info.size) if info.type == tarfile.XHDTYPE else pax
                continue
            member = Member(pax.get("path", info.name), info.type,
                            _int(pax.get("size"), info.size), _float(pax.get("mtime"), info.mtime))
            pax = {}
            self._left, self._pad = member.size, -member.size % BLOCK
            yield member

    def copy_to(self, out_fd: int, advance: Callable[[int], None] | None = None) -> int:
        """The current member's bytes into ``out_fd`` (pipe -> file, in the kernel)."""
        moved = 0
        while self._left:
            try:
                count = os.splice(self.fd, out_fd, min(self._left, _CHUNK))
            except OSError:  # a filesystem that cannot splice: copy through a buffer
                data = os.read(self.fd, min(self._left, _CHUNK))
                count = os.write(out_fd, data) if data else 0
                if count != len(data):
                    raise
            if count == 0:
                raise HostError("fetch: the stream ended in the middle of a file")
            self._left -= count
            moved += count
            if advance is not None:
                advance(count)
        self._skip_pad()
        return moved

    def skip(self) -> None:
        while self._left:
            self._left -= len(self._read_exact(min(self._left, _CHUNK)))
        self._skip_pad()

    def _skip_pad(self) -> None:
        if self._pad:
            self._read_exact(self._pad)
            self._pad = 0

    def _pax(self, size: int) -> dict[str, str]:
        if size > _MAX_PAX:
            raise HostError("fetch: an oversized pax header in the stream")
        data = self._read_exact(size + (-size % BLOCK))[:size]
        records: dict[str, str] = {}
        while data:
            length_text = data.partition(b" ")[0]
            try:
                length = int(length_text)
            except ValueError:
                raise HostError("fetch: a malformed pax header in the stream") from None
            record = data[len(length_text) + 1:length]
            key, sep, value = record.rstrip(b"\n").partition(b"=")
            if length <= len(length_text) or not sep:
                raise HostError("fetch: a malformed pax header in the stream")
            records[key.decode("utf-8", "surrogateescape")] = value.decode(
                "utf-8", "surrogateescape")
            data = data[length:]
        return records

    def _drain_trailer(self) -> None:
        """Read what follows the end marker (zero padding) so the sender exits cleanly."""
        left = _MAX_TRAILER
        while left > 0:
            data = os.read(self.fd, min(left, 1 << 16))
            if not data:
                return
            if data.strip(b"\0"):
                raise HostError("fetch: data after the end of the tar stream")
            left -= len(data)
        raise HostError("fetch: the tar stream does not end")


def _int(text: str | None, default: int) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise HostError(f"fetch: a pax size {text[:30]!r} is not a number") from None
    if value < 0:
        raise HostError("fetch: a negative size in the stream")
    return value


def _float(text: str | None, default: float) -> float:
    if text is None:
        return default
    try:
        return float(text)
    except ValueError:
        raise HostError(f"fetch: a pax mtime {text[:30]!r} is not a number") from None
