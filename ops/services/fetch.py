"""`ops run fetch`: a run dir from the host into artifacts/runs/<run_id>/.

One round trip: the request names the files already here (path, size, mtime) and the runner
(`python -m runner.pack`, see there) answers with the run dir's listing and status, followed
by one tar stream of exactly the files that are missing or changed (a different size or mtime;
the rule is runner.pack.wanted, the same function on both sides). The listing is checked entry
by entry as untrusted input, and only entries of that set are accepted from the stream. Each
file lands under `.ops/partial/` first and is moved into place only once all its bytes arrived,
so an interrupted fetch never leaves a truncated file that looks complete; re-running it fetches
what is still missing. Nothing is fsynced per file (as with rsync); the record is written
atomically at the end.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from ops.errors import HostError, NotFoundError, OpsError
from ops.hosts.base import RUNNER_ERRORS, HostCommandError, runner_missing
from ops.services.fetch_stream import StreamEndedError, TarReader, pipe_fd
from ops.services.runs import Target
from runner import contract
from runner.pack import FRAME_MAGIC, MAX_FRAME, widen_pipe
from runner.pack import wanted as missing_files

PARTIAL = ".ops/partial"
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)
RECORD = ".ops/fetch.json"
Progress = Callable[[int], None]


@dataclass
class FetchResult:
    run_id: str
    dest: Path
    files_fetched: list[str] = field(default_factory=list)
    bytes_fetched: int = 0
    files_current: int = 0
    remote_status: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"schema": "ops.run_fetch/1", "run_id": self.run_id, "dest": str(self.dest),
                "files_fetched": len(self.files_fetched), "bytes_fetched": self.bytes_fetched,
                "files_up_to_date": self.files_current, "remote_status": self.remote_status,
                "seconds": round(self.seconds, 3)}


def _have(dest: Path) -> list[list[Any]]:
    """[path, size, mtime] of every regular file already in the fetched copy (not .ops/)."""
    have: list[list[Any]] = []
    for root, dirs, names in os.walk(dest):
        if root == str(dest):
            dirs[:] = [d for d in dirs if d != ".ops"]
        rel_root = os.path.relpath(root, dest)
        for name in names:
            with contextlib.suppress(OSError):
                info = os.lstat(os.path.join(root, name))
                if stat.S_ISREG(info.st_mode):  # never a link: it is fetched over
                    rel = name if rel_root == "." else f"{rel_root}/{name}"
                    have.append([rel, info.st_size, info.st_mtime])
    return have


def fetch(target: Target, run_id: str, dest_root: Path, *, with_checkpoints: bool = False,
          progress: Callable[[int, int], Progress] | None = None) -> FetchResult:
    started = time.time()
    run_dir = target.run_dir(run_id)
    dest = dest_root / run_id
    have = _have(dest)
    ask = _Ask(run_dir, have, json.dumps({"with_checkpoints": with_checkpoints,
                                          "have": have}).encode())
    result = FetchResult(run_id, dest)
    try:
        status = _fetch_once(target, ask, result, progress)
        result.seconds = time.time() - started
        _record(target, run_dir, result, status, with_checkpoints)
    finally:
        _prune_partial(dest)
    return result


@dataclass(frozen=True)
class _Ask:
    """What one fetch asks: the run dir on the host, the files here, the request's bytes."""

    run_dir: str
    have: list[list[Any]]
    body: bytes


def _fetch_once(target: Target, ask: _Ask, result: FetchResult,
                progress: Callable[[int, int], Progress] | None) -> dict[str, Any]:
    """The one round trip; a runner remembered on the host but gone since is checked fully
    once and asked again (as call_runner does)."""
    host = target.host
    try:
        return _exchange(target, ask, result, progress)
    except HostCommandError as exc:
        recheck = getattr(host, "runner_recheck", None)
        if recheck is None or not runner_missing(exc.result):
            raise
        host.runner_recheck = None  # type: ignore[attr-defined]
        recheck()
        return _exchange(target, ask, result, progress)


def _exchange(target: Target, ask: _Ask, result: FetchResult,
              progress: Callable[[int, int], Progress] | None) -> dict[str, Any]:
    host = target.host
    argv = [*pack_argv(host.runner_argv()), ask.run_dir]
    with host.stream(argv, input_bytes=ask.body) as stream:
        reader = _reader(stream)
        answer = _read_answer(reader, host.name)
        if answer is not None:
            files, status = checked_listing(answer, host.name)
            result.remote_status = _text_or_none(status.get("status"))
            missing = set(missing_files(files, ask.have))
            want = {f["path"]: f for f in files if f["path"] in missing}
            result.files_current = len(files) - len(want)
            total = sum(w["size"] for w in want.values())
            advance = progress(total, len(want)) if progress and want else None
            _receive_members(reader, result.dest, want, result, advance)
    if answer is None:  # nothing at all, yet a clean exit
        raise HostError(f"fetch: the runner on {host.name} gave no answer",
                        hint="the runner on the host is not what ops expects")
    return status


