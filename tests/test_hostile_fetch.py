"""`ops run fetch` against a hostile run dir and a hostile host.

The run dir is written by a workload we do not control: a hard link to a file outside it, a
symbolic link, a FIFO must never reach the laptop (the host leaves them out, the laptop refuses
them too). The host's listing is untrusted as well: anything malformed is a clean HostError.
A fetch, finished or failed, leaves no empty `.ops/partial/` directories behind.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from ops.errors import ExitCode, HostError, OpsError
from ops.hosts.base import ExecResult, call_runner
from ops.hosts.local import LocalHost
from ops.services import fetch
from ops.services.runs import Target
from ops.services.spec import HostPaths
from runner import pack

SECRET = b"outside the run dir\n"


def _target(root: Path) -> Target:
    return Target(LocalHost(), HostPaths(str(root), str(root / "home")))


@pytest.fixture
def hostile_run(tmp_path: Path) -> Path:
    """A run dir holding good files and every kind of thing that must not be sent."""
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    run = tmp_path / "runs" / "hostile-1"
    (run / "out" / "deep" / "er").mkdir(parents=True)
    (run / "spec.json").write_text(json.dumps({"schema": "ops.spec/1", "run_id": run.name}))
    (run / "stdout.log").write_bytes(b"hello\n")
    (run / "out" / "deep" / "er" / "ok.txt").write_bytes(b"fine\n")
    os.link(secret, run / "out" / "leak.txt")  # a hard link out of the run dir
    (run / "out" / "twin_a.txt").write_bytes(b"twin\n")
    os.link(run / "out" / "twin_a.txt", run / "out" / "twin_b.txt")  # both links inside
    (run / "out" / "sym.txt").symlink_to(secret)
    (run / "out" / "dirlink").symlink_to(tmp_path)
    os.mkfifo(run / "out" / "pipe")
    return run


def _local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] != ".ops"}


EXPECTED = {"spec.json": b'{"schema": "ops.spec/1", "run_id": "hostile-1"}',
            "stdout.log": b"hello\n", "out/deep/er/ok.txt": b"fine\n",
            "out/twin_a.txt": b"twin\n", "out/twin_b.txt": b"twin\n"}


def test_only_regular_files_inside_the_run_dir_are_fetched(hostile_run: Path,
                                                           tmp_path: Path) -> None:
    dest = tmp_path / "art"
    result = fetch.fetch(_target(hostile_run.parent), "hostile-1", dest)
    assert _local_files(dest / "hostile-1") == EXPECTED
    assert sorted(result.files_fetched) == sorted(EXPECTED)
    assert SECRET not in b"".join(p.read_bytes() for p in dest.rglob("*") if p.is_file())


def test_the_host_leaves_them_out_even_when_asked_for_them(hostile_run: Path) -> None:
    out = io.BytesIO()
    asked = ["out/leak.txt", "out/sym.txt", "out/pipe", "out/dirlink/secret.txt",
             "stdout.log", "out/twin_b.txt", "missing.txt"]
    pack.write_tar(hostile_run, asked, out)
    out.seek(0)
    with tarfile.open(fileobj=out, mode="r|") as tar:
        members = [(m.name, m.type) for m in tar]
    assert members == [("stdout.log", tarfile.REGTYPE), ("out/twin_b.txt", tarfile.REGTYPE)]


def test_the_listing_leaves_out_links_fifos_and_outside_hard_links(hostile_run: Path) -> None:
    listed = pack.listing(hostile_run, with_checkpoints=True)
    assert sorted(f["path"] for f in listed["files"]) == sorted(EXPECTED)
    assert listed["skipped_hard_links"] == 1


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../b", "", "a//b"])
def test_the_host_refuses_a_path_out_of_the_run_dir(hostile_run: Path, path: str) -> None:
    with pytest.raises(ValueError, match="leaves the run dir"):
        pack.write_tar(hostile_run, [path], io.BytesIO())


# -- the laptop refuses too ---------------------------------------------------------------------

def _tar_with(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(member, io.BytesIO(data) if data else None)
    return out.getvalue()


@pytest.mark.parametrize("kind", [tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.FIFOTYPE,
                                  tarfile.DIRTYPE, tarfile.CHRTYPE],
                         ids=["hard-link", "symlink", "fifo", "dir", "device"])
def test_the_laptop_refuses_anything_but_a_regular_file(tmp_path: Path, kind: bytes) -> None:
    member = tarfile.TarInfo("out/x")
    member.type = kind
    member.linkname = "/etc/passwd"
    stream = io.BytesIO(_tar_with(member))
    result = fetch.FetchResult("r", tmp_path / "r")
    with pytest.raises(HostError, match="unexpected entry 'out/x'"):
        fetch._receive(stream, tmp_path / "r", {"out/x": {}}, result, None)
    assert not (tmp_path / "r" / "out" / "x").exists()


# -- a hostile listing --------------------------------------------------------------------------

class HostileHost(LocalHost):
    """The local host, except that the runner's fetch answer carries a listing a real runner
    never writes (a stand-in for a compromised host: the real runner cannot produce these),
    followed by a real tar of the paths it names."""

    def __init__(self, listing: Any):
        super().__init__()
        self.listing = listing

    @contextmanager
    def stream(self, argv: Sequence[str], *, input_bytes: bytes = b"") -> Iterator[BinaryIO]:
        files = self.listing.get("files") if isinstance(self.listing, dict) else None
        paths = [f["path"] for f in files or [] if isinstance(f, dict)
                 and isinstance(f.get("path"), str)]
        out = io.BytesIO()
        out.write(pack.frame(self.listing))
        with suppress(ValueError):  # a path out of the run dir: the real runner refuses it
            pack.write_tar(Path(argv[-1]), paths, out)
        out.seek(0)
        yield out


GOOD = {"path": "stdout.log", "size": 6, "mtime": 1.0}


@pytest.mark.parametrize(("listing", "message"), [
    ({"files": None, "status": {}}, "'files' is missing, not a list"),
    ({"status": {}}, "'files' is missing, not a list"),
    ({"files": {"a": 1}}, "'files' is a dict, not a list"),
    ([1, 2], "'files' is missing, not a list"),  # not even an object
    ({"files": [None]}, "files[0] is missing, not an object"),
    ({"files": ["stdout.log"]}, "files[0] is a str, not an object"),
    ({"files": [{**GOOD, "size": "abc"}]}, "files[0].size 'abc' is not a byte count"),
    ({"files": [{**GOOD, "size": -5}]}, "files[0].size -5 is not a byte count"),
    ({"files": [{**GOOD, "size": True}]}, "files[0].size True is not a byte count"),
    ({"files": [{"path": "stdout.log", "mtime": 1.0}]}, "files[0].size None"),
    ({"files": [{**GOOD, "mtime": "yesterday"}]}, "files[0].mtime 'yesterday'"),
    ({"files": [{**GOOD, "path": "../../etc/passwd"}]}, "files[0].path '../../etc/passwd'"),
    ({"files": [{**GOOD, "path": "/etc/passwd"}]}, "files[0].path '/etc/passwd'"),
    ({"files": [{**GOOD, "path": 7}]}, "files[0].path 7"),
    ({"files": [GOOD, GOOD]}, "files[1]: 'stdout.log' is listed twice"),
], ids=["files-null", "files-missing", "files-dict", "not-an-object", "entry-null",
        "entry-string", "size-abc", "size-negative", "size-bool", "size-missing",
        "mtime-text", "dotdot", "absolute", "path-number", "duplicate"])
def test_a_hostile_listing_is_a_clean_host_error(hostile_run: Path, tmp_path: Path,
                                                 listing: Any, message: str) -> None:
    dest = tmp_path / "art"
    target = Target(HostileHost(listing), HostPaths(str(hostile_run.parent), str(tmp_path)))
    with pytest.raises(HostError) as caught:
        fetch.fetch(target, "hostile-1", dest)
    assert caught.value.exit_code == ExitCode.HOST
    assert message in caught.value.message, caught.value.message
    assert not (dest / "hostile-1" / ".ops").exists()


def test_a_hostile_status_is_ignored_not_a_crash(hostile_run: Path, tmp_path: Path) -> None:
    listing = {"files": [{"path": "stdout.log", "size": 6, "mtime": 1.0}], "status": "pwned"}
    target = Target(HostileHost(listing), HostPaths(str(hostile_run.parent), str(tmp_path)))
    result = fetch.fetch(target, "hostile-1", tmp_path / "art")
    assert result.files_fetched == ["stdout.log"] and result.remote_status is None


@pytest.mark.parametrize("stdout", [
    '{"error": "boom"}', '{"error": {"kind": ["x"], "message": "m"}}',
    "[" * 5000 + "]" * 5000,
], ids=["error-string", "kind-list", "deep"])
def test_a_hostile_runner_answer_is_a_clean_error(stdout: str) -> None:
    class Answer(LocalHost):
        def exec(self, argv: Sequence[str], *, input_text: str | None = None,
                 check: bool = True, timeout: float | None = None) -> ExecResult:
            return ExecResult("h", tuple(argv), 0, stdout, "")

    with pytest.raises(OpsError):
        call_runner(Answer(), ["ls", "x"])


# -- no empty partial dirs ----------------------------------------------------------------------

def test_no_partial_directory_is_left_after_a_fetch(hostile_run: Path, tmp_path: Path) -> None:
    dest = tmp_path / "art"
    fetch.fetch(_target(hostile_run.parent), "hostile-1", dest)
    assert not (dest / "hostile-1" / ".ops" / "partial").exists()
    assert (dest / "hostile-1" / ".ops" / "fetch.json").is_file()


def test_no_partial_directory_is_left_after_a_failed_fetch(hostile_run: Path,
                                                           tmp_path: Path) -> None:
    big = hostile_run / "out" / "deep" / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    target = _target(hostile_run.parent)
    original = target.host.stream

    @contextmanager
    def cut(argv: Sequence[str], *, input_bytes: bytes = b""):  # type: ignore[no-untyped-def]
        with original(argv, input_bytes=input_bytes) as inner:
            yield io.BytesIO(inner.read(1 << 20))  # the connection drops after 1 MiB

    target.host.stream = cut  # type: ignore[method-assign]
    dest = tmp_path / "art"
    with pytest.raises(HostError, match="interrupted"):
        fetch.fetch(target, "hostile-1", dest)
    assert not (dest / "hostile-1" / ".ops").exists()
    assert not (dest / "hostile-1" / "out" / "deep" / "big.bin").exists()
