"""Secret values: where the wrapper learns them and how they are kept out of the log.

Secrets reach a run two ways, never through argv, a tmux environment or spec.json:
- a per-run store file, `<ops_home>/secrets/<run_id>.json` (mode 0600), written by `runner
  submit` from the values ops forwards on its stdin (the names the preset forwards) together
  with the run's seal key (runner/seal.py); the wrapper reads it and deletes it before the
  workload starts, and `status` deletes the store of a run that died before its wrapper could;
- credential files on the host (``~/.netrc`` and the like) that the workload reads itself; the
  wrapper reads them only to learn which values to redact.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner import seal

MASK = b"[REDACTED]"
STORE_DIR = ".secrets"  # under the outputs root when ops names no store
MIN_SECRET_LEN = 4  # shorter values would mask ordinary text and are not credentials anyway

_NETRC_SECRET = re.compile(r"\b(?:password|account)\s+(\S+)")
_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?[A-Za-z_][A-Za-z0-9_.-]*\s*[=:]\s*(.+?)\s*$")


def values_from_credentials_text(text: str) -> set[str]:
    """Every value a credentials file may hold: netrc passwords, KEY=VALUE values, bare lines."""
    found: set[str] = set(_NETRC_SECRET.findall(text))
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ASSIGNMENT.match(line)
        if match:
            found.add(match.group(1).strip().strip("'\""))
        elif not line.startswith(("machine ", "default")):
            found.add(line)
    return {value for value in found if len(value) >= MIN_SECRET_LEN}


def values_from_files(paths: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for name in paths:
        path = Path(os.path.expanduser(name))
        with contextlib.suppress(OSError, UnicodeDecodeError):
            found |= values_from_credentials_text(path.read_text(encoding="utf-8"))
    return found


@dataclass(frozen=True)
class Store:
    """What a run's store holds: the forwarded secrets and the run's seal key."""

    env: dict[str, str] = field(default_factory=dict)
    seal: str | None = None


def take_store(path: Path | None) -> Store:
    """Read the per-run secret store and delete it: it exists only until the workload starts."""
    if path is None:
        return Store()
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return Store()
    finally:
        with contextlib.suppress(OSError):
            Path(path).unlink()
    if not isinstance(data, dict):
        return Store()
    raw = data.get("env")
    env: dict[str, Any] = raw if isinstance(raw, dict) else {}
    seal_key = data.get("seal")
    return Store({str(k): v for k, v in env.items() if isinstance(v, str)},
                 seal_key if isinstance(seal_key, str) else None)


def peek_seal(spec: Mapping[str, Any]) -> str | None:
    """The seal key from a store the wrapper has not taken yet (a queued sweep member)."""
    path = store_path(spec)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    key = data.get("seal") if isinstance(data, dict) else None
    return key if isinstance(key, str) else None


def store_path(spec: Mapping[str, Any]) -> Path | None:
    """Where spec.json says the run's secret store is (None when it names none)."""
    secrets = spec.get("secrets")
    store = secrets.get("store") if isinstance(secrets, Mapping) else None
    if not isinstance(store, str) or not store:
        return None
    return Path(os.path.expanduser(store))


def discard_store(spec: Mapping[str, Any]) -> bool:
    """Delete the run's secret store if it is still on disk (its wrapper never got to it, or
    died before it could); True when one was removed."""
    path = store_path(spec)
    if path is None:
        return False
    try:
        path.unlink()
    except OSError:
        return False
    return True


def write_store(path: Path, store: Store) -> None:
    """Create the store with mode 0600 from the start (never readable by others, even briefly).
    The caller has just created the run's directory exclusively, so a file already at this
    path belongs to no live run (a wrapper killed before it took its store): it is replaced."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"env": store.env, "seal": store.seal}, fh)


def place_store(spec: dict[str, Any], secrets: Mapping[str, str], root: Path) -> str:
    """Draw the run's seal key, commit to it in the spec, and write the store (secrets + key)
    where spec.secrets.store says (by default under ``root/.secrets``). Returns the key."""
    key = seal.new_key()
    block = spec.setdefault("secrets", {})
    if not isinstance(block.get("store"), str) or not block.get("store"):
        block["store"] = str(root / STORE_DIR / f"{spec['run_id']}.json")
    spec["seal"] = {"sha256": seal.commitment(key)}
    write_store(Path(os.path.expanduser(block["store"])), Store(dict(secrets), key))
    return key


def _with_lines(values: Iterable[str]) -> set[str]:
    """Each value, and each line of a multi-line one (a PEM key printed line by line must not
    get through because no single write holds the whole value)."""
    found: set[str] = set()
    for value in values:
        found.add(value)
        if "\n" in value or "\r" in value:
            found.update(line.strip() for line in value.splitlines())
    return found


class Redactor:
    """Replace every registered value in a byte stream, also across chunk boundaries."""

    def __init__(self, values: Iterable[str]):
        encoded = {v.encode() for v in _with_lines(values) if len(v) >= MIN_SECRET_LEN}
        # longest first, so a secret that contains another is masked whole
        self._values = sorted(encoded, key=len, reverse=True)
        self.holdback = max((len(v) for v in self._values), default=1) - 1

    def __bool__(self) -> bool:
        return bool(self._values)

    def redact(self, data: bytes) -> bytes:
        for value in self._values:
            if value in data:
                data = data.replace(value, MASK)
        return data

    def redact_text(self, text: str) -> str:
        return self.redact(text.encode()).decode(errors="replace")
