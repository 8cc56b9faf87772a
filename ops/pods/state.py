"""`.ops/pods.json`: every pod ops created or adopted, and where it is in its lifecycle.

The file is versioned (`ops.pods/1`), written atomically (temp file, fsync, rename) and only
under an exclusive lock on `.ops/pods.lock`, so two ops processes never lose each other's
changes. A record is written *before* the provider is asked for an instance (state
`requested`, with the label ops gives it), so a crash between create and the next write
leaves a record that `pod list` shows and `pod rm` can finish by finding the label.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ops.errors import ConflictError, NotFoundError, UsageError
from runner import contract

SCHEMA = "ops.pods/1"
PODS_FILE = Path(".ops") / "pods.json"
LOCK_FILE = Path(".ops") / "pods.lock"
POD_DIR = Path(".ops") / "pods"

# the lifecycle; failed and gone are the two ends besides ready
STATES = ("requested", "provisioning", "booting", "ssh_ready", "bootstrapped", "ready",
          "failed", "gone")
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "requested": ("provisioning", "failed", "gone"),
    "provisioning": ("booting", "failed", "gone"),
    "booting": ("ssh_ready", "failed", "gone"),
    "ssh_ready": ("bootstrapped", "failed", "gone"),
    "bootstrapped": ("ready", "failed", "gone"),
    "ready": ("bootstrapped", "failed", "gone"),
    "failed": ("gone",),
    "gone": (),
}


@dataclass
class PodRecord:
    name: str
    provider: str
    label: str
    state: str = "requested"
    instance_id: str | None = None
    host: str | None = None
    port: int | None = None
    user: str = "root"
    identity_file: str | None = None
    gpu: str | None = None
    gpu_count: int = 0
    price_per_hour: float | None = None
    ops_home: str | None = None
    outputs_dir: str | None = None
    python: str = "python3"
    netrc_path: str = "~/.netrc"
    created_at: str = field(default_factory=contract.iso)
    created_ts: float = field(default_factory=time.time)
    ttl_s: float | None = None
    message: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def address(self) -> str | None:
        if not self.host or not self.port:
            return None
        return f"{self.user}@{self.host}:{self.port}"

    def age_s(self, now: float | None = None) -> float:
        return max(0.0, (now or time.time()) - self.created_ts)

    def ttl_left_s(self, now: float | None = None) -> float | None:
        return None if self.ttl_s is None else self.ttl_s - self.age_s(now)

    def cost_so_far(self, now: float | None = None) -> float | None:
        if self.price_per_hour is None:
            return None
        return round(self.price_per_hour * self.age_s(now) / 3600.0, 4)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Any) -> PodRecord:
        if not isinstance(doc, dict):
            raise UsageError("a pod record in .ops/pods.json is not an object")
        known = {f.name for f in fields(cls)}
        try:
            record = cls(**{k: v for k, v in doc.items() if k in known})
        except TypeError as exc:
            raise UsageError(f"a pod record in .ops/pods.json is incomplete: {exc}") from exc
        if record.state not in STATES:
            raise UsageError(f"pod {record.name!r} has an unknown state {record.state!r}")
        return record


class PodStore:
    """The pods of one project; every change is read-modify-write under the lock."""

    def __init__(self, repo_root: Path):
        self.root = repo_root
        self.path = repo_root / PODS_FILE
        self.lock_path = repo_root / LOCK_FILE

    def pod_dir(self, name: str) -> Path:
        return self.root / POD_DIR / name

    def known_hosts(self, name: str) -> Path:
        return self.pod_dir(name) / "known_hosts"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.lock_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def _read(self) -> dict[str, PodRecord]:
        if not self.path.exists():
            return {}
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {self.path}: {exc}",
                             hint="it is written atomically; restore it from a backup or "
                                  "remove it (pods it names stay rented)") from exc
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise UsageError(f"{self.path} is not an {SCHEMA} file")
        pods = doc.get("pods")
        if not isinstance(pods, dict):
            raise UsageError(f"{self.path} has no pods object")
        return {name: PodRecord.from_json(rec) for name, rec in pods.items()}

    def _write(self, pods: dict[str, PodRecord]) -> None:
        doc = {"schema": SCHEMA, "pods": {n: p.to_json() for n, p in sorted(pods.items())}}
        contract.atomic_write_json(self.path, doc)

    def all(self) -> list[PodRecord]:
        with self._locked():
            return list(self._read().values())

    def get(self, name: str) -> PodRecord:
        with self._locked():
            pods = self._read()
        if name not in pods:
            raise NotFoundError(f"no pod named {name!r} in {self.path}",
                                hint="`ops pod list` shows the pods this project knows")
        return pods[name]

    def find(self, name: str) -> PodRecord | None:
        with self._locked():
            return self._read().get(name)

    def add(self, record: PodRecord) -> None:
        with self._locked():
            pods = self._read()
            if record.name in pods and pods[record.name].state != "gone":
                raise ConflictError(f"a pod named {record.name!r} already exists "
                                    f"(state {pods[record.name].state})",
                                    hint="pick another name, or `ops pod rm` it first")
            pods[record.name] = record
            self._write(pods)

    def update(self, name: str, *, state: str | None = None, message: str | None = None,
               **changes: Any) -> PodRecord:
        """Change a record; a state change must follow TRANSITIONS and is kept in history."""
        with self._locked():
            pods = self._read()
            if name not in pods:
                raise NotFoundError(f"pod {name!r} vanished from {self.path}")
            record = pods[name]
            for key, value in changes.items():
                setattr(record, key, value)
            if state is not None and state != record.state:
                if state not in TRANSITIONS[record.state]:
                    raise UsageError(f"pod {name!r}: no transition {record.state} -> {state}")
                record.history.append({"at": contract.iso(), "from": record.state,
                                       "to": state, "message": message})
                record.state = state
            if message is not None:
                record.message = message
            self._write(pods)
            return record

    def remove(self, name: str) -> None:
        with self._locked():
            pods = self._read()
            pods.pop(name, None)
            self._write(pods)