def pack_argv(runner_argv: Sequence[str]) -> list[str]:
    """`... -m runner` -> `... -m runner.pack`: the fetch answer without runner.cli's imports."""
    argv = list(runner_argv)
    if argv[-2:] != ["-m", "runner"]:
        raise HostError(f"fetch: cannot start the runner's pack module from {argv!r}")
    return [*argv[:-1], "runner.pack"]


def _reader(stream: BinaryIO) -> TarReader:
    fd = pipe_fd(stream)
    if fd is None:
        return TarReader(stream)
    widen_pipe(fd)  # OpenSSH's stdout: headers parsed here, bytes moved by the kernel
    return TarReader(fd)


def _read_answer(reader: TarReader, host: str) -> Any:
    """The framed JSON answer; None when the stream ended before any byte (the command
    failed: the stream's exit status tells why). An error answer raises as call_runner's."""
    line = reader.read_line(len(FRAME_MAGIC) + 12, "the runner's answer")
    if line is None:
        return None
    size_text = line[len(FRAME_MAGIC):].strip()
    if not line.startswith(FRAME_MAGIC) or not size_text.isdigit() \
            or int(size_text) > MAX_FRAME:
        raise HostError(f"fetch: the answer from {host} is not the runner's",
                        details=[repr(line[:60])],
                        hint="the runner on the host is not what ops expects")
    try:
        doc = json.loads(reader.read_exact(int(size_text), "the runner's answer"))
    except (ValueError, RecursionError):
        raise _bad_listing(host, "not JSON") from None
    if isinstance(doc, dict) and "error" in doc:
        err = doc["error"] if isinstance(doc["error"], dict) else {"message": doc["error"]}
        kind = err.get("kind")
        error_type = RUNNER_ERRORS.get(kind, OpsError) if isinstance(kind, str) else OpsError
        raise error_type(str(err.get("message"))[:2000])
    return doc


def checked_listing(listing: Any, host: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The host's listing, checked entry by entry: the host (and the workload that wrote the
    run dir) is untrusted, so a malformed listing is a HostError, never a traceback."""
    files = listing.get("files") if isinstance(listing, dict) else None
    if not isinstance(files, list):
        raise _bad_listing(host, f"'files' is {_kind(files)}, not a list")
    checked, seen = [], set()
    for index, item in enumerate(files):
        entry = _checked_entry(item, f"files[{index}]", host)
        if entry["path"].split("/", 1)[0] == ".ops":
            continue  # a workload's own .ops/ would land on ours (the record, partials)
        if entry["path"] in seen:
            raise _bad_listing(host, f"files[{index}]: {entry['path']!r} is listed twice")
        seen.add(entry["path"])
        checked.append(entry)
    status = listing.get("status")
    return checked, status if isinstance(status, dict) else {}


def _checked_entry(item: Any, where: str, host: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _bad_listing(host, f"{where} is {_kind(item)}, not an object")
    path, size, mtime = item.get("path"), item.get("size"), item.get("mtime")
    if not isinstance(path, str) or _unsafe_path(path):
        raise _bad_listing(host, f"{where}.path {_shown(path)} is not a relative path inside "
                                 "the run dir")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _bad_listing(host, f"{where}.size {_shown(size)} is not a byte count")
    if not isinstance(mtime, (int, float)) or isinstance(mtime, bool) \
            or not math.isfinite(mtime):
        raise _bad_listing(host, f"{where}.mtime {_shown(mtime)} is not a timestamp")
    return {"path": path, "size": size, "mtime": float(mtime)}


def _unsafe_path(path: str) -> bool:
    """Absolute, empty, with '.'/'..'/empty parts, or with a NUL byte."""
    return (not path or path.startswith("/") or "\x00" in path
            or any(p in ("", ".", "..") for p in path.split("/")))


def _kind(value: Any) -> str:
    return "missing" if value is None else f"a {type(value).__name__}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _bad_listing(host: str, problem: str) -> HostError:
    return HostError(f"fetch: the listing from {host} is malformed: {problem}",
                     hint="the run dir or the runner on the host is not what ops expects")


def _prune_partial(dest: Path) -> None:
    """Remove the empty directories under .ops/partial (and .ops itself when empty): files
    land there only for a moment, and a failed fetch removes its own partial file."""
    partial_root = dest / PARTIAL
    if not partial_root.is_dir():
        return
    for root, dirs, _files in os.walk(partial_root, topdown=False):
        for name in dirs:
            with contextlib.suppress(OSError):
                (Path(root) / name).rmdir()
    for directory in (partial_root, partial_root.parent):
        with contextlib.suppress(OSError):
            directory.rmdir()  # only when empty


def _receive(stream: BinaryIO, dest: Path, wanted: dict[str, dict[str, Any]],
             result: FetchResult, advance: Progress | None) -> None:
    """A bare tar stream (no answer frame) into dest: what _exchange does after the frame."""
    _receive_members(_reader(stream), dest, wanted, result, advance)


def _receive_members(reader: TarReader, dest: Path, wanted: dict[str, dict[str, Any]],
                     result: FetchResult, advance: Progress | None) -> None:
    """Each member: one that was asked for, a regular file, written under .ops/partial and
    moved into place once whole, with the sender's mtime."""
    partial_root = dest / PARTIAL
    made: set[Path] = set()  # directories known to exist: one mkdir each, not one a file
    with _resumable(dest, result):
        for member in reader.members():
            # regular files that were asked for, nothing else: no links, devices, dirs
            if member.name not in wanted or member.type not in _FILE_TYPES:
                raise HostError(f"fetch: unexpected entry {member.name!r} in the stream")
            rel = _safe_rel(member.name)
            partial = partial_root / rel
            _mkdir(partial.parent, made)
            try:
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                             0o644)
                try:
                    written = reader.copy_to(fd, advance)
                    # the sender's mtime at the moment it opened the file: a file that
                    # changed after the listing is compared against what actually arrived
                    os.utime(fd, (member.mtime, member.mtime))
                finally:
                    os.close(fd)
            except BaseException:
                partial.unlink(missing_ok=True)  # never leave a piece of a file behind
                raise
            _mkdir((dest / rel).parent, made)
            os.replace(partial, dest / rel)
            result.files_fetched.append(member.name)
            result.bytes_fetched += written


