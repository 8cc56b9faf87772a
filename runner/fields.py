"""Typed reads of fields from an untrusted run-dir document.

A workload can write anything into the files beside it, so every value a reader takes from a
run dir goes through one of these: the wrong type gives None (or an empty object), a string is
clipped, a number must be finite and a pid must be one the kernel could hand out.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

TEXT_LIMIT = 300  # characters kept of a string copied from a run dir
METRICS_LIMIT = 200  # entries kept of a metrics object copied from a run dir
PID_MAX = 1 << 22  # the kernel's largest pid_max


def obj(doc: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
    """``doc[key]`` when it is a JSON object, else an empty one."""
    value = doc.get(key) if isinstance(doc, Mapping) else None
    return value if isinstance(value, dict) else {}


def clip(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def text(value: Any, limit: int = TEXT_LIMIT) -> str | None:
    """A string, clipped; anything else is None."""
    return clip(value, limit) if isinstance(value, str) else None


def integer(value: Any) -> int | None:
    """An int that is not a bool and fits in 64 bits, else None."""
    if type(value) is not int or not -(1 << 63) <= value < (1 << 63):
        return None
    return value


def number(value: Any) -> float | int | None:
    """A finite int or float (not a bool), else None."""
    if type(value) is int:
        return integer(value)
    if type(value) is float and math.isfinite(value):
        return value
    return None


def positive(value: Any, default: float) -> float:
    got = number(value)
    return float(got) if got is not None and got > 0 else default


def pid(value: Any) -> int | None:
    """A pid the kernel could hand out (2 .. PID_MAX); 0, 1, negatives and bools are not."""
    got = integer(value)
    return got if got is not None and 1 < got <= PID_MAX else None


def metrics(value: Any) -> dict[str, float | int]:
    """name -> finite number, at most METRICS_LIMIT entries; other entries are dropped."""
    if not isinstance(value, dict):
        return {}
    kept: dict[str, float | int] = {}
    for name, raw in value.items():
        got = number(raw)
        if isinstance(name, str) and got is not None:
            kept[clip(name, 100)] = got
            if len(kept) >= METRICS_LIMIT:
                break
    return kept


def failure(value: Any) -> dict[str, str | None] | None:
    """A failure record {class, message, traceback_tail} with text fields only, or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return {"class": None, "message": f"(failure is a {type(value).__name__}, not an object)",
                "traceback_tail": None}
    return {"class": text(value.get("class"), 100), "message": text(value.get("message")),
            "traceback_tail": text(value.get("traceback_tail"), 4000)}


# ---------------------------------------------------------------------------
# shapes: which fields a reader relies on, and the type each must have when present

Rule = tuple[Callable[[Any], bool], str]

OBJECT: Rule = (lambda v: isinstance(v, dict), "an object")
TEXT: Rule = (lambda v: v is None or isinstance(v, str), "a string or null")
COUNT: Rule = (lambda v: v is None or integer(v) is not None, "an integer or null")
NUMBER: Rule = (lambda v: v is None or number(v) is not None, "a finite number or null")
POSITIVE: Rule = (lambda v: number(v) is not None and v > 0, "a positive number")
PID: Rule = (lambda v: pid(v) is not None, f"a pid (an integer from 2 to {PID_MAX})")
PID_OR_NULL: Rule = (lambda v: v is None or pid(v) is not None, "a pid or null")
OBJECT_OR_NULL: Rule = (lambda v: v is None or isinstance(v, dict), "an object or null")


def describe(value: Any) -> str:
    """A short description of a JSON value for a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return clip(repr(value), 40)
    if isinstance(value, str):
        return f"the string {clip(value, 40)!r}"
    return "an object" if isinstance(value, dict) else f"a {type(value).__name__}"


@functools.cache  # the rules' few dotted names, split once per process
def _parts(dotted: str) -> tuple[str, ...]:
    return tuple(dotted.split("."))


def _lookup(doc: Mapping[str, Any], dotted: str) -> tuple[Any, bool]:
    value: Any = doc
    for part in _parts(dotted):
        if not isinstance(value, dict) or part not in value:
            return None, False
        value = value[part]
    return value, True


def shape_problem(doc: Mapping[str, Any], rules: Mapping[str, Rule]) -> str | None:
    """The first field of ``doc`` that is present with the wrong type, as a message; fields
    that are absent are the reader's to default."""
    for dotted, (check, expected) in rules.items():
        value, present = _lookup(doc, dotted)
        if present and not check(value):
            return f"{dotted} is {describe(value)}, expected {expected}"
    return None
