"""A per-user cache of validated project configs: a command whose config validated before
skips pydantic's validation (and the building of its validators) and unpickles the result.

Key: sha256 of the ops version, the source of the models and of the runner code their
validators call, pydantic's version, the bytes of project.json and of project.local.json (or
its absence). Any edit to either file, or to the code that judges them, is a new key; a config
that fails validation is never stored, so every error message comes from a real validation.
Value: the validated config's JSON dump (what `ops config show` lists) and, pickled apart,
the ProjectConfig models, the two kept together with `marshal` (which reads plain data only and
costs no import, where pickle costs a few ms of every command's start-up). A hit reads the dump
without importing pydantic; the models are unpickled only when a command asks for them
(``LoadedConfig.config``), so a command that only finds a host and asks it something never
pays for pydantic (about 0.2 s of CPU).

Where: ``$XDG_CACHE_HOME/pod-ops`` (else ``~/.cache/pod-ops``), never the repository, which
may come from someone else. The directory must be a real directory (checked with lstat),
owned by this user, and closed to group and others (0700 when we make it); each entry must be
a regular file owned by this user, 0600, with a matching checksum. Anything else is ignored
(and replaced by the next store): the cache can only ever cost a validation.

The folder ``spec-templates`` holds what a submit derives from a config (ops.services.
spec_template), filed by the config's key among others; it is checked, written and pruned by
the same functions (``read_entry``, ``write_entry``), with a count of its own.
"""

from __future__ import annotations

import marshal
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ops import __version__
from runner.digest import sha256

if TYPE_CHECKING:
    from ops.config.models import ProjectConfig

MAGIC = b"ops-config-cache/3\n"
MAX_ENTRY_BYTES = 16 << 20
MAX_ENTRIES = 64  # old configs pile up as project.json changes; the oldest go first
_RUNNER = Path(__file__).resolve().parents[2] / "runner"
# the code whose verdict a cached entry stands for (the validators call into the runner)
VALIDATION_SOURCES = (Path(__file__).with_name("models.py"),
                      Path(__file__).with_name("settings.py"),
                      _RUNNER / "logpump.py", _RUNNER / "contract.py")


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/pod-ops, else ~/.cache/pod-ops (a relative XDG path is ignored, as
    the XDG spec says)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "pod-ops"


def key_of(project_bytes: bytes, local_bytes: bytes | None) -> str:
    return digest_of(MAGIC, __version__.encode(), sys.version.encode(),
                     *source_bytes(VALIDATION_SOURCES), _pydantic_version(), project_bytes,
                     b"-" if local_bytes is None else b"+" + local_bytes)


def digest_of(*parts: bytes) -> str:
    """sha256 of ``parts``, each prefixed with its length (so no two lists of parts collide)."""
    digest = sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def source_bytes(paths: tuple[Path, ...]) -> list[bytes]:
    """The bytes of each file (b"?" for one that cannot be read)."""
    parts = []
    for path in paths:
        try:
            parts.append(path.read_bytes())
        except OSError:
            parts.append(b"?")
    return parts


def _pydantic_version() -> bytes:
    """pydantic's version.py, found on sys.path without importing pydantic (which is what a
    hit avoids): models pickled by another pydantic are never unpickled by this one."""
    for entry in sys.path:
        try:
            return (Path(entry or ".") / "pydantic" / "version.py").read_bytes()
        except OSError:
            continue
    return b"?"


def load(key: str) -> tuple[dict[str, Any], bytes] | None:
    """The JSON dump of the config stored under ``key`` and its pickled models (for
    ``unpickle_models``), or None (no entry, or one we do not trust). Imports no pydantic."""
    payload = read_entry(key, MAGIC)
    if payload is None:
        return None
    try:
        entry = marshal.loads(payload)  # noqa: S302 - our own checked file; see above
    except Exception:  # noqa: BLE001 - a stale or torn entry, whatever it raises, is a miss
        return None
    if (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], dict)
            and isinstance(entry[1], bytes)):
        return entry[0], entry[1]
    return None