@contextlib.contextmanager
def _resumable(dest: Path, result: FetchResult) -> Iterator[None]:
    """A stream that breaks mid-way is a HostError saying that running the fetch again resumes
    it (the files already placed are whole); a HostError of our own passes as it is."""
    try:
        yield
    except StreamEndedError as exc:
        raise _interrupted(dest, result, exc) from exc
    except HostError:
        raise
    except Exception as exc:
        raise _interrupted(dest, result, exc) from exc


def _interrupted(dest: Path, result: FetchResult, exc: Exception) -> HostError:
    reason = exc.message.removeprefix("fetch: ") if isinstance(exc, HostError) else str(exc)
    return HostError(f"fetch of {dest.name} was interrupted: {reason}",
                     hint="run the same command again: it resumes with what is missing "
                          f"({len(result.files_fetched)} files already in place)")


def _safe_rel(name: str) -> PurePosixPath:
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise HostError(f"fetch: refusing path {name!r}")
    return rel


def _mkdir(path: Path, made: set[Path]) -> None:
    if path not in made:
        path.mkdir(parents=True, exist_ok=True)
        made.add(path)


def _record(target: Target, run_dir: str, result: FetchResult, status: dict[str, Any],
            with_checkpoints: bool) -> None:
    record = result.dest / RECORD
    record.parent.mkdir(parents=True, exist_ok=True)
    contract.atomic_write_json(record, {
        "schema": contract.schema_tag("fetch"), "run_id": result.run_id,
        "fetched_at": contract.iso(), "host": target.host.name, "remote_run_dir": run_dir,
        "remote_status": status, "with_checkpoints": with_checkpoints,
        "files_fetched": result.files_fetched,
        "bytes_fetched": result.bytes_fetched})


def fetched_status(dest_root: Path, run_id: str) -> dict[str, Any]:
    """Status of a fetched copy: recorded when its summary arrived, else the host's status as
    of the fetch (a live run may have moved on since)."""
    dest = dest_root / run_id
    record = contract.read_json_or_none(dest / RECORD)
    if record is None:
        raise NotFoundError(f"no fetched copy of {run_id!r} under {dest_root}",
                            hint=f"ops run fetch {run_id}")
    summary = contract.read_runner_summary(dest)
    if summary is not None:
        return {"run_id": run_id, "run_dir": str(dest), "status": summary.get("status"),
                "exit_code": summary.get("exit_code"), "ended_at": summary.get("ended_at"),
                "metrics_final": summary.get("metrics_final", {}), "notes": []}
    remote = dict(record.get("remote_status") or {})
    remote.update(run_dir=str(dest), as_of=record.get("fetched_at"))
    remote.setdefault("notes", []).append(
        f"{remote.get('status')} as of {record.get('fetched_at')} (fetch again for news)")
    return remote
