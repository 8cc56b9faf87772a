"""Heartbeat and watchdog: one thread that proves the run is alive and enforces its limits.

Each tick reads what the workload appended to metrics.jsonl and events.jsonl since the last
tick (by byte offset) to learn the step and phase, measures the RSS of the workload's process
tree and its GPU memory, writes heartbeat.json atomically, and calls ``on_limit`` once when a
limit is crossed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from runner import contract, gpu


@dataclass(frozen=True)
class Limits:
    rss_limit_bytes: int | None = None
    gpu_mem_limit_bytes: int | None = None
    timeout_sec: float | None = None
    no_progress_sec: float | None = None

    @classmethod
    def from_spec(cls, doc: dict[str, Any]) -> Limits:
        return cls(
            rss_limit_bytes=_int_or_none(doc.get("rss_limit_bytes")),
            gpu_mem_limit_bytes=_int_or_none(doc.get("gpu_mem_limit_bytes")),
            timeout_sec=doc.get("timeout_sec"),
            no_progress_sec=doc.get("no_progress_sec"),
        )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass
class Breach:
    status: str  # aborted | timeout
    failure_class: str  # memory | no_progress | timeout
    message: str


def tree_rss(pid: int) -> tuple[int, list[int]]:
    """RSS of a process and all its descendants, and their pids."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, []
    total, pids = 0, []
    for proc in procs:
        try:
            total += proc.memory_info().rss
            pids.append(proc.pid)
        except psutil.Error:
            continue
    return total, pids


class Heartbeat(threading.Thread):
    def __init__(self, run_dir: Path, run_id: str, *, interval: float, workload_pid: int,
                 limits: Limits, on_limit: Callable[[Breach], None],
                 service: Callable[[], dict[str, Any]] | None = None):
        super().__init__(name="ops-heartbeat", daemon=True)
        self.run_dir = run_dir
        self.run_id = run_id
        self.interval = interval
        self.workload_pid = workload_pid
        self.limits = limits
        self.on_limit = on_limit
        self.service = service  # the health probe's snapshot, for a service run
        self.started = time.time()
        self.seq = 0
        self.step: int | None = None
        self.phase = "starting"
        self.last_step_at: float | None = None
        self.peak_rss = 0
        self.peak_gpu: int | None = None
        self.write_errors = 0
        self._metrics_offset = 0
        self._events_offset = 0
        self._halt = threading.Event()
        self._own_start = psutil.Process().create_time()
        self._boot_id = contract.boot_id()
        self._breached = False

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while True:
            self.beat()
            if self._halt.wait(self.interval):
                return

    def beat(self) -> None:
        now = time.time()
        self._read_progress()
        rss, pids = tree_rss(self.workload_pid)
        gpu_bytes = gpu.process_memory(pids) if pids else None
        self.peak_rss = max(self.peak_rss, rss)
        if gpu_bytes is not None:
            self.peak_gpu = max(self.peak_gpu or 0, gpu_bytes)
        self.seq += 1
        doc = {
            "schema": contract.schema_tag("heartbeat"), "run_id": self.run_id, "seq": self.seq,
            "ts": contract.iso(now), "interval_s": self.interval,
            "deadline": contract.iso(now + 2 * self.interval), "pid": os.getpid(),
            "pid_start_time": self._own_start, "boot_id": self._boot_id,
            "workload_pid": self.workload_pid, "phase": self.phase, "step": self.step,
            "last_step_at": contract.iso(self.last_step_at) if self.last_step_at else None,
            "rss_bytes": rss, "gpu_memory_bytes": gpu_bytes,
        }
        if self.service is not None:
            doc["service"] = self.service()
        try:
            contract.atomic_write_json(self.run_dir / contract.HEARTBEAT, doc)
        except OSError:
            self.write_errors += 1  # a full disk must not kill the run; status will see it stale
        self._check_limits(now, rss, gpu_bytes)

    def _read_progress(self) -> None:
        for end, record in contract.iter_jsonl_from(self.run_dir / contract.METRICS,
                                                    self._metrics_offset):
            self._metrics_offset = end
            step = record.get("step")
            if isinstance(step, int) and not isinstance(step, bool):
                if self.step is None or step != self.step:
                    self.last_step_at = time.time()
                self.step = step
        for end, record in contract.iter_jsonl_from(self.run_dir / contract.EVENTS,
                                                    self._events_offset):
            self._events_offset = end
            if record.get("type") == "phase" and isinstance(record.get("phase"), str):
                self.phase = record["phase"]

    def _check_limits(self, now: float, rss: int, gpu_bytes: int | None) -> None:
        if self._breached:
            return
        breach = self._breach(now, rss, gpu_bytes)
        if breach is not None:
            self._breached = True
            self.on_limit(breach)

    def _breach(self, now: float, rss: int, gpu_bytes: int | None) -> Breach | None:
        lim = self.limits
        if lim.rss_limit_bytes and rss > lim.rss_limit_bytes:
            return Breach("aborted", "memory",
                          f"RSS {rss / 2**20:.0f} MiB over the limit of "
                          f"{lim.rss_limit_bytes / 2**20:.0f} MiB")
        if lim.gpu_mem_limit_bytes and gpu_bytes and gpu_bytes > lim.gpu_mem_limit_bytes:
            return Breach("aborted", "memory",
                          f"GPU memory {gpu_bytes / 2**20:.0f} MiB over the limit of "
                          f"{lim.gpu_mem_limit_bytes / 2**20:.0f} MiB")
        if lim.timeout_sec and now - self.started > lim.timeout_sec:
            return Breach("timeout", "timeout", f"ran longer than {lim.timeout_sec:g} s")
        last = self.last_step_at or self.started
        if lim.no_progress_sec and now - last > lim.no_progress_sec:
            return Breach("aborted", "no_progress",
                          f"no new step for {now - last:.0f} s (limit {lim.no_progress_sec:g} s)")
        return None

