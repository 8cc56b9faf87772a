"""Find, read, merge and validate configs/ops/project.json (+ the project.local.json overlay).

Every problem comes out as a ConfigError or NotFoundError a user can act on: malformed JSON
with its line and column, and one `dotted.path: message` line per validation problem.

A config that validated before comes from the user's cache (ops.config.cache) instead of
being validated again; pydantic and the models are imported only when needed.
"""

from __future__ import annotations

import functools
import json
import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ops.config import cache
from ops.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from pydantic import ValidationError

    from ops.config.models import CommandPreset, OverrideValue, Preset, ProjectConfig

PROJECT_RELPATH = Path("configs/ops/project.json")
LOCAL_NAME = "project.local.json"
ENV_VAR = "OPS_PROJECT_CONFIG"
MAX_CONFIG_BYTES = 4 << 20  # a project.json is kilobytes; more is a mistake, not a config
MAX_DEPTH = 64  # a real config nests about 6 deep
_MISSING = object()


class LoadedConfig(NamedTuple):
    """One loaded config. A NamedTuple, like the other records a command builds on its way to
    the host: a dataclass costs about 1 ms of start-up to create on Python 3.11, a NamedTuple a
    tenth of that (issue 14)."""

    models: Callable[[], ProjectConfig]
    """Gives the validated models, made once on first call (a cache hit unpickles them then,
    so a command that never asks for them never imports pydantic)."""
    path: Path
    local_path: Path | None
    repo_root: Path
    merged: dict[str, Any]
    dumped: dict[str, Any]
    """The effective config as JSON (by alias), every default filled in."""
    project_data: dict[str, Any]
    local_data: dict[str, Any] | None = None
    cache_key: str = ""
    """The config cache's key of these bytes (ops.config.cache.key_of): what is kept for this
    config, such as spec templates (ops.services.spec_template), is filed under it."""

    @property
    def config(self) -> ProjectConfig:
        """The validated models (pydantic is imported on first use)."""
        return self.models()

    def __repr__(self) -> str:  # the models and the whole dump would bury the paths
        return f"LoadedConfig(path={self.path!r}, local_path={self.local_path!r})"

    @property
    def artifacts_root(self) -> Path:
        """Where fetched runs are kept: <repo>/<storage.artifacts_dir>."""
        return self.repo_root / str(self.setting("storage", "artifacts_dir"))

    def setting(self, *parts: str) -> Any:
        """One value of the effective config as JSON, read from ``dumped`` without the models:
        what finding a host needs (``ops.services.target``), so that a command that only asks
        a host something never imports pydantic. A KeyError names a path that is not there."""
        value: Any = self.dumped
        for part in parts:
            value = value[part]
        return value

    def provenance(self) -> list[tuple[str, object, str]]:
        """Every leaf of the effective config: (dotted path, value, source file or default)."""
        return [
            (".".join(parts), value, source_of(parts, self.project_data, self.local_data))
            for parts, value in iter_leaves(self.dumped)
        ]


class ResolvedPreset(NamedTuple):
    name: str
    preset: CommandPreset
    overrides_set: dict[str, object]


def display_path(path: Path) -> str:
    """``path`` relative to the current directory when inside it, else absolute."""
    try:
        cwd = Path.cwd()
        # the link itself, not its target: "project.local.json is a dangling symlink"
        for candidate, base in ((path.absolute(), cwd), (path.parent.resolve() / path.name,
                                                           cwd.resolve())):
            if candidate.is_relative_to(base):
                return str(candidate.relative_to(base))
    except OSError:  # the current directory is gone
        pass
    return str(path)


def find_project_config(explicit: Path | None = None, cwd: Path | None = None) -> Path:
    """--project-config, else $OPS_PROJECT_CONFIG, else configs/ops/project.json upwards."""
    chosen = explicit if explicit is not None else _env_path()
    if chosen is not None:
        if not os.path.lexists(chosen):
            raise NotFoundError(f"project config {chosen} does not exist")
        return chosen.resolve() if chosen.exists() else chosen.absolute()
    start = (cwd or Path.cwd()).resolve()
    for directory in (start, *start.parents):
        candidate = directory / PROJECT_RELPATH
        if os.path.lexists(candidate):  # whatever it is: reading it says if it is no file
            return candidate
    raise NotFoundError(
        f"no {PROJECT_RELPATH} in {start} or any parent directory",
        hint="run `ops init` in the repository root, or pass --project-config PATH",
    )


