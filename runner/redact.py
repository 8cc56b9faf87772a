"""Secret values: where the wrapper learns them and how they are kept out of the log.

Secrets reach a run two ways, never through argv, a tmux environment or spec.json:
- a per-run store file, `<ops_home>/secrets/<run_id>.json` (mode 0600), written by ops from the
  submitter's environment for the names the preset forwards; the wrapper reads it and deletes it
  before the workload starts;
- credential files on the host (``~/.netrc`` and the like) that the workload reads itself; the
  wrapper reads them only to learn which values to redact.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

MASK = b"[REDACTED]"
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


def take_store(path: Path | None) -> dict[str, str]:
    """Read the per-run secret store and delete it: it exists only until the workload starts."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    finally:
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}


def discard_store(spec: Mapping[str, Any]) -> bool:
    """Delete the run's secret store if it is still on disk (its wrapper never got to it, or
    died before it could); True when one was removed."""
    secrets = spec.get("secrets")
    store = secrets.get("store") if isinstance(secrets, Mapping) else None
    if not isinstance(store, str) or not store:
        return False
    try:
        Path(os.path.expanduser(store)).unlink()
    except FileNotFoundError:
        return False
    except OSError:
        return False
    return True


def write_store(path: Path, secrets: dict[str, str]) -> None:
    """Create the store with mode 0600 from the start (never readable by others, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(secrets, fh)


def place_store(spec: dict[str, Any], secrets: dict[str, str]) -> None:
    """Write the run's store where spec.secrets.store says, or record that it has none."""
    store = spec.setdefault("secrets", {}).get("store")
    if secrets and store:
        write_store(Path(os.path.expanduser(store)), secrets)
    else:
        spec["secrets"]["store"] = None


class Redactor:
    """Replace every registered value in a byte stream, also across chunk boundaries."""

    def __init__(self, values: Iterable[str]):
        encoded = {v.encode() for v in values if len(v) >= MIN_SECRET_LEN}
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
