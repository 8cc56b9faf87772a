"""The `service` kind: a long-running server whose health the wrapper probes on the host.

A service preset names a port and a health path (``spec.service``). While the server runs, a
probe thread asks ``http://127.0.0.1:PORT/HEALTH`` every ``probe_interval_sec`` and keeps what
it learnt: the state (``starting`` until the first 2xx answer, then ``serving``, ``unhealthy``
while probes fail, ``serving`` again when they pass), the last status code and latency, and the
request count when the server reports one in a JSON health answer (``requests``). The heartbeat
writes that into heartbeat.json (``service``), the status verb reads it, and the end of the run
puts the service's uptime and counts into summary.json. A server never healthy within
``ready_timeout_sec`` is stopped and ends ``failed`` with class ``not_ready``.
"""

from __future__ import annotations

import http.client
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from runner import contract, untrusted
from runner.heartbeat import Breach

STATES = ("starting", "serving", "unhealthy")
HEALTH_BODY_LIMIT = 64 << 10  # a health answer is read up to this size, the rest ignored
COUNT_FIELDS = ("requests", "request_count", "requests_total")


@dataclass(frozen=True)
class ServiceSpec:
    port: int
    health: str = "/health"
    ready_timeout_sec: float = 600.0
    probe_interval_sec: float = 5.0
    probe_timeout_sec: float = 5.0

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> ServiceSpec | None:
        """The service block of spec.json; None for a run of another kind or a bad block."""
        block = spec.get("service")
        if spec.get("kind") != "service" or not isinstance(block, dict):
            return None
        port = block.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            return None
        health = block.get("health")
        return cls(port=port,
                   health=health if isinstance(health, str) and health.startswith("/")
                   else "/health",
                   ready_timeout_sec=_seconds(block.get("ready_timeout_sec"), 600.0),
                   probe_interval_sec=_seconds(block.get("probe_interval_sec"), 5.0),
                   probe_timeout_sec=_seconds(block.get("probe_timeout_sec"), 5.0))


def _seconds(value: Any, default: float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value) and 0 < value <= 7 * 86400:
        return float(value)
    return default


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    status_code: int | None
    latency_ms: float
    error: str | None = None
    requests: int | None = None


def probe(port: int, path: str, timeout: float) -> ProbeResult:
    """One GET of the health path on 127.0.0.1; never raises."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "pod-ops-health-probe"})
        response = conn.getresponse()
        body = response.read(HEALTH_BODY_LIMIT)
        code = response.status
    except (OSError, http.client.HTTPException) as exc:
        return ProbeResult(False, None, _ms(started), error=f"{type(exc).__name__}: {exc}"[:300])
    finally:
        conn.close()
    return ProbeResult(200 <= code < 300, code, _ms(started), requests=_reported_count(body))


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _reported_count(body: bytes) -> int | None:
    """The request count a server reports in its JSON health answer, if it does."""
    try:  # the server is the workload's: bounded depth, a RecursionError never escapes
        doc = untrusted.parse_json(body)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    for name in COUNT_FIELDS:
        value = doc.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


class HealthProbe(threading.Thread):
    """Probes the service until stopped; calls ``on_not_ready`` once if it is never healthy
    within the ready timeout."""

    def __init__(self, service: ServiceSpec, on_not_ready: Callable[[Breach], None],
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(name="ops-health-probe", daemon=True)
        self.service = service
        self.on_not_ready = on_not_ready
        self.clock = clock
        self.started = clock()
        self.state = "starting"
        self.ready_at: float | None = None
        self.last: ProbeResult | None = None
        self.last_probe_at: float | None = None
        self.probes = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.requests: int | None = None
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._gave_up = False

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.is_set():
            self.probe_once()
            if self._gave_up or self._halt.wait(self.service.probe_interval_sec):
                return

    def probe_once(self) -> None:
        result = probe(self.service.port, self.service.health, self.service.probe_timeout_sec)
        now = self.clock()
        with self._lock:
            self.probes += 1
            self.last, self.last_probe_at = result, now
            if result.requests is not None:
                self.requests = result.requests
            if result.ok:
                self.consecutive_failures = 0
                self.ready_at = self.ready_at or now
                self.state = "serving"
                return
            self.failures += 1
            self.consecutive_failures += 1
            if self.ready_at is not None:
                self.state = "unhealthy"
                return
        if now - self.started > self.service.ready_timeout_sec and not self._gave_up:
            self._gave_up = True
            detail = (f"HTTP {result.status_code}" if result.status_code is not None
                      else result.error or "no answer")
            self.on_not_ready(Breach(
                "failed", "not_ready",
                f"no healthy answer from http://127.0.0.1:{self.service.port}"
                f"{self.service.health} within {self.service.ready_timeout_sec:g} s "
                f"(last: {detail})"))

    def snapshot(self) -> dict[str, Any]:
        """The service block of heartbeat.json."""
        with self._lock:
            last = self.last
            return {
                "state": self.state, "port": self.service.port, "health": self.service.health,
                "ready_at": _iso(self.ready_at),
                "last_probe_at": _iso(self.last_probe_at),
                "last_status_code": last.status_code if last else None,
                "last_latency_ms": last.latency_ms if last else None,
                "last_error": last.error if last else None,
                "probes": self.probes, "failures": self.failures,
                "consecutive_failures": self.consecutive_failures,
                "requests": self.requests,
            }

    def final(self, ended: float) -> dict[str, Any]:
        """The service block of summary.json: how long it served and what it reported."""
        with self._lock:
            return {
                "port": self.service.port, "health": self.service.health,
                "state_at_end": self.state, "ready_at": _iso(self.ready_at),
                "ready_after_s": (round(self.ready_at - self.started, 3)
                                  if self.ready_at is not None else None),
                "uptime_s": (round(max(0.0, ended - self.ready_at), 3)
                             if self.ready_at is not None else None),
                "probes": self.probes, "failures": self.failures,
                "last_status_code": self.last.status_code if self.last else None,
                "requests": self.requests,
            }


def _iso(ts: float | None) -> str | None:
    return contract.iso(ts) if ts is not None else None