def _env_path() -> Path | None:
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value).expanduser() if value else None


def repo_root_of(path: Path) -> Path:
    """<root> for <root>/configs/ops/project.json, else the file's own directory."""
    parent = path.parent
    if parent.name == "ops" and parent.parent.name == "configs":
        return parent.parent.parent
    return parent


def load_config(explicit: Path | None = None, cwd: Path | None = None) -> LoadedConfig:
    path = find_project_config(explicit, cwd)
    project_bytes = read_config_bytes(path)
    project_data = parse_json_object(path, project_bytes)
    local_path = path.with_name(LOCAL_NAME)
    local_bytes = read_config_bytes(local_path) if os.path.lexists(local_path) else None
    local_data = None if local_bytes is None else parse_json_object(local_path, local_bytes)
    merged = deep_merge(project_data, local_data or {})
    key = cache.key_of(project_bytes, local_bytes)
    hit = cache.load(key)
    if hit is not None:
        dumped, pickled = hit
        # a stale entry (models that no longer unpickle) is validated again and rewritten
        models = functools.cache(lambda: cache.unpickle_models(pickled)
                                 or _validate(path, merged, local_data, key)[0])
    else:
        config, dumped = _validate(path, merged, local_data, key)
        models = functools.cache(lambda: config)
    return LoadedConfig(
        models=models,
        dumped=dumped,
        path=path,
        local_path=local_path if local_data is not None else None,
        repo_root=repo_root_of(path),
        merged=merged,
        project_data=project_data,
        local_data=local_data,
        cache_key=key,
    )


def dump_config(config: ProjectConfig) -> dict[str, Any]:
    return config.model_dump(mode="json", by_alias=True)


def _validate(path: Path, merged: dict[str, Any], local_data: dict[str, Any] | None,
              key: str) -> tuple[ProjectConfig, dict[str, Any]]:
    """Validate the merged document; a valid one is cached under ``key``, with its dump."""
    from pydantic import ValidationError

    from ops.config.models import ProjectConfig

    try:
        config = ProjectConfig.model_validate(merged)
    except ValidationError as exc:
        raise _invalid(exc, path, merged, local_data) from None
    dumped = dump_config(config)  # cheap now: validating built the serializer too
    cache.store(key, config, dumped)
    return config, dumped


def read_json_object(path: Path) -> dict[str, Any]:
    """Parse a JSON file that must hold an object; no NaN/Infinity, no duplicate keys, no
    absurd nesting. Only a regular file (or a link to one) is read, never waited on."""
    return parse_json_object(path, read_config_bytes(path))


def parse_json_object(path: Path, data: bytes) -> dict[str, Any]:
    """The JSON object in ``data`` (the bytes of ``path``, named in every error)."""
    shown = display_path(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{shown}: not UTF-8 text ({exc.reason})") from None
    try:
        doc = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{shown}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"{shown}: invalid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{shown}: JSON nested too deeply (at most {MAX_DEPTH} levels)") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{shown}: expected a JSON object at the top level")
    if nesting_depth(doc) > MAX_DEPTH:
        raise ConfigError(f"{shown}: JSON nested too deeply (at most {MAX_DEPTH} levels)")
    return doc


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def read_config_bytes(path: Path) -> bytes:
    """The bytes of a config file that must be a regular file (a symlink to one is fine).
    Opened without blocking, so a FIFO in its place is refused instead of waited on."""
    shown = display_path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        problem = "is a dangling symlink" if path.is_symlink() else "does not exist"
        raise ConfigError(f"{shown} {problem}", hint="remove it or point it at a file") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise ConfigError(f"{shown} is {kind}, not a file",
                              hint="remove it or replace it with a JSON file")
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{shown} is larger than {MAX_CONFIG_BYTES >> 20} MiB")
    return data


def nesting_depth(doc: Any) -> int:
    """How deep objects and arrays nest in a parsed JSON document (iterative: no recursion)."""
    deepest, todo = 0, [(doc, 1)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, dict):
            children: list[Any] = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        todo.extend((child, depth + 1) for child in children)
    return deepest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f"duplicate key {key!r}")
        doc[key] = value
    return doc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``base``: dicts merge recursively, lists and scalars replace."""
    merged = dict(base)
    for key, value in overlay.items():
        below = merged.get(key)
        if isinstance(below, dict) and isinstance(value, dict):
            merged[key] = deep_merge(below, value)
        else:
            merged[key] = value
    return merged


def iter_leaves(doc: Any, parts: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Leaves of a JSON document; lists and empty dicts count as leaves."""
    if isinstance(doc, dict) and doc:
        for key, value in doc.items():
            yield from iter_leaves(value, (*parts, str(key)))
    else:
        yield parts, doc


