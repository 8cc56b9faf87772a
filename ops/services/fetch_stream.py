"""Reading fetch's answer: a framed JSON header (runner.pack's one-round-trip answer), then a
tar stream, parsed here (ustar + pax, as the runner's `pack` writes them).

The reader takes bytes in large reads (1 MiB at a time), so the headers and the data of small
files come out of one buffer: a run dir of 2,000 small files costs a few hundred reads, not
four per file. When the stream is a pipe (an OpenSSH client's stdout, a local process), the
bulk of a large file is moved from the pipe into the file by the kernel (`os.splice`), never
through Python buffers. Every check stays the caller's (fetch._receive): names, entry types,
files placed only when whole.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from ops.errors import HostError

BLOCK = 512
_CHUNK = 1 << 20
_SPLICE_MIN = 256 << 10  # what is left of a file beyond this goes pipe -> file in the kernel
_MAX_PAX = 1 << 20  # an extended header larger than this is not one `pack` writes
_MAX_TRAILER = 1 << 20  # what may follow the end-of-archive marker (record padding)
_MAX_FRAME_LINE = 64


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


class StreamEndedError(HostError):
    """The stream stopped part-way (a dropped connection, a killed sender)."""


@dataclass(frozen=True)
class Member:
    name: str
    type: bytes
    size: int
    mtime: float


class TarReader:
    """The frame and the members of fetch's stream; call `copy_to` or `skip` for each member.
    ``source`` is a pipe's file descriptor or a binary stream (paramiko's channel file)."""

    def __init__(self, source: int | BinaryIO):
        self._fd = source if isinstance(source, int) else None
        self._stream = None if isinstance(source, int) else source
        self._buf = bytearray()
        self._pos = 0
        self._splice_ok = self._fd is not None and hasattr(os, "splice")
        self._left = 0  # data bytes of the current member not yet consumed
        self._pad = 0

    # -- bytes --------------------------------------------------------------------------------

    def _more(self) -> bool:
        """Append the next read to the buffer; False at the end of the stream."""
        if self._pos:
            del self._buf[:self._pos]
            self._pos = 0
        if self._fd is not None:
            data = os.read(self._fd, _CHUNK)
        else:
            assert self._stream is not None  # noqa: S101 - one of the two is set
            data = self._stream.read(_CHUNK)
        self._buf += data
        return bool(data)

    def _buffered(self) -> int:
        return len(self._buf) - self._pos

    def read_exact(self, count: int, what: str = "an entry") -> bytes:
        while self._buffered() < count:
            if not self._more():
                raise StreamEndedError(f"fetch: the stream ended in the middle of {what}")
        data = bytes(self._buf[self._pos:self._pos + count])
        self._pos += count
        return data

    def read_line(self, limit: int, what: str) -> bytes | None:
        """Up to and including the next newline; None when the stream ends before any byte."""
        while True:
            end = self._buf.find(b"\n", self._pos, self._pos + limit)
            if end >= 0:
                return self.read_exact(end + 1 - self._pos, what)
            if self._buffered() >= limit:
                raise HostError(f"fetch: {what} is malformed")
            if not self._more():
                if self._buffered() == 0:
                    return None
                raise StreamEndedError(f"fetch: the stream ended in the middle of {what}")

    # -- tar ----------------------------------------------------------------------------------

    def members(self) -> Iterator[Member]:
        pax: dict[str, str] = {}
        while True:
            if self._left or self._pad:
                raise HostError("fetch: an entry's data was not consumed")  # a caller's bug
            block = self.read_exact(BLOCK)
            if block == bytes(BLOCK):
                self._drain_trailer()
                return
            info = _header(block)
            if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
                pax = self._pax(info.size) if info.type == tarfile.XHDTYPE else pax
                continue
            member = Member(pax.get("path", info.name), info.type,
                            _int(pax.get("size"), info.size), _float(pax.get("mtime"), info.mtime))
            pax = {}
            self._left, self._pad = member.size, -member.size % BLOCK
            yield member

    def copy_to(self, out_fd: int, advance: Callable[[int], None] | None = None) -> int:
        """The current member's bytes into ``out_fd``: what is buffered with one write, the
        bulk of a large file from the pipe by the kernel."""
        moved = 0
        while self._left:
            spliced = self._splice_ok and self._left >= _SPLICE_MIN
            if not self._buffered() and not spliced and not self._more():
                raise StreamEndedError("fetch: the stream ended in the middle of a file")
            if self._buffered():
                count = self._write_buffered(out_fd, min(self._left, self._buffered()))
            else:
                count = self._splice(out_fd)
            self._left -= count
            moved += count
            if advance is not None:
                advance(count)
        self._skip_pad()
        return moved

    def _write_buffered(self, out_fd: int, count: int) -> int:
        with memoryview(self._buf) as whole, whole[self._pos:self._pos + count] as part:
            done = 0
            while done < count:
                done += os.write(out_fd, part[done:])
        self._pos += count
        return count

    def _splice(self, out_fd: int) -> int:
        assert self._fd is not None  # noqa: S101 - only for pipes
        try:
            count = os.splice(self._fd, out_fd, min(self._left, _CHUNK))
        except OSError:  # a filesystem that cannot splice: through the buffer from now on
            self._splice_ok = False
            if not self._more():
                raise StreamEndedError("fetch: the stream ended in the middle of a file") from None
            return 0
        if count == 0:
            raise StreamEndedError("fetch: the stream ended in the middle of a file")
        return count

    def skip(self) -> None:
        while self._left:
            self._left -= len(self.read_exact(min(self._left, _CHUNK)))
        self._skip_pad()

    def _skip_pad(self) -> None:
        if self._pad:
            self.read_exact(self._pad)
            self._pad = 0

    def _pax(self, size: int) -> dict[str, str]:
        if size > _MAX_PAX:
            raise HostError("fetch: an oversized pax header in the stream")
        data = self.read_exact(size + (-size % BLOCK))[:size]
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
        while True:
            rest = self._buf[self._pos:]
            if rest.strip(b"\0"):
                raise HostError("fetch: data after the end of the tar stream")
            left -= len(rest)
            self._pos = len(self._buf)
            if left < 0:
                raise HostError("fetch: the tar stream does not end")
            if not self._more():
                return


_USTAR = b"ustar\x0000"


def _header(block: bytes) -> Member:
    """One 512-byte header. The headers `pack` writes (POSIX ustar, octal numbers) are read
    here directly, at a quarter of tarfile's cost; anything else goes to tarfile's parser."""
    if block[257:265] == _USTAR:
        try:
            size, mtime, checksum = (int(block[a:b].rstrip(b"\0 ") or b"0", 8)
                                     for a, b in ((124, 136), (136, 148), (148, 156)))
        except ValueError:
            pass  # not octal (GNU base-256, say): tarfile decides
        else:
            if checksum == sum(block) - sum(block[148:156]) + 8 * 0x20:
                name = block[:100].split(b"\0", 1)[0]
                prefix = block[345:500].split(b"\0", 1)[0]
                name = prefix + b"/" + name if prefix else name
                kind = block[156:157]
                if kind == tarfile.DIRTYPE or (kind == tarfile.AREGTYPE and name.endswith(b"/")):
                    kind, name = tarfile.DIRTYPE, name.rstrip(b"/")  # as tarfile names them
                return Member(name.decode("utf-8", "surrogateescape"), kind, size, float(mtime))
    try:
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError as exc:
        raise HostError(f"fetch: a malformed tar header in the stream: {exc}") from exc
    return Member(info.name, info.type, info.size, float(info.mtime))


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
