"""`ops repo sync` after a one-file change against `rsync -az` of the working tree.

    .venv/bin/python bench/bench_sync.py                       # LocalHost, local rsync
    .venv/bin/python bench/bench_sync.py --loopback            # a throwaway sshd on 127.0.0.1
    .venv/bin/python bench/bench_sync.py --ssh-alias pod [--ssh-config ~/.ssh/config]

A repository of FILES text files (100 a directory, about 1 KB each) is generated in a temp dir
and committed. Both tools first copy it once (not timed), then each repeat changes one line of
one file, commits, and times:

* `sync`: `sync_ref(host, repo, "HEAD")` end to end, opening the host connection (SSH) inside
  the timing (rsync pays for its ssh connection too). The host prepares the next sync's copy
  of the tree in the background after each sync; between two syncs here there is an rsync
  run, which is usually long enough for that copy to be ready, as it is between real syncs.
* `rsync`: `rsync -az --exclude .git --stats` of the working tree to a second directory on the
  same host over the same transport (a local directory for LocalHost, `ssh ALIAS` otherwise);
  bytes are rsync's "Total bytes sent" (what crossed the wire, compressed).

The change is measured two ways, both gzipped: the diff (`git diff HEAD~1`, the least any tool
could send) and the changed file (what a whole-file tool sends). `ops repo sync` bytes are the
payload as it crossed the wire (a small bundle rides base64 on the apply command's stdin).
Targets (issue 14): sync time <= 0.5 x rsync time, sync bytes <= 2 x the changed file gzipped.
Over SSH, the connection is ops's shared OpenSSH master (kept by the first sync, reused by the
next ones as by later `ops` processes); rsync starts its own ssh each time, as a user runs it.
Each sync's host knows its runner and the host's resident runner is up (started by one runner
call before the first copy, as by any earlier `ops` command), so the sync's scripts run through
it; a row "the same over exec" times a like change with OPS_RUNNER_SERVE=0 for comparison.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from _common import REPO, median, table

from ops.hosts.local import LocalHost
from ops.services.sync import SyncHost, sync_ref

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com"}
TARGET_TIME_RATIO = 0.5
TARGET_BYTES_RATIO = 2.0


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True, env=GIT_ENV).stdout


def make_repo(root: Path, files: int) -> Path:
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for i in range(files):
        path = root / f"dir{i // 100:03d}" / f"file{i:05d}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text("".join(f"value_{i}_{j} = {secrets.randbelow(10**9)}\n"
                                for j in range(40)))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


@dataclass(frozen=True)
class Change:
    """The size of a one-line change, compressed: as a diff, and as the whole changed file."""

    diff_gz: int
    file_gz: int


def change_one_line(repo: Path, files: int, round_no: int) -> Change:
    """Edit one line of the middle file and commit it."""
    middle = files // 2
    path = repo / f"dir{middle // 100:03d}" / f"file{middle:05d}.py"
    lines = path.read_text().splitlines(keepends=True)
    lines[round_no % len(lines)] = f"changed_{round_no} = {secrets.randbelow(10**9)}\n"
    path.write_text("".join(lines))
    git(repo, "commit", "-q", "-am", f"change {round_no}")
    return Change(len(gzip.compress(git(repo, "diff", "HEAD~1").encode())),
                  len(gzip.compress(path.read_bytes())))


@dataclass(frozen=True)
class Transport:
    """Where the host is, seen by ops (a host factory) and by rsync (a destination)."""

    name: str
    open_host: Callable[[], SyncHost]
    ops_home: str
    rsync_dest: str
    rsync_rsh: list[str]

    def close(self, host: SyncHost) -> None:
        close = getattr(host, "close", None)
        if close is not None:
            close()


def local_transport(work: Path) -> Transport:
    def make() -> SyncHost:
        return LocalHost()
    return Transport("local", make, str(work / "ops-home"), str(work / "rsync-dest"), [])


def ssh_transport(alias: str, remote_dir: str, rsh: list[str], work: Path,
                  python: str = "python3") -> Transport:
    """Each host opened knows the runner command, as a later `ops` process does (it remembers
    it), and the first one starts the resident runner with one runner call, as any earlier
    `ops` command on the host would have."""
    from ops.hosts.base import call_runner
    from ops.hosts.ssh import open_host  # only the SSH variants need paramiko
    from ops.services.bootstrap import ensure_runner

    ops_home = f"{remote_dir}/ops-home"
    runner: list[tuple[str, ...]] = []

    def make() -> SyncHost:
        host = open_host(alias, repo_root=work)  # its .ops/known_hosts, if any, goes there
        if runner:
            host.runner_command = runner[0]
        else:
            runner.append(ensure_runner(host, ops_home, python=python).argv)
            call_runner(host, ["version"])
        return host
    return Transport(f"ssh {alias}", make, ops_home, f"{alias}:{remote_dir}/rsync-dest", rsh)


@contextmanager
def loopback(work: Path) -> Iterator[Transport]:
    """A throwaway sshd on 127.0.0.1 (the test suite's), reached through a temp HOME."""
    sys.path.insert(0, str(REPO))
    from tests.sshd_fixture import start_sshd, write_alias

    home = work / "home"
    home.mkdir()
    os.environ["HOME"] = str(home)  # paramiko reads ~/.ssh/config from $HOME
    server = start_sshd(work / "sshd")
    alias = write_alias(server, home)
    try:
        yield ssh_transport(alias.name, str(work / "remote"), alias.ssh_argv()[:-1], work,
                            python=sys.executable)  # this venv's: it has psutil
    finally:
        server.stop()


def timed_sync(transport: Transport, repo: Path) -> tuple[float, int, str]:
    start = time.perf_counter()
    host = transport.open_host()
    try:
        done = sync_ref(host, repo, "HEAD", ops_home=transport.ops_home)
    finally:
        transport.close(host)
    return time.perf_counter() - start, done.bytes_sent, done.method


def timed_rsync(transport: Transport, repo: Path) -> tuple[float, int]:
    argv = ["rsync", "-az", "--stats", "--delete", "--exclude", ".git"]
    if transport.rsync_rsh:
        argv += ["-e", " ".join(transport.rsync_rsh)]
    start = time.perf_counter()
    out = subprocess.run([*argv, f"{repo}/", f"{transport.rsync_dest}/"], capture_output=True,
                         text=True, check=True).stdout
    seconds = time.perf_counter() - start
    found = re.search(r"Total bytes sent: ([\d,.]+)", out)
    return seconds, int(re.sub(r"[,.]", "", found.group(1))) if found else -1


def settle(transport: Transport, timeout_s: float = 30.0) -> None:
    """Wait for the host's background job (the spare tree of the last sync) to finish."""
    code = Path(transport.ops_home) / "code"
    deadline = time.monotonic() + timeout_s
    while any(code.glob(".spare-tmp.*")) and time.monotonic() < deadline:
        time.sleep(0.05)


@dataclass(frozen=True)
class Round:
    sync_s: float
    sync_bytes: int
    rsync_s: float
    rsync_bytes: int
    change: Change
    exec_s: float | None = None  # the same sync with OPS_RUNNER_SERVE=0 (over SSH only)


def run(transport: Transport, files: int, repeats: int, work: Path) -> bool:
    repo = make_repo(work / "repo", files)
    if not transport.rsync_rsh:
        Path(transport.rsync_dest).mkdir(parents=True)
    first, first_rsync = timed_sync(transport, repo), timed_rsync(transport, repo)
    rounds = []
    for round_no in range(repeats):
        exec_s = None
        if transport.rsync_rsh:  # the same kind of change synced over exec, for comparison
            change_one_line(repo, files, repeats + round_no)
            os.environ["OPS_RUNNER_SERVE"] = "0"
            try:
                exec_s = timed_sync(transport, repo)[0]
            finally:
                del os.environ["OPS_RUNNER_SERVE"]
            settle(transport)
        change = change_one_line(repo, files, round_no)
        sync_s, sync_bytes, _ = timed_sync(transport, repo)
        rounds.append(Round(sync_s, sync_bytes, *timed_rsync(transport, repo), change, exec_s))
    settle(transport)  # a local or loopback host only: the temp dir is removed next
    stop_master(transport)
    print(f"{files} files over {transport.name}; first copy: sync {first[0]:.2f} s "
          f"{first[1]} B, rsync {first_rsync[0]:.2f} s {first_rsync[1]} B; "
          f"median of {repeats} one-line changes:")
    return report(rounds)


def stop_master(transport: Transport) -> None:
    """The shared OpenSSH master of an SSH transport exits now, not after its idle time."""
    host = transport.open_host()
    mux = getattr(host, "_mux", None)
    if mux is not None:
        mux.stop()
    transport.close(host)


def report(rounds: list[Round]) -> bool:
    def mid(pick: Callable[[Round], float]) -> float:
        return median([pick(r) for r in rounds])
    sync_s, sync_b, rsync_s, rsync_b = (mid(lambda r: r.sync_s), mid(lambda r: r.sync_bytes),
                                        mid(lambda r: r.rsync_s), mid(lambda r: r.rsync_bytes))
    diff_gz, file_gz = mid(lambda r: r.change.diff_gz), mid(lambda r: r.change.file_gz)

    def row(what: str, seconds: float | None, size: float) -> list[str]:
        return [what, "" if seconds is None else f"{seconds:.3f}", f"{size:.0f}",
                "" if seconds is None else f"{seconds / rsync_s:.2f}",
                f"{size / diff_gz:.2f}", f"{size / file_gz:.2f}"]
    over_exec = [r.exec_s for r in rounds if r.exec_s is not None]
    extra = [row("  the same over exec", median(over_exec), sync_b)] if over_exec else []
    print(table([row("ops repo sync", sync_s, sync_b), *extra, row("rsync -az", rsync_s, rsync_b),
                 row("change: the diff, gzip", None, diff_gz),
                 row("change: the changed file, gzip", None, file_gz)],
                ["what", "seconds", "bytes", "time/rsync", "bytes/diff.gz", "bytes/file.gz"]))
    time_ok = sync_s / rsync_s <= TARGET_TIME_RATIO
    print(f"target time/rsync <= {TARGET_TIME_RATIO}: {'met' if time_ok else 'NOT met'}; "
          f"target bytes <= {TARGET_BYTES_RATIO} x the change: "
          f"{'met' if sync_b <= TARGET_BYTES_RATIO * file_gz else 'NOT met'} against the "
          f"changed file, {'met' if sync_b <= TARGET_BYTES_RATIO * diff_gz else 'NOT met'} "
          "against the diff")
    return time_ok and sync_b <= TARGET_BYTES_RATIO * file_gz


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--ssh-alias", help="sync to this ~/.ssh/config alias (and rsync over ssh)")
    where.add_argument("--loopback", action="store_true", help="start a sshd on 127.0.0.1")
    parser.add_argument("--ssh-config", help="-F for the ssh that rsync runs")
    parser.add_argument("--remote-dir", default=f"/tmp/ops-bench-sync-{secrets.token_hex(4)}",
                        help="scratch dir on the SSH host (removed afterwards)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ops-bench-sync-") as tmp:
        work = Path(tmp)
        if args.loopback:
            with loopback(work) as transport:
                return 0 if run(transport, args.files, args.repeats, work) else 1
        if args.ssh_alias:
            rsh = ["ssh", *(["-F", args.ssh_config] if args.ssh_config else []),
                   "-o", "BatchMode=yes"]
            transport = ssh_transport(args.ssh_alias, args.remote_dir, rsh, work)
            try:
                return 0 if run(transport, args.files, args.repeats, work) else 1
            finally:
                host = transport.open_host()
                host.exec(["rm", "-rf", args.remote_dir], check=False)
                transport.close(host)
        return 0 if run(local_transport(work), args.files, args.repeats, work) else 1


if __name__ == "__main__":
    sys.exit(main())
