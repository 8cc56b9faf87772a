"""The run-directory contract: names, versions, ids and durable file primitives.

Both sides import this module: the pod-side runner writes what it describes and the
laptop-side ``ops`` reads it back. It uses the standard library only.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

SCHEMA_MAJOR = 1

# file names of the contract
SPEC = "spec.json"
COMMAND = "command.sh"
METADATA = "run_metadata.json"
CONFIG_EFFECTIVE = "config_effective.json"
ENV_SNAPSHOT = "env_snapshot.json"
DATASET_MANIFEST = "dataset_manifest.json"
STDOUT_LOG = "stdout.log"
HEARTBEAT = "heartbeat.json"
METRICS = "metrics.jsonl"
EVENTS = "events.jsonl"
CHECKPOINTS_DIR = "checkpoints"
EXIT = "exit.json"
SUMMARY = "summary.json"
OUT_DIR = "out"
WRAPPER_LOG = "wrapper.log"  # the wrapper's own stderr: empty unless the runner itself breaks

# JSON files and the schema name each carries as "ops.<name>/<major>"
JSON_FILES: dict[str, str] = {
    SPEC: "spec",
    METADATA: "run_metadata",
    CONFIG_EFFECTIVE: "config_effective",
    ENV_SNAPSHOT: "env_snapshot",
    DATASET_MANIFEST: "dataset_manifest",
    HEARTBEAT: "heartbeat",
    EXIT: "exit",
    SUMMARY: "summary",
}
JSONL_FILES: dict[str, str] = {METRICS: "metrics_record", EVENTS: "event"}

# files the runner writes once and later checks for replacement by the workload
RUNNER_OWNED = (SPEC, COMMAND, METADATA, CONFIG_EFFECTIVE, ENV_SNAPSHOT, DATASET_MANIFEST)

DEFAULT_REQUIRED = (
    SPEC,
    COMMAND,
    METADATA,
    CONFIG_EFFECTIVE,
    ENV_SNAPSHOT,
    STDOUT_LOG,
    HEARTBEAT,
    EVENTS,
    EXIT,
    SUMMARY,
)

# statuses recorded in summary.json
RECORDED_STATUSES = ("completed", "failed", "killed", "timeout", "aborted")
# statuses a reader derives, never stored
DERIVED_STATUSES = ("queued", "launching", "running", "stalled", "dead", "invalid")
WRITERS = ("wrapper", "runner")

RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ContractError(Exception):
    """A file or name that breaks the run-directory contract."""


class RunDirExists(ContractError):
    """The run directory already exists; run directories are never reused."""


def schema_tag(name: str) -> str:
    return f"ops.{name}/{SCHEMA_MAJOR}"


def check_schema_tag(doc: Mapping[str, Any], name: str) -> str | None:
    """Return a problem with ``doc["schema"]`` or None when it is ours and current."""
    tag = doc.get("schema")
    if not isinstance(tag, str):
        return "missing 'schema' field"
    prefix = f"ops.{name}/"
    if not tag.startswith(prefix):
        return f"schema is {tag!r}, expected {schema_tag(name)!r}"
    if tag != schema_tag(name):
        return f"unknown major version {tag!r} (this reader knows {schema_tag(name)!r})"
    return None


def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` or raise ContractError: it becomes a directory name on the host."""
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id):
        raise ContractError(
            f"invalid run id {run_id!r}: use 1-128 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit (no '/' and no '..')"
        )
    if ".." in run_id:
        raise ContractError(f"invalid run id {run_id!r}: '..' is not allowed")
    return run_id


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def iso(ts: _dt.datetime | float | None = None) -> str:
    """UTC ISO-8601 with a trailing Z and millisecond precision."""
    if ts is None:
        ts = utc_now()
    elif isinstance(ts, (int, float)):
        ts = _dt.datetime.fromtimestamp(ts, _dt.timezone.utc)
    return ts.astimezone(_dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def parse_iso(text: str) -> _dt.datetime:
    if not isinstance(text, str) or not text.endswith("Z"):
        raise ValueError(f"not a UTC timestamp ending in Z: {text!r}")
    return _dt.datetime.fromisoformat(text[:-1] + "+00:00")


def new_run_id(preset: str, now: _dt.datetime | None = None) -> str:
    stamp = (now or utc_now()).strftime("%Y%m%dT%H%M%S")
    base = re.sub(r"[^A-Za-z0-9._-]", "-", preset)[:100] or "run"
    return validate_run_id(f"{base}-{stamp}-{secrets.token_hex(2)}")


# ---------------------------------------------------------------------------
# durable writes


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_with(path: Path, write: Callable[[BinaryIO], object],
                      mode: int = 0o644) -> None:
    """Let ``write`` fill a temp file beside ``path``, then flush, fsync, replace, fsync the
    directory: readers see the old file or the new one, never a mix."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    atomic_write_with(path, lambda fh: fh.write(data), mode)


def dumps(doc: Mapping[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=False, allow_nan=False) + "\n").encode()


def atomic_write_json(path: Path, doc: Mapping[str, Any]) -> bytes:
    data = dumps(doc)
    atomic_write_bytes(path, data)
    return data


def json_line(record: Mapping[str, Any]) -> bytes:
    return (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()


def append_line(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON object as one whole line in a single write."""
    line = json_line(record)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def make_run_dir(root: Path, run_id: str) -> Path:
    """Create ``root/run_id`` exclusively; an existing run dir is never reused."""
    validate_run_id(run_id)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    run_dir = root / run_id
    try:
        run_dir.mkdir()
    except FileExistsError as exc:
        raise RunDirExists(f"run {run_id!r} already exists at {run_dir}") from exc
    fsync_dir(root)
    return run_dir


# ---------------------------------------------------------------------------
# reading


def read_json(path: Path) -> dict[str, Any]:
    """Parse a JSON object file; raise ContractError with a reason otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise ContractError(f"{Path(path).name}: unreadable: {exc}") from exc
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise ContractError(f"{Path(path).name}: not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ContractError(f"{Path(path).name}: expected a JSON object")
    return doc


def read_json_or_none(path: Path) -> dict[str, Any] | None:
    try:
        return read_json(path)
    except (FileNotFoundError, ContractError):
        return None


def read_runner_summary(run_dir: Path) -> dict[str, Any] | None:
    """summary.json when the runner wrote it; None when absent or not the runner's (a workload
    may write a file of that name: it never ends a run)."""
    doc = read_json_or_none(Path(run_dir) / SUMMARY)
    if doc is None or check_schema_tag(doc, "summary") is not None:
        return None
    return doc if doc.get("written_by") in WRITERS else None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in contract files")


@dataclass
class JsonlRead:
    """Records of a JSONL file; a torn last line is dropped and reported, not fatal."""

    records: list[dict[str, Any]] = field(default_factory=list)
    torn_tail: bool = False
    bad_lines: list[int] = field(default_factory=list)  # 1-based, complete but unparseable

    @property
    def warnings(self) -> list[str]:
        notes = []
        if self.torn_tail:
            notes.append("last line is incomplete (torn write); it was ignored")
        notes.extend(f"line {n} is not a JSON object" for n in self.bad_lines)
        return notes


def read_jsonl(path: Path) -> JsonlRead:
    result = JsonlRead()
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return result
    lines = data.split(b"\n")
    tail = lines.pop()  # text after the last newline: empty unless the last write was torn
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        record = _parse_line(raw)
        if record is None:
            result.bad_lines.append(number)
        else:
            result.records.append(record)
    if tail.strip():
        record = _parse_line(tail)
        if record is None:
            result.torn_tail = True
        else:
            result.records.append(record)
    return result


def iter_jsonl_from(path: Path, offset: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (end offset, record) for whole lines after ``offset``; stops at a torn tail."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return
    pos = offset
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n"):
            return
        pos += len(raw)
        record = _parse_line(raw)
        if record is not None:
            yield pos, record


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
