"""The optional parts of a `runner report-data` record: metric series, per-volume rows and
splits, the stdout tail, the heartbeat, the raw documents of a diff, the host's GPUs now.

Each reader bounds what it reads and type-checks what it keeps; anything unusable becomes an
absent part plus a note, never an exception. Standard library only.
"""

from __future__ import annotations

import math
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner import contract

PER_VOLUME = "per_volume.json"
SPLITS = "splits.json"
VOLUME_FIELDS = ("dsc", "cldice", "masd", "hd95")
MAX_VOLUME_ROWS = 20_000
MAX_SERIES_METRICS = 64
TEXT_LIMIT = 64 << 10  # bytes read from the end of stdout.log or from command.sh
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def series_of(run_dir: Path, points: int) -> dict[str, Any]:
    """``series``: metric -> [[step, value], ...] with at most ``points`` points each (evenly
    spaced over the run, the last point always kept); ``series_records``: records read;
    ``series_notes``: torn or unparseable lines."""
    read = contract.read_jsonl(run_dir / contract.METRICS)
    by_name: dict[str, list[list[float]]] = {}
    for index, record in enumerate(read.records):
        metrics = record.get("metrics")
        if not isinstance(metrics, dict):
            continue
        step = record.get("step")
        x = float(step) if isinstance(step, int) and not isinstance(step, bool) else index
        for name, raw in metrics.items():
            value = _finite(raw)
            if value is None:
                continue
            if name not in by_name and len(by_name) >= MAX_SERIES_METRICS:
                continue
            by_name.setdefault(str(name), []).append([x, value])
    return {"series": {name: downsample(values, points) for name, values in by_name.items()},
            "series_records": len(read.records), "series_notes": read.warnings[:5]}


def downsample(values: list[list[float]], points: int) -> list[list[float]]:
    """``points`` evenly spaced items of ``values`` (all of them when there are fewer)."""
    n = len(values)
    if n <= points or points <= 0:
        return values
    if points == 1:
        return [values[-1]]
    picks = sorted({round(i * (n - 1) / (points - 1)) for i in range(points)})
    return [values[i] for i in picks]


def per_volume(run_dir: Path) -> list[dict[str, Any]] | None:
    """The trainer's per-volume validation rows (``out/per_volume.json``), or None."""
    doc = contract.read_json_or_none(run_dir / contract.OUT_DIR / PER_VOLUME)
    if doc is None or not isinstance(doc.get("rows"), list):
        return None
    rows = []
    for row in doc["rows"][:MAX_VOLUME_ROWS]:
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            continue
        fold = row.get("fold")
        rows.append({"fold": fold if isinstance(fold, int) and not isinstance(fold, bool)
                     else None, "name": row["name"][:200],
                     **{f: _finite(row.get(f)) for f in VOLUME_FIELDS}})
    return rows


def splits_of(run_dir: Path) -> dict[str, Any] | None:
    """k, seed and each fold's validation cases from ``out/splits.json``, or None."""
    doc = contract.read_json_or_none(run_dir / contract.OUT_DIR / SPLITS)
    if doc is None or not isinstance(doc.get("folds"), list):
        return None
    val = []
    for fold in doc["folds"][:1000]:
        names = fold.get("val") if isinstance(fold, dict) else None
        val.append(sorted(str(n) for n in names) if isinstance(names, list) else [])
    k, seed = doc.get("k"), doc.get("seed")
    return {"k": k if isinstance(k, int) else None, "seed": seed if isinstance(seed, int)
            else None, "val": val}


def read_text_tail(path: Path, limit: int = TEXT_LIMIT) -> str | None:
    """The last ``limit`` bytes of a regular file as text (None when absent or not a regular
    file): opened without following links and without blocking on a FIFO."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        os.lseek(fd, max(0, info.st_size - limit), os.SEEK_SET)
        data = os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace")


def tail_lines(path: Path, lines: int) -> list[str]:
    text = read_text_tail(path)
    if not text:
        return []
    return [line[:500] for line in text.splitlines()[-lines:]]


def heartbeat_of(run_dir: Path) -> dict[str, Any] | None:
    """The heartbeat's step, phase and timestamps, and its age by this host's clock."""
    path = run_dir / contract.HEARTBEAT
    doc = contract.read_json_or_none(path)
    if doc is None or contract.check_schema_tag(doc, "heartbeat") is not None:
        return None
    try:
        age = round(time.time() - os.lstat(path).st_mtime, 2)
    except OSError:
        age = None
    keep = ("seq", "ts", "interval_s", "phase", "step", "last_step_at", "rss_bytes",
            "gpu_memory_bytes")
    return {**{k: doc.get(k) for k in keep if isinstance(doc.get(k), (str, int, float))},
            "age_s": age}


def _contract_doc(path: Path, name: str) -> dict[str, Any] | None:
    doc = contract.read_json_or_none(path)
    if doc is None or contract.check_schema_tag(doc, name) is not None:
        return None
    return doc


def docs_of(run_dir: Path, meta: Mapping[str, Any]) -> dict[str, Any]:
    """What `ops run diff` compares: config, command, env, dataset manifest, git facts."""
    return {"config_effective": _contract_doc(run_dir / contract.CONFIG_EFFECTIVE,
                                              "config_effective"),
            "env_snapshot": _contract_doc(run_dir / contract.ENV_SNAPSHOT, "env_snapshot"),
            "dataset_manifest": _contract_doc(run_dir / contract.DATASET_MANIFEST,
                                              "dataset_manifest"),
            "command_sh": read_text_tail(run_dir / contract.COMMAND),
            "run_metadata": dict(meta) or None}


def gpus_now() -> list[dict[str, Any]]:
    """The host's GPUs as NVML sees them at this moment ([] without a GPU or NVML)."""
    try:
        from runner import gpu

        return gpu.devices()
    except Exception:  # noqa: BLE001 - a broken driver must not fail a report
        return []