def unpickle_models(pickled: bytes) -> ProjectConfig | None:
    """The ProjectConfig of an entry (what ``load`` returned with its dump), or None when it
    does not unpickle into one."""
    import pickle

    from ops.config.models import ProjectConfig

    try:
        config = pickle.loads(pickled)  # noqa: S301 - see the module docstring
    except Exception:  # noqa: BLE001 - whatever a stale entry raises, the caller validates
        return None
    return config if isinstance(config, ProjectConfig) else None


def store(key: str, config: ProjectConfig, dumped: dict[str, Any]) -> None:
    """Write the entry (see write_entry); a failure only costs speed."""
    import pickle

    models = pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        payload = marshal.dumps((dumped, models))
    except ValueError:  # not plain data after all: no entry, the next command validates
        return
    write_entry(key, MAGIC, payload)


def read_entry(name: str, magic: bytes, sub: str | None = None) -> bytes | None:
    """The payload of entry ``name`` (in the folder ``sub`` of the cache, if given): None
    unless the folders and the file pass the checks of the module docstring, the file starts
    with ``magic`` and its checksum matches."""
    directory = _private_dir(sub, create=False)
    data = _read_entry(directory / name) if directory else None
    if data is None or not data.startswith(magic):
        return None
    header, _, payload = data[len(magic):].partition(b"\n")
    return payload if header == _header(payload) else None


def write_entry(name: str, magic: bytes, payload: bytes, sub: str | None = None,
                most: int | None = None) -> None:
    """Write an entry atomically (temp file, 0600, rename), then keep the newest ``most``
    entries of its folder (MAX_ENTRIES by default). A failure only costs speed."""
    import tempfile  # only a miss writes (tempfile costs 10 ms to import)

    directory = _private_dir(sub, create=True)
    if directory is None:
        return
    data = magic + _header(payload) + b"\n" + payload
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")  # mode 0600
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)  # no fsync: a torn entry fails its checksum and is rewritten
        os.replace(tmp, directory / name)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        return
    _prune(directory, keep=name, most=MAX_ENTRIES if most is None else most)


def _header(payload: bytes) -> bytes:
    return f"sha256={sha256(payload).hexdigest()}".encode()


def _private_dir(sub: str | None = None, *, create: bool) -> Path | None:
    """The cache directory (or its folder ``sub``) when it is safe to use: every level a
    directory (not a link), ours, closed to group and others (0700 when we make it)."""
    try:
        levels = [cache_dir()]
        if sub is not None:
            levels.append(levels[0] / sub)
        if create:
            levels[0].parent.mkdir(parents=True, exist_ok=True)
        for directory in levels:
            if create:
                directory.mkdir(mode=0o700, exist_ok=True)  # a link or a file: refused below
            info = directory.lstat()
            if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid()
                    or info.st_mode & 0o077):
                return None
    except (OSError, RuntimeError):  # RuntimeError: no home directory to be found
        return None
    return levels[-1]


def _read_entry(path: Path) -> bytes | None:
    """An entry's bytes: a regular file (no link followed), ours, 0600 or tighter."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if (not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid()
                or info.st_mode & 0o077 or info.st_size > MAX_ENTRY_BYTES):
            return None
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read(MAX_ENTRY_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)


def _prune(directory: Path, keep: str, most: int) -> None:
    """Keep the newest ``most`` entries, ``keep`` (the one just written) among them."""
    try:
        entries = [e for e in os.scandir(directory)
                   if e.name != keep and e.is_file(follow_symlinks=False)]
        if len(entries) < most:
            return
        entries.sort(key=lambda e: e.stat(follow_symlinks=False).st_mtime_ns)
        for entry in entries[:len(entries) - most + 1]:
            os.unlink(entry.path)
    except OSError:
        return
