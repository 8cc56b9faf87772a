"""The tee path: workload stdout+stderr into stdout.log, secrets redacted, metrics lifted.

With nothing to redact and no stdout metrics the pump copies chunks as they arrive. Otherwise
it works on whole lines, and holds back at most the length of the longest secret when a line
grows past LINE_LIMIT, so a secret split across two reads is still masked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from runner import contract
from runner.redact import Redactor

# the stdlib's regex parser (sre_parse until 3.10, re._parser since), used only to find a
# literal every match contains; it has no stable API, so any surprise means "no shortcut"
_sre_parser: Any = importlib.import_module(
    "re._parser" if sys.version_info >= (3, 11) else "sre_parse")

CHUNK = 1 << 20  # a read returns what the pipe holds, up to this
LINE_CHUNK = 1 << 16  # in line mode (redacting) smaller reads keep the several passes in cache
PIPE_SIZE = 1 << 20  # asked of the kernel for the workload's pipe (Linux), so that a fast
# printer fills bigger reads and the pump's per-read work is spread over more bytes
FLUSH_SEC = 0.2  # metrics.jsonl records lifted from stdout are written at most this late
_WORD = re.compile(rb"[A-Za-z0-9_]+")
LINE_LIMIT = 1 << 16


def compile_metric_pattern(text: str) -> re.Pattern[bytes]:
    """A `metrics_from_stdout` pattern compiled the one way the runner uses it: as a bytes
    regex over the UTF-8 text. The config model validates patterns with this same function,
    so a pattern that is fine as text but not as bytes (``(?u)``, ``\\N{...}``, a lone
    surrogate) is refused before a run starts. ValueError says what is wrong."""
    shown = repr(text) if len(text) <= 80 else f"{text[:77]!r}..."
    try:
        raw = text.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{shown} is not valid UTF-8 text (a lone surrogate?)") from None
    try:
        compiled = re.compile(raw)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {shown} (compiled as bytes, the way "
                         f"the runner reads stdout): {exc}") from None
    except (RecursionError, OverflowError, ValueError) as exc:  # absurd nesting or repeats
        raise ValueError(f"regular expression {shown} is too complex: {exc}") from None
    if not set(compiled.groupindex) - {"step"}:
        raise ValueError("pattern needs at least one named group other than 'step', "
                         "e.g. 'loss (?P<loss>[0-9.eE+-]+)'")
    return compiled


class StdoutMetrics:
    """Regex patterns with named groups turn printed lines into metrics.jsonl records.

    A pattern is only tried on lines that hold its longest required literal (found with
    ``bytes.find`` over the whole chunk, in C), not on every line: at full speed a log has
    millions of lines and few metric lines. A chunk's records go out in one write.
    """

    def __init__(self, patterns: Sequence[str], metrics_path: Path):
        self._patterns = [compile_metric_pattern(p) for p in patterns]
        # a literal every match must contain: only lines holding it are searched
        self._needles = [required_literal(p) for p in self._patterns]
        self._path = metrics_path
        self._fd: int | None = None
        self._carry = b""
        self._batch: list[dict[str, Any]] = []
        self._flushed_at = 0.0
        self.records = 0
        self.records_dropped = 0
        # lines each pattern turned into a record, in pattern order: a pattern still at zero
        # when the run ends lost its metrics silently, and the summary says so
        self.matches = [0] * len(self._patterns)

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def feed_stream(self, chunk: bytes) -> None:
        """Feed raw pipe output: whole lines now, a partial last line when its end arrives.
        The chunk itself is never copied; only the line that straddles two chunks is."""
        last = chunk.rfind(b"\n")
        if last < 0:
            self._carry += chunk
            if len(self._carry) > LINE_LIMIT:  # a giant line: take it as it is
                self.feed(self._carry)
                self._carry = b""
            return
        begin = 0
        if self._carry:
            begin = chunk.find(b"\n") + 1
            joined = self._carry + chunk[:begin]
            if self._could_match(joined):
                self.feed(joined)
        self.feed(chunk, begin, last + 1)
        self._carry = chunk[last + 1:]

    def _could_match(self, text: bytes) -> bool:
        return any(needle is None or needle in text for needle in self._needles)

    def flush(self) -> None:
        if self._carry:
            self.feed(self._carry)
            self._carry = b""

    def feed(self, text: bytes, begin: int = 0, stop: int | None = None) -> None:
        """Record every match in text[begin:stop], in line order; the per-line loop runs only
        on candidate lines."""
        stop = len(text) if stop is None else stop
        if text.find(b"\r", begin, stop) >= 0:  # a carriage return ends a line, as splitlines()
            text, begin, stop = text[begin:stop].replace(b"\r", b"\n"), 0, stop - begin
        found: list[tuple[int, int, dict[str, Any]]] = []
        for index, (pattern, needle) in enumerate(zip(self._patterns, self._needles, strict=True)):
            if needle is None:
                found += _each_line(pattern, index, text[begin:stop], begin)
                continue
            pos = begin
            while (hit := text.find(needle, pos, stop)) >= 0:
                start = text.rfind(b"\n", begin, hit) + 1 or begin
                end = text.find(b"\n", hit, stop)
                end = stop if end < 0 else end
                match = pattern.search(text[start:end])
                if match:
                    found.append((start, index, match.groupdict()))
                pos = end + 1
        if not found:
            return
        ts = contract.iso()
        records = []
        for _, index, groups in sorted(found, key=lambda item: item[:2]):
            record = _record(groups, ts)
            if record is not None:
                records.append(record)
                self.matches[index] += 1
        self._batch += records
        if time.monotonic() - self._flushed_at >= FLUSH_SEC:
            self._append()

    def _append(self) -> None:
        """The batched records in one write of whole lines, on an fd kept open; at most
        FLUSH_SEC late, which the heartbeat (seconds apart) never notices. A write error (a
        full disk) drops them and is counted: the pump must keep draining the pipe."""
        records, self._batch = self._batch, []
        self._flushed_at = time.monotonic()
        if not records:
            return
        try:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(self._fd, b"".join(contract.json_line(r) for r in records))
        except OSError:
            self.records_dropped += len(records)
            return
        self.records += len(records)

    def close(self) -> None:
        self._append()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _record(groups: dict[str, Any], ts: str) -> dict[str, Any] | None:
    step_raw = groups.pop("step", None)
    metrics = {}
    for name, raw in groups.items():
        value = _finite(raw)
        if value is not None:
            metrics[name] = value
    if not metrics:
        return None
    step = int(float(step_raw)) if step_raw is not None and _finite(step_raw) is not None \
        else None
    return {"ts": ts, "step": step, "metrics": metrics, "source": "stdout"}


def _each_line(pattern: re.Pattern[bytes], index: int, text: bytes,
               offset: int = 0) -> list[tuple[int, int, dict[str, Any]]]:
    found = []
    for line in text.split(b"\n"):
        match = pattern.search(line)
        if match:
            found.append((offset, index, match.groupdict()))
        offset += len(line) + 1
    return found


def required_literal(pattern: re.Pattern[bytes], shortest: int = 3) -> bytes | None:
    """The longest run of literal bytes that every match of ``pattern`` contains, or None.

    Only the pattern's top-level sequence and its plain groups count (not alternatives,
    repeats, lookarounds or case-insensitive parts), so a line without the run cannot match.
    """
    try:
        parsed = _sre_parser.parse(pattern.pattern, pattern.flags)
    except Exception:  # noqa: BLE001 - a private parser: a surprise means "no shortcut"
        return None
    if parsed.state.flags & re.IGNORECASE:
        return None
    runs: list[bytes] = []
    _literal_runs(list(parsed), runs)
    # any piece of a required run is required too; a word without spaces or punctuation is
    # found fastest (bytes.find skips ahead on characters the needle lacks, and log text is
    # full of spaces), so the longest such word wins when it is long enough
    words = [w for run in runs for w in _WORD.findall(run)]
    best_word = max(words, key=len, default=b"")
    if len(best_word) >= 4:
        return best_word
    best = max(runs, key=len, default=b"")
    return best if len(best) >= shortest else None


def _literal_runs(items: list[Any], runs: list[bytes]) -> None:
    run = bytearray()
    for op, arg in items:
        if op is _sre_parser.LITERAL and arg not in (10, 13):
            run.append(arg)
            continue
        runs.append(bytes(run))
        run = bytearray()
        if op is _sre_parser.SUBPATTERN and not arg[1] and not arg[2]:
            _literal_runs(list(arg[3]), runs)
    runs.append(bytes(run))


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
        _grow_pipe(source_fd)
        self._log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._redactor = redactor
        self._metrics = metrics if metrics else None
        self._on_bytes = on_bytes
        self._pending = b""
        self.bytes_in = 0
        self.bytes_dropped = 0
        self.write_errors: list[str] = []

    def run(self) -> None:
        # with secrets to mask the pump assembles whole lines; without, chunks go straight to
        # the log and the metrics patterns read the same chunks in place
        line_mode = bool(self._redactor)
        try:
            while True:
                chunk = os.read(self._fd, LINE_CHUNK if line_mode else CHUNK)
                if not chunk:
                    break
                self.bytes_in += len(chunk)
                if line_mode:
                    self._take(chunk)
                else:
                    self._write(chunk)
                    if self._metrics is not None:
                        self._metrics.feed_stream(chunk)
                if self._on_bytes:
                    self._on_bytes(len(chunk))
            if self._pending:
                self._emit(self._pending)
                self._pending = b""
        finally:
            os.close(self._log)
            if self._metrics is not None:
                self._metrics.flush()
                self._metrics.close()

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


def _grow_pipe(fd: int) -> None:
    """Ask for a bigger pipe buffer; where the kernel says no, the default (64 KiB) stays."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", 1031)
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, setsize, PIPE_SIZE)
