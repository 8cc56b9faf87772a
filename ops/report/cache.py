"""A record cache for local reports: a finished run is read once, not at every report.

A run whose status is recorded (completed, failed, killed, timeout, aborted) never changes its
summary, config or metadata again (nor does a run made invalid by a damaged spec.json or
summary.json, until those files change). Its record (the plain one of the table formats: no series,
no per-volume rows) is kept in ``.ops/report-cache/<hash of the runs' parent dir>.json`` with
a stamp of the files it came from: inode, size, mtime and ctime (ns) of spec.json,
summary.json, run_metadata.json and config_effective.json. The next report lstats those files
(no open, no parse) and reuses the record when the stamp is unchanged; any change, a live or
invalid run, or a damaged cache file means the run is read again. ``--no-cache`` skips it.

The stamp is taken *before* a run is read, so a file written during the read leaves a stale
stamp and the run is read again next time.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from runner import contract

CACHE_SCHEMA = "ops.report_cache/1"
STAMPED = (contract.SPEC, contract.SUMMARY, contract.METADATA, contract.CONFIG_EFFECTIVE)
Stamp = list[list[int] | None]


def stamp(run_dir: str) -> Stamp:
    out: Stamp = []
    for name in STAMPED:
        try:
            info = os.lstat(os.path.join(run_dir, name))
        except OSError:
            out.append(None)
            continue
        out.append([info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns])
    return out


class RecordCache:
    """Records of finished runs under one parent dir, keyed by run dir name."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        self.changed = False
        if path is not None:
            self._load(path)

    @classmethod
    def for_parent(cls, ops_dir: Path, parent: Path) -> RecordCache:
        digest = hashlib.sha256(str(parent.absolute()).encode()).hexdigest()[:20]
        return cls(ops_dir / "report-cache" / f"{digest}.json")

    def _load(self, path: Path) -> None:
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return  # absent or damaged: start over
        if isinstance(doc, dict) and doc.get("schema") == CACHE_SCHEMA and \
                isinstance(doc.get("runs"), dict) and isinstance(doc.get("configs"), list):
            self.entries = self._resolved(doc["runs"], doc["configs"])

    def get(self, name: str, current: Stamp) -> dict[str, Any] | None:
        entry = self.entries.get(name)
        if not (isinstance(entry, dict) and entry.get("stamp") == current and
                isinstance(entry.get("record"), dict)):
            return None
        record = dict(entry["record"])
        record.setdefault("notes", [])
        return record

    @staticmethod
    def _resolved(runs: dict[str, Any], configs: list[Any]) -> dict[str, dict[str, Any]]:
        """Entries with their config back in place; an entry that does not fit is dropped."""
        out = {}
        for name, entry in runs.items():
            record = entry.get("record") if isinstance(entry, dict) else None
            ref = record.pop("config_ref", None) if isinstance(record, dict) else None
            if isinstance(ref, int) and 0 <= ref < len(configs) and \
                    isinstance(configs[ref], dict):
                record["config"] = configs[ref]  # type: ignore[index]
                out[name] = entry
        return out

    def _interned(self) -> dict[str, Any]:
        """Runs with each distinct config stored once (a sweep's runs share most of it)."""
        configs: list[dict[str, Any]] = []
        index: dict[str, int] = {}
        runs: dict[str, Any] = {}
        for name, entry in self.entries.items():
            record = {k: v for k, v in entry["record"].items()
                      if v is not None and v != [] and k != "run_dir"}
            if "config" in record:
                config = record.pop("config")
                text = json.dumps(config, sort_keys=True)
                if text not in index:
                    index[text] = len(configs)
                    configs.append(config)
                record["config_ref"] = index[text]
            runs[name] = {"stamp": entry["stamp"], "record": record}
        return {"configs": configs, "runs": runs}

    def put(self, name: str, current: Stamp, record: dict[str, Any]) -> None:
        if _final(record):
            self.entries[name] = {"stamp": current, "record": record}
            self.changed = True
        elif self.entries.pop(name, None) is not None:
            self.changed = True

    def save(self) -> None:
        if self.path is None or not self.changed:
            return
        data = json.dumps({"schema": CACHE_SCHEMA, **self._interned()},
                          separators=(",", ":")).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            contract.atomic_write_bytes(self.path, data)
        except OSError:
            return  # a read-only project or a full disk: the next report reads the runs again
        self.changed = False


def _final(record: dict[str, Any]) -> bool:
    """A record that only a change of its stamped files can change: a recorded status, or
    invalid because spec.json or summary.json is damaged."""
    if record.get("status") in contract.RECORDED_STATUSES:
        return True
    reason = str(record.get("reason") or "")
    return record.get("status") == "invalid" and reason.startswith(STAMPED_REASONS)


STAMPED_REASONS = ("spec.json:", "summary.json:")
