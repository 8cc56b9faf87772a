"""`ops run diff` as text: the differences first, then each section."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ops.report.table import fmt_number


def _num(value: Any) -> str:
    return "" if value is None else fmt_number(float(value))


def _config(section: dict[str, Any]) -> list[str]:
    lines = [f"  ~ {e['key']}: {e['a']!r} -> {e['b']!r}" for e in section["changed"]]
    lines += [f"  + {e['key']}: {e['b']!r}" for e in section["added"]]
    lines += [f"  - {e['key']}: {e['a']!r}" for e in section["removed"]]
    return lines or ["  same"]


def _command(section: dict[str, Any]) -> list[str]:
    if section["same"]:
        return ["  same"]
    note = ["  (follows from the config change)"] if section["follows_from_config"] else []
    return note + [f"  {line}" for line in section["diff"]]


def _code(section: dict[str, Any]) -> list[str]:
    a, b = section["a"], section["b"]
    lines = [f"  a: {a['commit']}{' dirty' if a['dirty'] else ''} ({a['branch']})",
             f"  b: {b['commit']}{' dirty' if b['dirty'] else ''} ({b['branch']})"]
    if section["commits_between"]:
        lines.append(f"  commits {section.get('direction', '')}:")
        lines += [f"    {c}" for c in section["commits_between"]]
    for side, stat in section["dirty_diff"].items():
        lines.append(f"  uncommitted changes in {side} (against its base commit):")
        lines += [f"    {s}" for s in stat]
    lines += [f"  note: {n}" for n in section["notes"]]
    return lines


def _env(section: dict[str, Any]) -> list[str]:
    lines = [f"  ~ {e['key']}: {e['a']!r} -> {e['b']!r}" for e in section["changed"]]
    pkgs = section["packages"]
    lines += [f"  + {p}" for p in pkgs["added"]] + [f"  - {p}" for p in pkgs["removed"]]
    lines += [f"  ~ {p}" for p in pkgs["changed"]]
    return lines or ["  same"]


def _data(section: dict[str, Any]) -> list[str]:
    lines = []
    if section["a"] != section["b"]:
        lines.append(f"  dataset: {section['a']} -> {section['b']}")
    lines += [f"  + {p}" for p in section["added"]] + [f"  - {p}" for p in section["removed"]]
    lines += [f"  ~ {e['path']}: {e['a_size']} -> {e['b_size']} bytes, sha256 "
              f"{str(e['a_sha256'])[:12]} -> {str(e['b_sha256'])[:12]}"
              for e in section["changed"]]
    return lines or ["  same"]


def _metrics(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        if row["a"] == row["b"] or row["metric"].endswith(("_ci_low", "_ci_high")):
            continue  # the CI bounds are in --json
        pct = "" if row["percent"] is None else f" ({row['percent']:+.1f}%)"
        delta = "" if row["delta"] is None else f"  {row['delta']:+.4g}{pct}"
        better = f"  better: {row['better']}" if row["better"] else ""
        lines.append(f"  {row['metric']} ({row['kind']}): {_num(row['a'])} -> "
                     f"{_num(row['b'])}{delta}{better}")
    return lines or ["  same"]


RENDERERS: dict[str, Callable[[Any], list[str]]] = {
    "config": _config, "command": _command, "code": _code, "env": _env, "data": _data,
    "metrics": _metrics}


def diff_text(doc: dict[str, Any]) -> str:
    lines = [f"a: {doc['a']['run_id']} ({doc['a']['status']})",
             f"b: {doc['b']['run_id']} ({doc['b']['status']})"]
    if doc["differences"]:
        lines.append(f"{len(doc['differences'])} differences in the inputs:")
        lines += [f"  {d}" for d in doc["differences"]]
    else:
        lines.append("no differences in the inputs")
    for name, section in doc["sections"].items():
        lines.append(f"{name}:")
        lines += RENDERERS[name](section)
    return "\n".join(lines)
