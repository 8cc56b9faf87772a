"""Scanning running processes for a canary secret, while the workload that holds it runs.

The workload (tests/workloads/leaky.py with a release file) lingers until the test releases
it, so the scan happens while it is alive, and the scan says so: the workload is found before
the scan and checked alive after it. Only the workload itself may hold the forwarded canary (it
is the one process meant to get it, under its own variable name); every other process, whatever
variables it has, is scanned in full.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil


def workload_holding(release: Path, timeout: float = 30.0) -> psutil.Process:
    """The leaky.py process waiting on `release` (a path unique to the test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if str(release) in cmdline and any(a.endswith("leaky.py") for a in cmdline):
                return proc
        time.sleep(0.05)
    raise AssertionError(f"no leaky.py waiting on {release}")


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def leaks(workload: psutil.Process, needles: list[str]) -> list[str]:
    """Every process (argv and environment) holding a needle, but the workload's own
    environment; asserts the workload was alive throughout and does hold what it was given."""
    assert alive(workload), "the workload ended before the scan"
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        found += [f"{proc.info['pid']} argv: {cmdline}" for n in needles if n in cmdline]
        if proc.info["pid"] != workload.pid:
            environ = json.dumps(proc.info["environ"] or {})
            found += [f"{proc.info['pid']} environ has {n}" for n in needles if n in environ]
    assert alive(workload), "the workload ended during the scan"
    return found
