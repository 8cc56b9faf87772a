"""`--set key=value`: typed changes to a preset's overrides, and their rendering into argv.

A --set may only change a key the preset already declares in `overrides`; the value is
converted to the type of the declared value, so a typo fails here instead of on the pod.

A value with commas is a list, and a list makes a grid (`--set lr=0.01,0.1` on `ops run
submit`: one run per combination). A value written as a JSON string is one value whatever it
holds, so `--set 'name="a,b"'` sets the literal text `a,b`.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ops.config.models import CommandPreset, OverrideValue
from ops.errors import ConfigError
from runner.workload_command import override_args

_INT_RE = re.compile(r"[+-]?[0-9]+")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
MAX_GRID = 256  # combinations one command line may make
GRID_HINT = 'a literal comma goes in a JSON string: --set \'name="a,b"\''


def split_set(text: str) -> tuple[str, str]:
    """Split one `key=value` into its parts (the value may itself contain '=')."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(f"--set {text}: expected key=value, e.g. --set max_iters=100")
    return key.strip(), value


def split_values(text: str) -> list[str]:
    """The values of one --set value: split at commas, except inside a piece that starts with
    a double quote (a JSON string such as "a,b", decoded to its text). No comma: one value."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if quoted:
            quoted = escaped or char != '"'
            escaped = not escaped and char == "\\"
        elif char == ",":
            pieces.append("".join(current))
            current = []
            continue
        elif char == '"' and not "".join(current).strip():
            quoted = True
        current.append(char)
    if quoted:
        raise ValueError("a double quote is not closed")
    pieces.append("".join(current))
    return [_unquote(piece) for piece in pieces]


def _unquote(piece: str) -> str:
    stripped = piece.strip()
    if not (len(stripped) >= 2 and stripped[0] == '"' and stripped[-1] == '"'):
        return piece
    try:
        value = json.loads(stripped)
    except ValueError:
        raise ValueError(f"{stripped} is not a JSON string") from None
    if not isinstance(value, str):
        raise ValueError(f"{stripped} is not a JSON string")
    return value


def quote_value(value: str) -> str:
    """A value as --set text that split_values reads back as exactly ``value``."""
    return json.dumps(value) if ("," in value or value.strip().startswith('"')) else value


@dataclass(frozen=True)
class Grid:
    """--set options split into plain overrides and axes (keys with several values)."""

    fixed: list[str]
    axes: dict[str, list[str]]

    def combinations(self) -> list[dict[str, str]]:
        """Every assignment of the axes, the first axis slowest, in the order given."""
        keys = list(self.axes)
        return [dict(zip(keys, values, strict=True))
                for values in itertools.product(*(self.axes[k] for k in keys))]

    def member_sets(self, combination: Mapping[str, str]) -> list[str]:
        return [*self.fixed, *(f"{k}={quote_value(v)}" for k, v in combination.items())]


def grid_of(sets: Sequence[str]) -> Grid:
    """Split --set options into plain ones and grid axes; a key given twice keeps the last."""
    fixed: dict[str, str] = {}
    axes: dict[str, list[str]] = {}
    for text in sets:
        key, raw = split_set(text)
        try:
            values = split_values(raw)
        except ValueError as exc:
            raise ConfigError(f"--set {text}: {exc}", hint=GRID_HINT) from None
        fixed.pop(key, None)
        axes.pop(key, None)
        if len(values) > 1:
            axes[key] = values
        else:
            fixed[key] = text
    grid = Grid(list(fixed.values()), axes)
    size = math.prod(len(v) for v in axes.values())
    if size > MAX_GRID:
        raise ConfigError(f"--set makes a grid of {size} runs; at most {MAX_GRID} at once",
                          hint=GRID_HINT)
    return grid


def convert_value(raw: str, current: OverrideValue) -> OverrideValue:
    """Convert ``raw`` to the type of ``current``; ValueError says what was expected."""
    # bool before int: bool is a subclass of int, but `--set compile=3` is not a bool
    if isinstance(current, bool):
        return _to_bool(raw)
    if isinstance(current, int):
        if not _INT_RE.fullmatch(raw.strip()):
            raise ValueError("expected an integer")
        return int(raw)
    if isinstance(current, float):
        return _to_float(raw)
    return raw


def _to_bool(raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("expected true or false (also 1/0, yes/no)")


def _to_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(value):
        raise ValueError("expected a finite number (nan and inf are not allowed)")
    return value


def parse_sets(
    preset_name: str, overrides: Mapping[str, OverrideValue], sets: Sequence[str]
) -> dict[str, OverrideValue]:
    """Typed values of the --set options, in order; a key set twice keeps the last value."""
    result: dict[str, OverrideValue] = {}
    for text in sets:
        key, raw = split_set(text)
        if key not in overrides:
            raise _unknown_key(preset_name, overrides, text, key)
        raw = _one_value(text, raw)
        current = overrides[key]
        if current is None:
            current = ""  # an unset optional parameter takes text
        try:
            result[key] = convert_value(raw, current)
        except ValueError as exc:
            raise ConfigError(
                f"--set {text}: {exc} (preset {preset_name!r} has {key}={json.dumps(current)})"
            ) from None
    return result


def _one_value(text: str, raw: str) -> str:
    try:
        values = split_values(raw)
    except ValueError as exc:
        raise ConfigError(f"--set {text}: {exc}", hint=GRID_HINT) from None
    if len(values) > 1:
        raise ConfigError(f"--set {text}: several values make a grid, and only "
                          "`ops run submit -p PRESET` (without --run-id) runs one",
                          hint=GRID_HINT)
    return values[0]


def _unknown_key(
    preset_name: str, overrides: Mapping[str, OverrideValue], text: str, key: str
) -> ConfigError:
    if not overrides:
        return ConfigError(
            f"--set {text}: preset {preset_name!r} declares no overrides",
            hint=f'add "{key}" to the preset\'s "overrides" in project.json to make it settable',
        )
    known = ", ".join(sorted(overrides))
    return ConfigError(
        f"--set {text}: preset {preset_name!r} has no override {key!r} (known: {known})"
    )


def override_argv(preset: CommandPreset) -> list[str]:
    """The preset's overrides rendered with its override_format, in declaration order.

    A template with a space ("--{key} {value}") yields two argv items per override; the
    template is split, never the value, so a value with spaces stays one item.
    """
    return override_args(preset.overrides, preset.override_format)
