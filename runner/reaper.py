"""Ending every process a workload started, and only those.

A workload's children can leave its process group (``setsid``, a daemon that double-forks) or
outlive it by pointing their output elsewhere. The wrapper makes itself a *child subreaper*
(``prctl(PR_SET_CHILD_SUBREAPER)``): an orphan anywhere below it is re-parented to the wrapper
instead of to init, so "every process the workload started" is exactly "every descendant of the
wrapper" and a walk of the process tree finds them all. The workload's leader also gets
``PR_SET_PDEATHSIG``, so it does not outlive a wrapper killed with SIGKILL.

When the wrapper itself is gone, ``cancel`` still has to find what is left without ever
signalling a stranger: a process counts as the run's only when it was started on this boot, its
start time matches the one recorded for it, or its environment names the run's directory in
``OPS_RUN_DIR`` (set by the wrapper for every workload).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any

import psutil

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
START_TIME_TOLERANCE_SEC = 1.0
SWEEP_ROUNDS = 20  # a fork bomb cannot keep the sweep going forever


def _prctl(option: int, value: int) -> bool:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux >= 3.4); False where the kernel or libc refuses."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent() -> None:
    """For a child's preexec: SIGKILL when the process that started it dies."""
    _prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))


def signal_name(number: int) -> str:
    """SIGTERM, SIGRTMIN+1, or SIG35 for a number the platform does not name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        low, high = int(signal.SIGRTMIN), int(signal.SIGRTMAX)
        if low <= number <= high:
            return f"SIGRTMIN+{number - low}"
        return f"SIG{number}"


def describe(proc: psutil.Process, redact: Callable[[str], str]) -> dict[str, Any]:
    """pid, name and a short, redacted command line, for events.jsonl."""
    try:
        with proc.oneshot():
            cmdline = " ".join(proc.cmdline())[:200]
            name = proc.name()
    except psutil.Error:
        cmdline, name = "", "?"
    return {"pid": proc.pid, "name": name, "cmdline": redact(cmdline)}


def descendants(pid: int | None = None) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid or os.getpid()).children(recursive=True))
    except psutil.Error:
        return []


def end_descendants(redact: Callable[[str], str], *, keep: Iterable[int] = ()) -> list[dict[str,
                                                                                        Any]]:
    """SIGKILL every descendant of this process (but ``keep``) until none is left, reaping
    them; returns what was killed. Safe only in a subreaper whose children are all the run's."""
    kept = set(keep)
    killed: dict[int, dict[str, Any]] = {}
    for _ in range(SWEEP_ROUNDS):
        found = [p for p in descendants() if p.pid not in kept]
        if not found:
            break
        for proc in found:
            if proc.pid not in killed:
                killed[proc.pid] = describe(proc, redact)
            with contextlib.suppress(psutil.Error):
                proc.kill()
        _reap(found)
    reap_zombies()
    return list(killed.values())


def _reap(procs: list[psutil.Process], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap_zombies()
        if not any(_exists(p) for p in procs):
            return
        time.sleep(0.02)


def _exists(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def reap_zombies() -> None:
    """Collect exited children (adopted orphans become ours to wait for)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def same_process(pid: Any, start_time: Any) -> psutil.Process | None:
    """The process ``pid`` if it is the one that started at ``start_time``; never pid <= 1."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1 or pid == os.getpid():
        return None
    if not isinstance(start_time, (int, float)) or isinstance(start_time, bool):
        return None
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - float(start_time)) > START_TIME_TOLERANCE_SEC:
            return None
    except (psutil.Error, ValueError, OverflowError):
        return None
    return proc


def run_processes(run_dir: str, leader: psutil.Process | None) -> list[psutil.Process]:
    """What is left of a run whose wrapper is gone: the verified leader's tree, and every
    process of this user whose environment says OPS_RUN_DIR=run_dir."""
    found: dict[int, psutil.Process] = {}
    if leader is not None:
        found[leader.pid] = leader
        with contextlib.suppress(psutil.Error):
            found.update({c.pid: c for c in leader.children(recursive=True)})
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid in found or proc.pid in (me, 1):
            continue
        try:
            if proc.uids().real != os.getuid():
                continue
            if proc.environ().get("OPS_RUN_DIR") == run_dir:
                found[proc.pid] = proc
        except psutil.Error:
            continue
    return list(found.values())


def kill_all(procs: list[psutil.Process], redact: Callable[[str], str]) -> list[dict[str, Any]]:
    killed = []
    for proc in procs:
        record = describe(proc, redact)
        try:
            proc.kill()
        except psutil.Error:
            continue
        killed.append(record)
    psutil.wait_procs(procs, timeout=2.0)
    return killed


def live_wrappers() -> dict[str, int]:
    """Run directory -> pid of every running `python -m runner exec RUN_DIR`, read from the
    kernel's process table: unlike run_metadata.json, a workload cannot rewrite it."""
    found: dict[str, int] = {}
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info.get("cmdline") or []
        for index in range(len(argv) - 3):
            if argv[index:index + 3] == ["-m", "runner", "exec"]:
                found[_absolute(proc, argv[index + 3])] = proc.pid
                break
    return found


def _absolute(proc: psutil.Process, path: str) -> str:
    if not os.path.isabs(path):
        try:
            path = os.path.join(proc.cwd(), path)
        except psutil.Error:
            return path
    return os.path.realpath(path)
