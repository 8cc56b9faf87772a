"""fetch's pipe reader (ops.services.fetch_stream): a tar stream from the runner's `pack`
format read off a real pipe, file bytes spliced into files; hostile streams are clean errors."""

from __future__ import annotations

import io
import os
import sys
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from ops.errors import HostError
from ops.services.fetch_stream import TarReader, pipe_fd


def pax_tar(entries: list[tuple[str, bytes]], *, kind: bytes = tarfile.REGTYPE) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mtime = kind, len(data), 1_700_000_000.25
            if kind == tarfile.SYMTYPE:
                info.size, info.linkname = 0, "/etc/passwd"
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


@contextmanager
def piped(data: bytes) -> Iterator[int]:
    """A real pipe with ``data`` written into it by a thread (bigger than a pipe buffer)."""
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with suppress(BrokenPipeError), os.fdopen(write_fd, "wb") as out:
            out.write(data)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        yield read_fd
    finally:
        os.close(read_fd)
        writer.join()


def read_all(fd: int, into: Path) -> dict[str, tuple[bytes, float]]:
    got = {}
    reader = TarReader(fd)
    for member in reader.members():
        path = into / member.name.replace("/", "_")
        out = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            assert reader.copy_to(out) == member.size
        finally:
            os.close(out)
        got[member.name] = (path.read_bytes(), member.mtime)
    return got


def test_files_arrive_whole_with_pax_names_and_mtimes(tmp_path: Path) -> None:
    big = os.urandom(3 * 2**20 + 7)
    long_name = "out/" + "d" * 150 + "/ünïcode.json"
    entries = [("summary.json", b'{"ok": true}\n'), (long_name, b"x" * 513), ("empty", b""),
               ("checkpoints/last.pt", big)]
    with piped(pax_tar(entries)) as fd:
        got = read_all(fd, tmp_path)
    assert {name: data for name, (data, _) in got.items()} == dict(entries)
    assert {mtime for _, mtime in got.values()} == {1_700_000_000.25}


def test_the_kind_of_each_entry_is_reported(tmp_path: Path) -> None:
    with piped(pax_tar([("link", b"")], kind=tarfile.SYMTYPE)) as fd:
        members = list(TarReader(fd).members())
    assert [(m.name, m.type) for m in members] == [("link", tarfile.SYMTYPE)]


@pytest.mark.parametrize("cut", [100, 512 + 700, 4096 + 10], ids=["header", "pax", "data"])
def test_a_truncated_stream_is_a_clean_error(tmp_path: Path, cut: int) -> None:
    data = pax_tar([("a.bin", os.urandom(20_000))])
    with piped(data[:cut]) as fd, pytest.raises(HostError, match="stream ended"):
        read_all(fd, tmp_path)


def test_garbage_is_refused(tmp_path: Path) -> None:
    with piped(b"\x01" * 512 + b"\0" * 1024) as fd, pytest.raises(HostError, match="malformed"):
        read_all(fd, tmp_path)
    trailing = pax_tar([("a", b"1")]) + b"surprise"
    with piped(trailing) as fd, pytest.raises(HostError, match="after the end"):
        read_all(fd, tmp_path)


def test_only_pipes_take_this_path(tmp_path: Path) -> None:
    regular = tmp_path / "f"
    regular.write_bytes(b"")
    with regular.open("rb") as fh:
        assert pipe_fd(fh) is None
    assert pipe_fd(io.BytesIO()) is None
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as fh, os.fdopen(write_fd, "wb"):
        assert pipe_fd(fh) == read_fd


def test_a_local_stream_with_a_chatty_stderr_does_not_stall() -> None:
    from ops.hosts.local import LocalHost

    chatty = [sys.executable, "-c",
              "import sys; sys.stderr.write('e' * 300000); sys.stdout.write('done')"]
    with LocalHost().stream(chatty) as out:
        assert out.read() == b"done"


# -- system calls: small files come out of one buffer on both ends ------------------------------

def _io_counts() -> tuple[int, int]:
    """This process's read and write system calls so far (Linux /proc/self/io)."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["syscr"]), int(fields["syscw"])


needs_proc_io = pytest.mark.skipif(not Path("/proc/self/io").exists(),
                                   reason="counts system calls through /proc/self/io (Linux)")


@needs_proc_io
def test_the_reader_takes_many_small_files_in_few_reads(tmp_path: Path) -> None:
    entries = [(f"out/s{i:03d}.json", os.urandom(200 + i)) for i in range(300)]
    with piped(pax_tar(entries)) as fd:
        before = _io_counts()[0]
        reader = TarReader(fd)
        for member in reader.members():
            out = os.open(tmp_path / member.name.replace("/", "_"), os.O_WRONLY | os.O_CREAT)
            try:
                reader.copy_to(out)
            finally:
                os.close(out)
        reads = _io_counts()[0] - before
    assert {name: (tmp_path / name.replace("/", "_")).read_bytes()
            for name, _ in entries} == dict(entries)
    assert reads <= 30, reads  # was at least three a file (header, pax, padding): 900+


@needs_proc_io
def test_the_runner_writes_headers_and_small_files_together(tmp_path: Path) -> None:
    from runner import pack

    run = tmp_path / "run"
    (run / "out").mkdir(parents=True)
    for i in range(300):
        (run / "out" / f"s{i:03d}.json").write_bytes(os.urandom(2000 + i))
    read_fd, write_fd = os.pipe()
    chunks: list[bytes] = []

    def drain() -> None:
        while data := os.read(read_fd, 1 << 16):
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        with os.fdopen(write_fd, "wb") as out:
            before = _io_counts()[1]
            pack.write_tar(run, [f"out/s{i:03d}.json" for i in range(300)], out)
            writes = _io_counts()[1] - before
    finally:
        reader.join()
        os.close(read_fd)
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks)), mode="r:") as tar:
        assert len(tar.getmembers()) == 300
    assert writes <= 10, writes  # tarfile's stream wrote a 10 KiB record at a time: 70+


HEADERS = {"short": ("summary.json", tarfile.REGTYPE, 13),
           "prefix": ("a/" * 60 + "deep.json", tarfile.REGTYPE, 0),
           "dir": ("out/dir", tarfile.DIRTYPE, 0), "huge": ("big.pt", tarfile.REGTYPE, 8**11 + 3)}
FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}


@pytest.mark.parametrize(("fmt", "entry"), [(f, e) for f in FORMATS for e in HEADERS
                                            if (f, e) != ("ustar", "huge")])  # cannot hold it
def test_the_quick_header_reader_agrees_with_tarfile(fmt: str, entry: str) -> None:
    from ops.services.fetch_stream import _header

    name, kind, size = HEADERS[entry]
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime = kind, size, 1_700_000_123
    block = info.tobuf(FORMATS[fmt], "utf-8", "surrogateescape")[-512:]  # the entry's header
    ours, theirs = _header(block), tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    assert (ours.name, ours.type, ours.size, ours.mtime) == \
        (theirs.name, theirs.type, theirs.size, float(theirs.mtime))
