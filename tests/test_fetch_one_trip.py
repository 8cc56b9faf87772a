"""Fetch in one round trip (issue 14): the request says which files are here, the runner's
`python -m runner.pack` answers with the listing and status in a frame, then the tar of what
is missing. Over the shared OpenSSH master and over paramiko, against the real runner; a
hostile answer frame is a clean error; the rule for "missing" is the same on both sides."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from ops.errors import ExitCode, HostError, NotFoundError
from ops.hosts.base import ExecResult
from ops.hosts.local import LocalHost
from ops.hosts.ssh import open_host
from ops.services import fetch
from ops.services.runs import Target
from ops.services.spec import HostPaths
from runner import pack

from .sshd_fixture import SshAlias


def make_run(root: Path, run_id: str = "one-1") -> Path:
    """A run dir with a few small files and one file above the sendfile threshold."""
    run = root / run_id
    (run / "out" / "samples").mkdir(parents=True)
    (run / "spec.json").write_text(json.dumps({"schema": "ops.spec/1", "run_id": run_id}))
    (run / "stdout.log").write_bytes(b"iter 1: loss 1.0\n" * 50)
    for i in range(40):
        (run / "out" / "samples" / f"s{i:03d}.json").write_bytes(os.urandom(100 + 37 * i))
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pt").write_bytes(os.urandom(3 * 2**20 + 5))
    return run


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] != ".ops"}


class Counted:
    """Counts the commands a host runs (execs and streams) for one fetch."""

    def __init__(self, host: Any):
        self.calls: list[str] = []
        original_exec, original_stream = host.exec, host.stream

        def exec_(argv: Sequence[str], **kw: Any) -> ExecResult:
            self.calls.append("exec")
            return original_exec(argv, **kw)  # type: ignore[no-any-return]

        @contextmanager
        def stream(argv: Sequence[str], *, input_bytes: bytes = b"") -> Iterator[BinaryIO]:
            self.calls.append("stream")
            with original_stream(argv, input_bytes=input_bytes) as out:
                yield out

        host.exec, host.stream = exec_, stream


def test_local_fetch_is_one_command_and_refetch_brings_only_the_change(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs")
    target = Target(LocalHost(), HostPaths(str(run.parent), str(tmp_path / "home")))
    counted = Counted(target.host)
    dest = tmp_path / "art"
    first = fetch.fetch(target, run.name, dest, with_checkpoints=True)
    assert counted.calls == ["stream"]  # was: an `ls` exec, then the `pack` stream
    assert files_of(dest / run.name) == files_of(run)
    assert first.files_current == 0 and len(first.files_fetched) == 43
    (run / "stdout.log").write_bytes(b"iter 2: loss 0.5\n")
    again = fetch.fetch(target, run.name, dest, with_checkpoints=True)
    assert again.files_fetched == ["stdout.log"] and again.files_current == 42
    assert files_of(dest / run.name) == files_of(run)
    none = fetch.fetch(target, run.name, dest)  # checkpoints stay opt-in
    assert none.files_fetched == [] and none.files_current == 42


@pytest.mark.ssh
@pytest.mark.parametrize("multiplex", [True, False], ids=["openssh-master", "paramiko"])
def test_ssh_fetch_is_one_round_trip(ssh_alias: SshAlias, tmp_path: Path,
                                     multiplex: bool) -> None:
    run = make_run(tmp_path / "pod-runs")
    host = open_host(ssh_alias.name, repo_root=tmp_path / "repo", retry_for=5.0,
                     multiplex=multiplex, python=sys.executable)
    try:
        host.runner_command = (sys.executable, "-m", "runner")
        counted = Counted(host)
        target = Target(host, HostPaths(str(run.parent), str(tmp_path / "home")))
        result = fetch.fetch(target, run.name, tmp_path / "art", with_checkpoints=True)
        assert counted.calls == ["stream"]
        assert (host._mux is not None) is multiplex  # the path under test was taken
    finally:
        if host._mux is not None:
            host._mux.stop()
        host.close()
    assert files_of(tmp_path / "art" / run.name) == files_of(run)
    assert result.bytes_fetched == sum(len(v) for v in files_of(run).values())


def test_a_runner_gone_since_it_was_remembered_is_checked_once_and_asked_again(
        tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs")

    class Remembered(LocalHost):
        """A host whose remembered runner (another build dir) is gone."""

        def __init__(self) -> None:
            super().__init__()
            self.command = ["env", f"OPS_RUNNER_DIR={tmp_path / 'gone'}", sys.executable,
                            "-m", "runner"]
            self.runner_recheck = self.recheck
            self.rechecked = 0

        def recheck(self) -> None:
            self.rechecked += 1
            self.command = [sys.executable, "-m", "runner"]

        def runner_argv(self) -> list[str]:
            return list(self.command)

    host = Remembered()
    result = fetch.fetch(Target(host, HostPaths(str(run.parent), str(tmp_path))), run.name,
                         tmp_path / "art")
    assert host.rechecked == 1 and len(result.files_fetched) == 42


def test_a_missing_run_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "runs" / "nope-1").mkdir(parents=True)  # a dir, but no run in it
    target = Target(LocalHost(), HostPaths(str(tmp_path / "runs"), str(tmp_path)))
    with pytest.raises(NotFoundError, match="no run at"):
        fetch.fetch(target, "nope-1", tmp_path / "art")
    assert not (tmp_path / "art" / "nope-1" / ".ops").exists()


# -- a hostile answer ---------------------------------------------------------------------------

class Answering(LocalHost):
    """A host whose runner answers the fetch request with these exact bytes."""

    def __init__(self, data: bytes, code: int = 0):
        super().__init__()
        self.data, self.code = data, code

    @contextmanager
    def stream(self, argv: Sequence[str], *, input_bytes: bytes = b"") -> Iterator[BinaryIO]:
        yield io.BytesIO(self.data)
        if self.code:
            from ops.hosts.base import HostCommandError

            raise HostCommandError(ExecResult("h", tuple(argv), self.code, "", "boom"))


LISTING = {"files": [{"path": "a.txt", "size": 1, "mtime": 1.0}], "status": {}}


@pytest.mark.parametrize(("data", "message"), [
    (b"", "gave no answer"),
    (b"HTTP/1.1 200 OK\r\n\r\n", "is not the runner's"),
    (b"OPS-FETCH/1 99999999999\n{}", "is not the runner's"),
    (b"OPS-FETCH/1 -5\n{}", "is not the runner's"),
    (b"OPS-FETCH/1 " + b"9" * 500, "is malformed"),
    (b"OPS-FETCH/1 50\n{\"files\": []", "ended in the middle of the runner's answer"),
    (b"OPS-FETCH/1 4\nnope", "not JSON"),
    (pack.frame({"files": "x"}), "'files' is a str, not a list"),
    (pack.frame(LISTING), "the stream ended in the middle of an entry"),
    (pack.frame(LISTING) + b"\x01" * 512, "malformed tar header"),
], ids=["empty", "not-a-frame", "huge-length", "negative-length", "endless-line",
        "truncated-json", "not-json", "bad-listing", "no-tar", "garbage-tar"])
def test_a_hostile_answer_is_a_clean_host_error(tmp_path: Path, data: bytes,
                                                message: str) -> None:
    target = Target(Answering(data), HostPaths(str(tmp_path), str(tmp_path)))
    with pytest.raises(HostError) as caught:
        fetch.fetch(target, "r-1", tmp_path / "art")
    assert caught.value.exit_code == ExitCode.HOST
    assert message in caught.value.message, caught.value.message
    assert not (tmp_path / "art" / "r-1" / "a.txt").exists()


def test_an_error_answer_maps_to_the_runner_s_error_kind(tmp_path: Path) -> None:
    answer = pack.frame({"error": {"kind": "not_found", "message": "no run at /x"}})
    target = Target(Answering(answer, code=3), HostPaths(str(tmp_path), str(tmp_path)))
    with pytest.raises(NotFoundError, match="no run at /x"):
        fetch.fetch(target, "r-1", tmp_path / "art")


def test_an_entry_that_was_not_asked_for_is_refused(tmp_path: Path) -> None:
    out = io.BytesIO()
    out.write(pack.frame(LISTING))
    member = tarfile.TarInfo("b.txt")
    member.size = 1
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(member, io.BytesIO(b"b"))
    target = Target(Answering(out.getvalue()), HostPaths(str(tmp_path), str(tmp_path)))
    with pytest.raises(HostError, match=r"unexpected entry 'b\.txt'"):
        fetch.fetch(target, "r-1", tmp_path / "art")
    assert not (tmp_path / "art" / "r-1" / "b.txt").exists()


# -- the runner's side --------------------------------------------------------------------------

def test_missing_is_the_same_rule_on_both_sides() -> None:
    files = [{"path": "a", "size": 3, "mtime": 10.0}, {"path": "b", "size": 3, "mtime": 10.0},
             {"path": "c", "size": 3, "mtime": 10.0}, {"path": "d", "size": 3, "mtime": 10.0}]
    have = [["a", 3, 10.0005], ["b", 4, 10.0], ["c", 3, 10.5], "junk", ["x", "y"]]
    assert pack.wanted(files, have) == ["b", "c", "d"]
    assert pack.wanted(files, "not a list") == ["a", "b", "c", "d"]


def test_the_answer_is_a_frame_then_a_tar_gnu_tar_reads(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs")
    log = (run / "stdout.log").stat()
    have = [["stdout.log", log.st_size, log.st_mtime], ["spec.json", 1, 0.0]]
    request = json.dumps({"with_checkpoints": True, "have": have})
    proc = subprocess.run([sys.executable, "-m", "runner.pack", str(run)], input=request.encode(),
                          capture_output=True, check=True)
    head, _, rest = proc.stdout.partition(b"\n")
    size = int(head.removeprefix(pack.FRAME_MAGIC))
    answer, tar = json.loads(rest[:size]), rest[size:]
    assert answer["schema"] == "ops.runner_fetch/1" and len(answer["files"]) == 43
    assert len(tar) % tarfile.RECORDSIZE == 0
    into = tmp_path / "x"
    into.mkdir()
    subprocess.run(["tar", "-xf", "-", "-C", str(into)], input=tar, check=True)
    expected = files_of(run)
    del expected["stdout.log"]  # current here: not sent; spec.json differs: sent
    assert files_of(into) == expected


def test_a_request_that_is_not_json_is_a_usage_answer(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs")
    proc = subprocess.run([sys.executable, "-m", "runner.pack", str(run)], input=b"{oops",
                          capture_output=True, check=False)
    assert proc.returncode == 2
    assert b'"kind":"usage"' in proc.stdout


def test_a_file_that_shrinks_while_it_is_sent_breaks_the_stream(tmp_path: Path) -> None:
    path = tmp_path / "grow.bin"
    path.write_bytes(os.urandom(400_000))
    info = os.stat(path)
    path.write_bytes(b"short")  # truncated after its fstat (a workload rewrote it)
    read_fd, write_fd = os.pipe()
    fd = os.open(path, os.O_RDONLY)
    try:
        with os.fdopen(write_fd, "wb") as out, pytest.raises(OSError, match="shrank"):
            pack._TarOut(out).add("grow.bin", fd, info)
    finally:
        os.close(fd)
        os.close(read_fd)


def test_a_link_in_the_fetched_copy_is_replaced_never_written_through(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs")
    outside = tmp_path / "outside.log"
    outside.write_bytes((run / "stdout.log").read_bytes())  # same size
    mtime = (run / "stdout.log").stat().st_mtime
    os.utime(outside, (mtime, mtime))  # and mtime: through the link it looks current
    copy = tmp_path / "art" / run.name
    copy.mkdir(parents=True)
    (copy / "stdout.log").symlink_to(outside)
    target = Target(LocalHost(), HostPaths(str(run.parent), str(tmp_path)))
    result = fetch.fetch(target, run.name, tmp_path / "art")
    assert "stdout.log" in result.files_fetched
    assert not (copy / "stdout.log").is_symlink()
    assert (copy / "stdout.log").read_bytes() == (run / "stdout.log").read_bytes()
    assert outside.read_bytes() == (run / "stdout.log").read_bytes()  # untouched
