"""The run-directory contract: names, versions, ids and durable file primitives.

Both sides import this module: the pod-side runner writes what it describes and the
laptop-side ``ops`` reads it back. It uses the standard library only.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from runner import seal, untrusted

# the readers of an untrusted run dir live in runner.untrusted; the contract names them too
JSON_LIMIT = untrusted.JSON_LIMIT
JSONL_LIMIT = untrusted.JSONL_LIMIT
MAX_DEPTH = untrusted.MAX_DEPTH
ContractError = untrusted.ContractError
JsonlRead = untrusted.JsonlRead
file_kind = untrusted.file_kind
iter_jsonl_from = untrusted.iter_jsonl_from
open_regular = untrusted.open_regular
parse_json = untrusted.parse_json
read_json = untrusted.read_json
read_json_or_none = untrusted.read_json_or_none
read_jsonl = untrusted.read_jsonl
read_jsonl_bytes = untrusted.read_jsonl_bytes
read_regular_bytes = untrusted.read_regular_bytes
sha256_file = untrusted.sha256_file
too_deep = untrusted.too_deep

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
DERIVED_STATUSES = ("queued", "launching", "running", "stalled", "dead", "invalid",
                    "starting", "serving", "unhealthy")  # the last three: a live service
WRITERS = ("wrapper", "runner")

RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


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
    # os.urandom(n).hex() is secrets.token_hex(n), without importing secrets (hmac, random)
    return validate_run_id(f"{base}-{stamp}-{os.urandom(2).hex()}")


# ---------------------------------------------------------------------------
# durable writes


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# the temp file atomic_write_with makes: mkstemp(prefix=".<name>.", suffix=".tmp") adds eight
# characters from [a-z0-9_]; a kill before the replace leaves it behind
TEMP_NAME_RE = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temp file of an interrupted atomic write."""
    return TEMP_NAME_RE.fullmatch(name) is not None


def atomic_write_with(path: Path, write: Callable[[BinaryIO], object],
                      mode: int = 0o644) -> None:
    """Let ``write`` fill a temp file beside ``path``, then flush, fsync, replace, fsync the
    directory: readers see the old file or the new one, never a mix."""
    import tempfile  # here, not at the top: `ops` imports this module for every command

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
# the runner's summary


def read_runner_summary(run_dir: Path) -> dict[str, Any] | None:
    """summary.json when the runner wrote it and it carries the run's seal; None when absent,
    not the runner's (a workload may write a file of that name: it never ends a run), or not
    sealed with the key spec.json commits to. Liveness is not checked here: see
    ``runner.status.final_summary``."""
    return runner_summary(Path(run_dir))[0]


def summary_problem(run_dir: Path) -> str | None:
    """Why summary.json of ``run_dir`` does not end the run (None when absent or when it is
    the runner's sealed summary)."""
    return runner_summary(Path(run_dir))[1]


_UNREAD: Any = object()


def runner_summary(run_dir: Path, *, spec: dict[str, Any] | None = _UNREAD,
                   ) -> tuple[dict[str, Any] | None, str | None]:
    """(summary, None) when summary.json is the runner's and sealed; (None, why not) when it
    is present but is not; (None, None) when it is absent. ``spec``: spec.json as the caller
    read it already (None: absent), so that a status reads it once."""
    run_dir = Path(run_dir)
    try:
        doc = read_json(run_dir / SUMMARY)
    except FileNotFoundError:
        return None, None
    except (OSError, ContractError) as exc:
        return None, str(exc)
    tag_problem = check_schema_tag(doc, "summary")
    if tag_problem is not None:
        return None, f"summary.json: {tag_problem}"
    if doc.get("written_by") not in WRITERS:
        return None, f"summary.json: written_by is {_short(doc.get('written_by'))}, not the runner"
    if spec is _UNREAD:
        try:
            spec = read_json(run_dir / SPEC)
        except FileNotFoundError:
            spec = None
        except (OSError, ContractError) as exc:
            return None, f"summary.json cannot be checked against spec.json: {exc}"
    sealed = seal.problem(doc, spec)
    return (doc, None) if sealed is None else (None, sealed)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."



def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def from_expected_build() -> bool:
    """ops names the runner build it wants in OPS_RUNNER_DIR; a runner imported from anywhere
    else (an older copy in site-packages, say, when that build is gone) must not answer for it."""
    expected = os.environ.get("OPS_RUNNER_DIR")
    return not expected or Path(__file__).resolve().parent.parent == Path(expected).resolve()