def source_of(
    parts: Sequence[str], project: Mapping[str, Any], local: Mapping[str, Any] | None
) -> str:
    if local is not None and _lookup(local, parts) is not _MISSING:
        return LOCAL_NAME
    if _lookup(project, parts) is not _MISSING:
        return PROJECT_RELPATH.name
    return "default"


def _lookup(doc: Any, parts: Sequence[str]) -> Any:
    for part in parts:
        if not isinstance(doc, dict) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


def error_path(loc: Sequence[int | str], data: Any) -> list[str]:
    """A pydantic error location as path parts, without discriminator tags.

    A tagged union adds the tag (e.g. "command") to the location although the document has
    no such key: a part that is not a key but equals the object's "kind" is skipped.
    """
    parts: list[str] = []
    tagged: set[int] = set()  # objects whose tag was skipped (a field may share its name)
    for part in loc:
        if isinstance(data, dict) and data.get("kind") == part and id(data) not in tagged:
            tagged.add(id(data))
            continue
        parts.append(str(part))
        data = data.get(part) if isinstance(data, dict) else _index(data, part)
    return parts


def _index(data: Any, part: int | str) -> Any:
    if isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
        return data[part]
    return None


def validation_details(
    exc: ValidationError, merged: Mapping[str, Any], local: Mapping[str, Any] | None = None
) -> list[str]:
    """One `dotted.path: message` line per problem, marking values from the overlay."""
    from ops.config.models import KNOWN_PRESET_KINDS

    lines = []
    for error in exc.errors(include_url=False):
        parts = error_path(error["loc"], merged)
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field (not allowed here)"
        elif error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            parts = [*parts, "kind"]
            found = error.get("ctx", {}).get("tag")
            known = ", ".join(KNOWN_PRESET_KINDS)
            message = (f"unknown preset kind {found!r} (known kinds: {known})" if found
                       else f"field required (known kinds: {known})")
        where = ".".join(parts) or "(top level)"
        from_local = local is not None and _lookup(local, parts) is not _MISSING
        lines.append(f"{where}: {message}" + (f" (set in {LOCAL_NAME})" if from_local else ""))
    return lines


def _invalid(
    exc: ValidationError,
    path: Path,
    merged: Mapping[str, Any],
    local: Mapping[str, Any] | None,
) -> ConfigError:
    overlay = f" (with {LOCAL_NAME} merged over it)" if local is not None else ""
    return ConfigError(
        f"{display_path(path)}{overlay} is invalid",
        details=validation_details(exc, merged, local),
    )


def lookup_preset(config: ProjectConfig, name: str) -> Preset:
    preset = config.presets.get(name)
    if preset is None:
        known = ", ".join(sorted(config.presets)) or "none defined"
        raise ConfigError(f"unknown preset {name!r} (known: {known})")
    return preset


def resolve_preset(config: ProjectConfig, name: str, sets: Sequence[str] = (), *,
                   debug: bool = False) -> ResolvedPreset:
    """The named preset with --debug and --set applied to a copy of its overrides."""
    from ops.config.models import SweepPreset
    from ops.config.overrides import parse_sets

    preset = lookup_preset(config, name)
    if isinstance(preset, SweepPreset):
        raise ConfigError(f"preset {name!r} is a sweep of {', '.join(preset.members)}; "
                          "submit it as a whole or name one member")
    typed: dict[str, OverrideValue] = parse_sets(name, preset.settable(), sets)
    if debug and not preset.debug_overrides:
        raise ConfigError(f"preset {name!r} has no debug mode",
                          hint='add "debug_overrides" to the preset in project.json')
    debug_values = dict(preset.debug_overrides) if debug else {}
    merged = {**preset.overrides, **debug_values, **typed}
    updated = preset.model_copy(update={"overrides": merged}, deep=True)
    return ResolvedPreset(name=name, preset=updated, overrides_set={**debug_values, **typed})
