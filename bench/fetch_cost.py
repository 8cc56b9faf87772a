"""What one fetch costs, beside its wall time (bench_remote.py section 2): CPU seconds on the
laptop's side and on the pod's side, and SSH sessions (round trips). On a loaded machine these
are much steadier than wall times.

- laptop: this process and its reaped children (scp, rsync and their ssh clients) plus the
  shared OpenSSH masters of this project (`ssh -M`, a daemon: ops's crypto runs there);
- pod: the loopback sshd and everything below it, alive or reaped (sshd's crypto, the remote
  `rsync --server`, `scp -f` or `python -m runner.pack`);
- sessions: "Starting session" lines in the sshd's log (one per exec, through a master too).
"""

from __future__ import annotations

import os
import resource
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil


def _tree_cpu(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue  # gone between the listing and the read: its parent has it now
        total += times.user + times.system + times.children_user + times.children_system
    return total


def _masters_cpu(marker: str) -> float:
    """CPU of the `ssh -M` masters whose command line names ``marker`` (our control dir)."""
    total = 0.0
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            argv = proc.info["cmdline"] or []
            if proc.info["name"] == "ssh" and "-M" in argv and any(marker in a for a in argv):
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


@dataclass(frozen=True)
class Cost:
    laptop_s: float
    pod_s: float
    sessions: int

    def __sub__(self, other: Cost) -> Cost:
        return Cost(self.laptop_s - other.laptop_s, self.pod_s - other.pod_s,
                    self.sessions - other.sessions)


@dataclass(frozen=True)
class CostMeter:
    sshd_dir: Path  # the fixture's workdir: sshd.pid and the log live there
    mux_marker: str  # a path in every command line of this project's masters

    def now(self) -> Cost:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        laptop = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
        pid = int((self.sshd_dir / "sshd.pid").read_text().strip())
        log = self.sshd_dir / "sshd.log"
        sessions = log.read_text(errors="replace").count("Starting session:") \
            if log.exists() else 0
        return Cost(laptop + _masters_cpu(self.mux_marker), _tree_cpu(pid), sessions)


class KeptCopies:
    """The fetched copies, removed only at the end while the disk has room for them.

    Removing a copy of 2,000 files just before the next tool runs makes that tool's file
    creations slow: ext4 skips inodes deleted in the last 30 s whose inode table block is
    dirty, scanning past each of them for every new file (measured here: 2,000 creations took
    0.1 s of system time on a quiet group, 1-2 s right after 2,000 deletions). That cost lands
    on whichever tool comes next, by chance, and is no part of fetching."""

    def __init__(self, work: Path):
        self.work = work
        self.kept: list[Path] = []
        work.mkdir(parents=True, exist_ok=True)
        self.floor = max(4 << 30, shutil.disk_usage(work).free // 2)  # never use more

    def keep(self, dest: Path, size: int) -> bool:
        """Keep ``dest`` while half the free space there was at the start (and 4 GB) is left;
        past that, the caller removes it at once (as before)."""
        if shutil.disk_usage(self.work).free - size < self.floor:
            return False
        self.kept.append(dest)
        return True

    @staticmethod
    def evict(dest: Path) -> None:
        """Drop a kept copy's pages from the page cache (after os.sync(), so they are clean).

        Kept copies would otherwise fill memory round by round (three tools x 546 MB each),
        and every later round then pays for reclaim: measured here, each tool's laptop CPU
        grew by about 2 s from the first round to the fifth, the same for all three, which
        reads as a worse ratio for whichever tool is fastest. Evicting keeps every round's
        memory where the first round had it; the files stay on disk, and the host's run dir
        (the source) stays cached for every tool alike."""
        for root, _dirs, names in os.walk(dest):
            for name in names:
                try:
                    fd = os.open(os.path.join(root, name), os.O_RDONLY | os.O_NOFOLLOW)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)

    def remove(self) -> None:
        for dest in self.kept:
            shutil.rmtree(dest, ignore_errors=True)
        self.kept.clear()


@contextmanager
def pinned_runner_build() -> Iterator[None]:
    """The runner build as it is now, for the whole section. In a shared working tree, an edit
    of runner/*.py by someone else mid-run gives the runner a new build id, and the next
    open_target then checks the host and uploads that build (4 more SSH sessions, 1-2 s)
    inside a measured round: seen in this bench, and no part of what a fetch costs a user."""
    from ops.services import bootstrap

    build = bootstrap.local_build()
    original = bootstrap.local_build
    bootstrap.local_build = lambda: build  # type: ignore[assignment]  # a bench-only pin
    try:
        yield
    finally:
        bootstrap.local_build = original  # type: ignore[assignment]
