"""`ops run diff A B`: what differs between two runs, section by section, as JSON or text.

- config: the effective config (preset with --debug and --set applied) as dotted keys:
  changed, added, removed;
- command: command.sh with each run's own id and dir replaced by placeholders, as a unified
  diff; marked as following from the config when every differing line carries a changed key;
- code: the two commits, the commits between them (from the local git repository), and the
  dirty snapshot's diff against its base commit;
- env: python, platform, torch/CUDA, driver, GPUs, and the pip freeze delta;
- data: the dataset manifests' files added, removed and changed (by size and checksum);
- metrics: final and best values with deltas, percent and the better run.

``differences`` names each input that differs (config key, commit, env item, data file), so a
reader sees at once whether two runs are comparable.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ops.hosts.local import run_local
from ops.report.stats import direction
from ops.report.table import fmt_number
from runner.report_data import flatten

SECTIONS = ("config", "command", "code", "env", "data", "metrics")
DIFF_SCHEMA = "ops.run_diff/1"
MAX_LIST = 200


def _docs(run: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = (run.get("docs") or {}).get(name)
    return value if isinstance(value, dict) else {}


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True,
                                                                   default=str)


def dict_delta(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {"changed": [{"key": k, "a": a[k], "b": b[k]} for k in a
                        if k in b and not _same(a[k], b[k])][:MAX_LIST],
            "added": [{"key": k, "b": b[k]} for k in b if k not in a][:MAX_LIST],
            "removed": [{"key": k, "a": a[k]} for k in a if k not in b][:MAX_LIST]}


def config_section(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    return dict_delta(flatten(_docs(a, "config_effective").get("config") or {}),
                      flatten(_docs(b, "config_effective").get("config") or {}))


def _command_lines(run: Mapping[str, Any]) -> list[str]:
    text = (run.get("docs") or {}).get("command_sh") or ""
    for old, new in ((str(run.get("run_dir") or ""), "<run_dir>"),
                     (str(run.get("run_id") or ""), "<run_id>")):
        if old:
            text = text.replace(old, new)
    return text.splitlines()


def command_section(a: Mapping[str, Any], b: Mapping[str, Any],
                    config: Mapping[str, Any]) -> dict[str, Any]:
    lines = list(difflib.unified_diff(_command_lines(a), _command_lines(b), "a/command.sh",
                                      "b/command.sh", n=0, lineterm=""))
    changed = [line[1:] for line in lines if line[:1] in "+-" and line[:3] not in ("+++",
                                                                                "---")]
    keys = [entry["key"].rsplit(".", 1)[-1] for part in ("changed", "added", "removed")
            for entry in config[part]]
    explained = bool(changed) and all(any(k in line for k in keys) for line in changed)
    return {"same": not lines, "diff": lines[:MAX_LIST], "follows_from_config": explained}


def _git_facts(run: Mapping[str, Any]) -> dict[str, Any]:
    git = run.get("git") or {}
    return {k: git.get(k) for k in ("commit", "branch", "dirty", "base_commit")}


def _git_lines(repo: Path, *args: str) -> list[str] | None:
    result = run_local(["git", "-C", str(repo), *args], check=False, timeout=30)
    return result.stdout.splitlines() if result.ok else None


def code_section(a: Mapping[str, Any], b: Mapping[str, Any],
                 repo: Path | None) -> dict[str, Any]:
    ga, gb = _git_facts(a), _git_facts(b)
    out: dict[str, Any] = {"a": ga, "b": gb, "same": _same(ga, gb), "commits_between": [],
                           "dirty_diff": {}, "notes": []}
    ca, cb = ga["commit"], gb["commit"]
    if ca and cb and ca != cb and repo is not None:
        between = None
        for older, newer, way in ((ca, cb, "a..b"), (cb, ca, "b..a")):
            between = _git_lines(repo, "log", "--format=%h %s", f"{older}..{newer}", "--")
            if between:
                out["direction"] = way
                break
        if between is None:
            out["notes"].append(f"the commits are not in the local repository {repo}")
        out["commits_between"] = (between or [])[:MAX_LIST]
    for side, facts in (("a", ga), ("b", gb)):
        if facts["dirty"] and facts["base_commit"] and facts["commit"] and repo is not None:
            stat = _git_lines(repo, "diff", "--stat", facts["base_commit"], facts["commit"], "--")
            out["dirty_diff"][side] = stat[:MAX_LIST] if stat is not None else \
                ["the snapshot commit is not in the local repository"]
    return out


def _env_facts(doc: Mapping[str, Any]) -> dict[str, Any]:
    torch = doc.get("torch") or {}
    gpus = [g.get("name") for g in doc.get("gpus") or [] if isinstance(g, dict)]
    return {"python": (doc.get("python") or {}).get("version"),
            "platform": (doc.get("platform") or {}).get("release"),
            "torch": torch.get("version"), "cuda": torch.get("cuda"),
            "cudnn": torch.get("cudnn"), "driver": doc.get("driver"), "gpus": gpus}


def _packages(doc: Mapping[str, Any]) -> dict[str, str]:
    found = {}
    for line in (doc.get("packages") or {}).get("list") or []:
        name, _, version = str(line).partition("==")
        found[name.lower()] = version or str(line)
    return found


def env_section(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    ea, eb = _docs(a, "env_snapshot"), _docs(b, "env_snapshot")
    pa, pb = _packages(ea), _packages(eb)
    return {"changed": dict_delta(_env_facts(ea), _env_facts(eb))["changed"],
            "packages": {"added": sorted(f"{k}=={pb[k]}" for k in set(pb) - set(pa)),
                         "removed": sorted(f"{k}=={pa[k]}" for k in set(pa) - set(pb)),
                         "changed": sorted(f"{k} {pa[k]} -> {pb[k]}" for k in set(pa) & set(pb)
                                           if pa[k] != pb[k])}}


def _files(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(f["path"]): f for f in doc.get("files") or []
            if isinstance(f, dict) and isinstance(f.get("path"), str)}


def data_section(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    ma, mb = _docs(a, "dataset_manifest"), _docs(b, "dataset_manifest")
    fa, fb = _files(ma), _files(mb)
    changed = [{"path": p, "a_size": fa[p].get("size"), "b_size": fb[p].get("size"),
                "a_sha256": fa[p].get("sha256"), "b_sha256": fb[p].get("sha256")}
               for p in sorted(set(fa) & set(fb))
               if (fa[p].get("size"), fa[p].get("sha256")) != (fb[p].get("size"),
                                                                 fb[p].get("sha256"))]
    return {"a": {"name": ma.get("name"), "root": ma.get("root")},
            "b": {"name": mb.get("name"), "root": mb.get("root")},
            "added": sorted(set(fb) - set(fa))[:MAX_LIST],
            "removed": sorted(set(fa) - set(fb))[:MAX_LIST], "changed": changed[:MAX_LIST]}


def metrics_section(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    rules = {**(a.get("best_rules") or {}), **(b.get("best_rules") or {})}
    for part in ("metrics_final", "metrics_best"):
        va, vb = a.get(part) or {}, b.get(part) or {}
        for name in dict.fromkeys([*va, *vb]):
            x, y = va.get(name), vb.get(name)
            delta = y - x if x is not None and y is not None else None
            sense = direction(name, rules)
            better = None
            if delta and sense:
                better = "b" if (delta > 0) == (sense == "max") else "a"
            rows.append({"metric": name, "kind": part[8:], "a": x, "b": y, "delta": delta,
                         "percent": delta / abs(x) * 100 if delta is not None and x else None,
                         "better": better})
    return rows[:MAX_LIST * 2]


def differences(sections: Mapping[str, Any]) -> list[str]:
    """One line per input that differs (metrics are results, not inputs)."""
    out = []
    config = sections.get("config")
    if config:
        out += [f"config: {e['key']} {e.get('a')!r} -> {e.get('b')!r}" for e in config["changed"]]
        out += [f"config: {e['key']} added" for e in config["added"]]
        out += [f"config: {e['key']} removed" for e in config["removed"]]
    command = sections.get("command")
    if command and not command["same"] and not command["follows_from_config"]:
        out.append("command: command.sh differs beyond the config")
    code = sections.get("code")
    if code and not code["same"]:
        out.append(f"code: commit {_short(code['a']['commit'])} -> {_short(code['b']['commit'])}"
                   f"{' (dirty)' if code['a']['dirty'] or code['b']['dirty'] else ''}")
    env = sections.get("env")
    if env:
        out += [f"env: {e['key']} {e['a']!r} -> {e['b']!r}" for e in env["changed"]]
        pkgs = env["packages"]
        count = sum(len(pkgs[k]) for k in ("added", "removed", "changed"))
        if count:
            out.append(f"env: {count} packages differ")
    data = sections.get("data")
    if data:
        out += [f"data: {p} added" for p in data["added"]]
        out += [f"data: {p} removed" for p in data["removed"]]
        out += [f"data: {e['path']} changed" for e in data["changed"]]
    return out


def _short(sha: Any) -> str:
    return sha[:10] if isinstance(sha, str) else "none"


def diff_runs(a: Mapping[str, Any], b: Mapping[str, Any], *, repo: Path | None,
              sections: Sequence[str] = SECTIONS) -> dict[str, Any]:
    config = config_section(a, b)
    built: dict[str, Any] = {}
    for name in sections:
        if name == "config":
            built[name] = config
        elif name == "command":
            built[name] = command_section(a, b, config)
        elif name == "code":
            built[name] = code_section(a, b, repo)
        elif name == "env":
            built[name] = env_section(a, b)
        elif name == "data":
            built[name] = data_section(a, b)
        else:
            built[name] = metrics_section(a, b)
    side = ("run_id", "run_dir", "status", "reason")
    return {"schema": DIFF_SCHEMA, "a": {k: a.get(k) for k in side},
            "b": {k: b.get(k) for k in side}, "sections": built,
            "differences": differences(built)}


# -- text --------------------------------------------------------------------------------------


def _num(value: Any) -> str:
    return "" if value is None else fmt_number(float(value))


def _config_text(section: dict[str, Any]) -> list[str]:
    lines = [f"  ~ {e['key']}: {e['a']!r} -> {e['b']!r}" for e in section["changed"]]
    lines += [f"  + {e['key']}: {e['b']!r}" for e in section["added"]]
    lines += [f"  - {e['key']}: {e['a']!r}" for e in section["removed"]]
    return lines or ["  same"]


def _command_text(section: dict[str, Any]) -> list[str]:
    if section["same"]:
        return ["  same"]
    note = ["  (follows from the config change)"] if section["follows_from_config"] else []
    return note + [f"  {line}" for line in section["diff"]]


def _code_text(section: dict[str, Any]) -> list[str]:
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


def _env_text(section: dict[str, Any]) -> list[str]:
    lines = [f"  ~ {e['key']}: {e['a']!r} -> {e['b']!r}" for e in section["changed"]]
    pkgs = section["packages"]
    lines += [f"  + {p}" for p in pkgs["added"]] + [f"  - {p}" for p in pkgs["removed"]]
    lines += [f"  ~ {p}" for p in pkgs["changed"]]
    return lines or ["  same"]


def _data_text(section: dict[str, Any]) -> list[str]:
    lines = []
    if section["a"] != section["b"]:
        lines.append(f"  dataset: {section['a']} -> {section['b']}")
    lines += [f"  + {p}" for p in section["added"]] + [f"  - {p}" for p in section["removed"]]
    lines += [f"  ~ {e['path']}: {e['a_size']} -> {e['b_size']} bytes, sha256 "
              f"{str(e['a_sha256'])[:12]} -> {str(e['b_sha256'])[:12]}"
              for e in section["changed"]]
    return lines or ["  same"]


def _metrics_text(rows: list[dict[str, Any]]) -> list[str]:
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
    "config": _config_text, "command": _command_text, "code": _code_text, "env": _env_text,
    "data": _data_text, "metrics": _metrics_text}


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
