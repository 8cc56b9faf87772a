"""`runner.track`: how a workload reports metrics and events into its run directory.

    from runner import track
    track.log({"loss": 0.42}, step=10)       # or track.log(loss=0.42, step=10)
    track.phase("eval")
    track.event("checkpoint", path="checkpoints/ckpt_last.pt")

The run directory is found through ``OPS_RUN_DIR``, which the wrapper sets. Outside a run
(the variable unset) every call is a no-op, so the same script runs by hand unchanged.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner import contract


class EventLog:
    """Appends events.jsonl lines with a per-source sequence number."""

    def __init__(self, path: Path, run_id: str, source: str):
        self.path = path
        self.run_id = run_id
        self.source = source
        self._seq = 0
        # reentrant: the wrapper's signal handlers emit too, and a handler can run on the
        # main thread while that thread is inside emit()
        self._lock = threading.RLock()

    def emit(self, type_: str, **fields: Any) -> None:
        with self._lock:
            self._seq += 1
            record = {"ts": contract.iso(), "seq": self._seq, "type": type_,
                      "source": self.source, **{k: jsonable(v) for k, v in fields.items()}}
            # a full disk must not take the run down with it; the summary says the rest
            with contextlib.suppress(OSError):
                contract.append_line(self.path, record)


MAX_DEPTH = 32


def jsonable(value: Any, depth: int = 0) -> Any:
    """A value that JSON can hold, the same inside a run as outside one: paths and other
    objects become their text, containers are walked (to a bounded depth), non-finite floats
    become their text too (contract files never hold NaN)."""
    if value is None or isinstance(value, (bool, int, str)) \
            or (isinstance(value, float) and math.isfinite(value)):
        return value
    if depth >= MAX_DEPTH:
        return str(value)[:1000]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v, depth + 1) for v in value]
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


class Tracker:
    def __init__(self, run_dir: Path | None):
        self.run_dir = run_dir
        self._events = (EventLog(run_dir / contract.EVENTS, run_dir.name, source="track")
                        if run_dir else None)

    @property
    def active(self) -> bool:
        return self.run_dir is not None

    def log(self, metrics: Mapping[str, float] | None = None, step: int | None = None,
            **named: float) -> None:
        """Record metrics at ``step``: ``log({"loss": 0.1}, step=3)`` or
        ``log(loss=0.1, step=3)`` (both forms may be mixed)."""
        clean = {}
        for name, value in {**(metrics or {}), **named}.items():
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(f"metric {name!r} is {number}: only finite numbers are recorded")
            clean[str(name)] = number
        if self.run_dir is None:
            return
        record = {"ts": contract.iso(), "step": None if step is None else int(step),
                  "metrics": clean, "source": "track"}
        contract.append_line(self.run_dir / contract.METRICS, record)

    def event(self, type_: str, **fields: Any) -> None:
        clean = {k: jsonable(v) for k, v in fields.items()}  # the same checks outside a run
        if self._events is not None:
            self._events.emit(type_, **clean)

    def phase(self, name: str, **fields: Any) -> None:
        self.event("phase", phase=name, **fields)

    def checkpoints_dir(self) -> Path | None:
        return self.run_dir / contract.CHECKPOINTS_DIR if self.run_dir else None


def _from_env() -> Tracker:
    value = os.environ.get("OPS_RUN_DIR")
    if os.environ.get("RANK", "0") != "0":
        return Tracker(None)  # under torchrun only rank 0 writes the run's metrics and events
    return Tracker(Path(value) if value else None)


_tracker = _from_env()
log = _tracker.log
event = _tracker.event
phase = _tracker.phase
checkpoints_dir = _tracker.checkpoints_dir
active = _tracker.active
