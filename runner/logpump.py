"""The tee path: workload stdout+stderr into stdout.log, secrets redacted, metrics lifted.

With nothing to redact and no stdout metrics the pump copies chunks as they arrive. Otherwise
it works on whole lines, and holds back at most the length of the longest secret when a line
grows past LINE_LIMIT, so a secret split across two reads is still masked.
"""

from __future__ import annotations

import errno
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from runner import contract
from runner.redact import Redactor

CHUNK = 1 << 16
LINE_LIMIT = 1 << 16


class StdoutMetrics:
    """Regex patterns with named groups turn printed lines into metrics.jsonl records."""

    def __init__(self, patterns: Sequence[str], metrics_path: Path):
        self._patterns = [re.compile(p.encode()) for p in patterns]
        self._path = metrics_path
        self.records = 0

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def feed(self, lines: bytes) -> None:
        for line in lines.splitlines():
            for pattern in self._patterns:
                match = pattern.search(line)
                if match:
                    self._record(match.groupdict())

    def _record(self, groups: dict[str, Any]) -> None:
        step_raw = groups.pop("step", None)
        metrics = {}
        for name, raw in groups.items():
            value = _finite(raw)
            if value is not None:
                metrics[name] = value
        if not metrics:
            return
        step = int(float(step_raw)) if step_raw is not None and _finite(step_raw) is not None \
            else None
        contract.append_line(self._path, {"ts": contract.iso(), "step": step,
                                          "metrics": metrics, "source": "stdout"})
        self.records += 1


def _finite(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class LogPump:
    """Copy a pipe into the log until EOF; survives a full disk by counting what it dropped."""

    def __init__(self, source_fd: int, log_path: Path, redactor: Redactor,
                 metrics: StdoutMetrics | None = None,
                 on_bytes: Callable[[int], None] | None = None):
        self._fd = source_fd
        self._log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._redactor = redactor
        self._metrics = metrics if metrics else None
        self._on_bytes = on_bytes
        self._pending = b""
        self.bytes_in = 0
        self.bytes_dropped = 0
        self.write_errors: list[str] = []

    def run(self) -> None:
        line_mode = bool(self._redactor) or self._metrics is not None
        try:
            while True:
                chunk = os.read(self._fd, CHUNK)
                if not chunk:
                    break
                self.bytes_in += len(chunk)
                if line_mode:
                    self._take(chunk)
                else:
                    self._write(chunk)
                if self._on_bytes:
                    self._on_bytes(len(chunk))
            if self._pending:
                self._emit(self._pending)
                self._pending = b""
        finally:
            os.close(self._log)

    def _take(self, chunk: bytes) -> None:
        data = self._pending + chunk
        cut = data.rfind(b"\n") + 1
        if cut:
            self._emit(data[:cut])
            data = data[cut:]
        if len(data) > LINE_LIMIT:
            # a very long line: mask what is complete, keep a tail that may start a secret
            masked = self._redactor.redact(data)
            keep = min(self._redactor.holdback, len(masked))
            self._write(masked[: len(masked) - keep])
            data = masked[len(masked) - keep:]
        self._pending = data

    def _emit(self, lines: bytes) -> None:
        masked = self._redactor.redact(lines)
        self._write(masked)
        if self._metrics is not None:
            self._metrics.feed(masked)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._log, view)
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self.bytes_dropped += len(view)
                if len(self.write_errors) < 5:
                    self.write_errors.append(f"{time.strftime('%H:%M:%S')} {exc}")
                return
            view = view[written:]
