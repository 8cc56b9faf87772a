"""Reading the files of a run directory as untrusted input.

A workload runs beside its run dir and may put anything there: a FIFO or a socket where a
contract file belongs, a symbolic link out of the directory, a file of many gigabytes, JSON
nested thousands of levels deep. Every reader of a run dir goes through these primitives, which
accept only regular files, never block on open, bound what they read and never let a
RecursionError escape. ``runner.contract`` re-exports them. Standard library only.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO


class ContractError(Exception):
    """A file or name that breaks the run-directory contract."""


JSON_LIMIT = 16 << 20  # bytes: the cap on one JSON document of the contract
JSONL_LIMIT = 256 << 20  # bytes: the cap read from one JSONL file
MAX_DEPTH = 100  # nesting levels a contract document may have; deeper is not ours
MAX_INT_DIGITS = 300  # longer integers do not fit a float: no contract number needs them
_OPEN_FLAGS = (os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
               | getattr(os, "O_NOCTTY", 0))


def file_kind(mode: int) -> str:
    """A file type in words, for messages ("a FIFO", "a directory", ...)."""
    kinds = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
             (stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"))
    return next((word for test, word in kinds if test(mode)), "not a regular file")


def _not_regular(path: Path, mode: int) -> ContractError:
    return ContractError(f"{path.name}: is {file_kind(mode)}, not a regular file")


def _as_path(path: Path | str) -> Path:
    # Path(a_path) parses the path again (Python 3.11): a tenth of a 1,000-run status's CPU
    return path if isinstance(path, Path) else Path(path)


def open_regular(path: Path, *, follow_symlinks: bool = False) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file, without ever blocking.

    The file is checked with lstat before it is opened (a FIFO, socket, device or directory is
    never opened) and with fstat after (a file swapped in between is caught); O_NOFOLLOW refuses
    a symbolic link and O_NONBLOCK keeps a FIFO swapped in at the last moment from hanging.
    ``follow_symlinks`` is for files outside a run dir (a dataset's files may be links): the
    link is followed, the file it names must still be regular.
    Raises FileNotFoundError when absent, ContractError when not a regular file.
    """
    path = _as_path(path)
    before = os.stat(path) if follow_symlinks else os.lstat(path)  # FileNotFoundError passes
    if not stat.S_ISREG(before.st_mode):
        raise _not_regular(path, before.st_mode)
    flags = _OPEN_FLAGS & ~os.O_NOFOLLOW if follow_symlinks else _OPEN_FLAGS
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ContractError(f"{path.name}: is a symbolic link, not a regular file") from exc
        raise ContractError(f"{path.name}: unreadable: {exc.strerror or exc}") from exc
    try:
        after = os.fstat(fd)
        if not stat.S_ISREG(after.st_mode):
            raise _not_regular(path, after.st_mode)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_bounded(fh: BinaryIO, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes from the current position, and whether more were there."""
    chunks: list[bytes] = []
    left = limit + 1
    while left > 0:
        try:
            chunk = fh.read(min(left, 1 << 20))
        except OSError as exc:
            raise ContractError(f"unreadable: {exc.strerror or exc}") from exc
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    data = b"".join(chunks)
    return data[:limit], len(data) > limit


def read_regular_bytes(path: Path, limit: int | None = None) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (None: JSON_LIMIT).

    FileNotFoundError when absent; ContractError when not a regular file, unreadable or larger
    than the limit.
    """
    path = _as_path(path)
    cap = JSON_LIMIT if limit is None else limit
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > cap:
            raise ContractError(f"{path.name}: {size} bytes is over the {cap}-byte limit")
        try:
            data, more = _read_bounded(fh, cap)
        except ContractError as exc:
            raise ContractError(f"{path.name}: {exc}") from exc
    if more:
        raise ContractError(f"{path.name}: grew past the {cap}-byte limit while read")
    return data


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when ``value`` nests lists and objects more than ``limit`` levels (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits is out of range")
    return int(text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in contract files")


# built once: json.loads with any option builds a new decoder on every call
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_int=_bounded_int)


def parse_json(data: bytes | str) -> Any:
    """json.loads for untrusted text: NaN/Infinity, integers beyond any float, invalid UTF-8
    and nesting deeper than MAX_DEPTH raise ValueError (RecursionError never escapes). A float
    literal that overflows (1e999) reads as infinity, as in json: validate reports it as a
    non-finite metric and status drops it."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: {exc.reason}") from exc
    # the parse_int hook costs a call per integer, which is less than any scan of the text for
    # a long digit run (a regex pre-check cost more than the decoding it guarded)
    try:
        value = _DECODER.decode(text)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc
    if text.count("[") + text.count("{") > MAX_DEPTH and too_deep(value):
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
    return value


def read_json(path: Path, limit: int | None = None) -> dict[str, Any]:
    """Parse a JSON object file; raise ContractError with a reason otherwise (and
    FileNotFoundError when it is absent)."""
    path = _as_path(path)
    data = read_regular_bytes(path, limit)
    try:
        doc = parse_json(data)
    except ValueError as exc:
        raise ContractError(f"{path.name}: not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ContractError(f"{path.name}: expected a JSON object")
    return doc


def read_json_or_none(path: Path, limit: int | None = None) -> dict[str, Any] | None:
    try:
        return read_json(path, limit)
    except (OSError, ContractError):
        return None


class JsonlRead:
    """Records of a JSONL file; a torn last line is dropped and reported, not fatal. (A plain
    class: this module is imported by every `ops` command, and a dataclass costs about 1 ms
    of start-up to create.)"""

    __slots__ = ("bad_lines", "problem", "records", "torn_tail", "truncated")

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.torn_tail = False
        self.bad_lines: list[int] = []  # 1-based, complete but unparseable
        self.problem: str | None = None  # the file could not be read at all (not regular...)
        self.truncated = False  # only the first ``limit`` bytes were read

    @property
    def warnings(self) -> list[str]:
        notes = [self.problem] if self.problem else []
        if self.truncated:
            notes.append("file is over the read limit: only its first part was read")
        if self.torn_tail:
            notes.append("last line is incomplete (torn write); it was ignored")
        notes.extend(f"line {n} is not a JSON object" for n in self.bad_lines)
        return notes


def read_jsonl_bytes(path: Path, limit: int = JSONL_LIMIT) -> tuple[bytes, bool]:
    """The first ``limit`` bytes of a JSONL file cut at the last newline when more remain, and
    whether more remained. FileNotFoundError when absent, ContractError when not regular."""
    with open_regular(Path(path)) as fh:
        try:
            data, more = _read_bounded(fh, limit)
        except ContractError as exc:
            raise ContractError(f"{Path(path).name}: {exc}") from exc
    if more:
        data = data[: data.rfind(b"\n") + 1]
    return data, more


def read_jsonl(path: Path, limit: int = JSONL_LIMIT) -> JsonlRead:
    """Every record of a JSONL file (absent: none). Never raises on what the file holds: a
    file that is not regular or not readable is reported in ``problem``."""
    result = JsonlRead()
    try:
        data, result.truncated = read_jsonl_bytes(path, limit)
    except FileNotFoundError:
        return result
    except (OSError, ContractError) as exc:
        result.problem = str(exc)
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


def iter_jsonl_from(path: Path, offset: int, limit: int = JSON_LIMIT,
                    ) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (end offset, record) for whole lines in the ``limit`` bytes after ``offset``;
    stops at a torn tail. Absent, not regular or unreadable: nothing."""
    try:
        with open_regular(Path(path)) as fh:
            fh.seek(max(0, offset))
            data, _more = _read_bounded(fh, limit)
    except (OSError, ContractError):
        return
    pos = max(0, offset)
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n"):
            return
        pos += len(raw)
        record = _parse_line(raw)
        if record is not None:
            yield pos, record


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    try:
        value = parse_json(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def sha256_file(path: Path, *, follow_symlinks: bool = True) -> str:
    """SHA-256 of a regular file (FileNotFoundError when absent, ContractError when it is not
    a regular file). Files of a run dir are hashed with ``follow_symlinks=False``; a dataset's
    files (outside any run dir, often links into a cache) are followed."""
    import hashlib  # only here: every `ops` command imports this module

    digest = hashlib.sha256()
    with open_regular(Path(path), follow_symlinks=follow_symlinks) as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
