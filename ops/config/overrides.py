"""`--set key=value`: typed changes to a preset's overrides, and their rendering into argv.

A --set may only change a key the preset already declares in `overrides`; the value is
converted to the type of the declared value, so a typo fails here instead of on the pod.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence

from ops.config.models import CommandPreset, OverrideValue
from ops.errors import ConfigError
from runner.workload_command import override_args

_INT_RE = re.compile(r"[+-]?[0-9]+")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def split_set(text: str) -> tuple[str, str]:
    """Split one `key=value` into its parts (the value may itself contain '=')."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(f"--set {text}: expected key=value, e.g. --set max_iters=100")
    return key.strip(), value


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
