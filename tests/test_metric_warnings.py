"""Silent metric loss (issue 8, item 2): a `metrics_from_stdout` pattern that never matched
and a `best` metric that never appeared are warnings in summary.json, in `ops run status`
and in `ops validate` (exit 0: warnings, not violations)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from runner import contract
from runner.logpump import StdoutMetrics
from runner.run_warnings import WARNINGS_LIMIT, metric_warnings, read_warnings
from runner.schemas import load_schema
from runner.validate import validate_run_dir

from .conftest import Project, base_config

PRINT = "for i in range(1, 4): print(f'iter {i}: loss {1 / i:.3f}')"
MATCHING = r"iter (?P<step>\d+): loss (?P<loss>[0-9.]+)"
NEVER = r"epoch (?P<step>\d+) acc=(?P<acc>[0-9.]+)"


def _with_presets(project: Project) -> Project:
    doc = base_config(project.runs, project.socket)
    command = ["{python}", "-c", PRINT]
    doc["presets"]["lossy"] = {
        "kind": "command", "command": command, "limits": {"grace_sec": 1},
        "metrics_from_stdout": [{"pattern": MATCHING}, {"pattern": NEVER}],
        "best": {"loss": "min", "acc": "max"}}
    doc["presets"]["fine"] = {
        "kind": "command", "command": command, "limits": {"grace_sec": 1},
        "metrics_from_stdout": [{"pattern": MATCHING}], "best": {"loss": "min"}}
    project.write_config(doc)
    return project


def _codes(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((w["code"], w.get("pattern") or w.get("metric") or "") for w in items)


def test_a_pattern_that_never_matched_and_a_missing_best_are_warned_everywhere(
        project: Project) -> None:
    _with_presets(project)
    assert project.ops("run", "submit", "-p", "lossy", "--run-id", "lossy1", "-f").exit_code == 0
    summary = project.summary("lossy1")
    assert summary["status"] == "completed" and summary["metrics_best"] == {"loss": 0.333}
    assert _codes(summary["warnings"]) == [("best-metric-missing", "acc"),
                                           ("metric-pattern-unmatched", NEVER)]
    jsonschema.validate(summary, load_schema("summary"))
    events = [json.loads(line) for line in
              (project.run_dir("lossy1") / contract.EVENTS).read_text().splitlines()]
    assert sum(1 for e in events if e["type"] == "warning" and e.get("code")) == 2

    status = project.ops("run", "status", "lossy1", "--json")
    assert status.exit_code == 0, status.stderr
    run = status.json()["runs"][0]
    assert _codes(run["warnings"]) == _codes(summary["warnings"])
    jsonschema.validate(status.json(), load_schema("run_status"))
    text = project.ops("run", "status", "lossy1")
    assert text.exit_code == 0 and "never appeared in metrics.jsonl" in text.stdout
    assert "matched no line of stdout" in text.stdout

    checked = project.ops("validate", str(project.run_dir("lossy1")), "--json")
    assert checked.exit_code == 0, checked.stdout + checked.stderr
    report = checked.json()
    assert report["ok"] is True and report["violations"] == []
    rules = sorted(w["rule"] for w in report["warnings"])
    assert rules == ["L3.best-metric-missing", "L3.metric-pattern-unmatched"]
    shown = project.ops("validate", str(project.run_dir("lossy1")))
    assert shown.exit_code == 0 and "warning: summary.json: L3.metric-pattern-unmatched" \
        in shown.stdout


def test_a_run_whose_patterns_all_matched_has_no_warnings(project: Project) -> None:
    _with_presets(project)
    assert project.ops("run", "submit", "-p", "fine", "--run-id", "fine1", "-f").exit_code == 0
    assert project.summary("fine1")["warnings"] == []
    report = project.ops("validate", str(project.run_dir("fine1")), "--json").json()
    assert report["ok"] and not [w for w in report["warnings"] if "metric" in w["rule"]]


def test_validate_derives_the_warnings_for_a_summary_written_before_them(
        project: Project) -> None:
    """A run ended before summaries had `warnings` (or whose summary the runner wrote): validate
    works them out from spec.json and metrics.jsonl."""
    _with_presets(project)
    assert project.ops("run", "submit", "-p", "lossy", "--run-id", "old1", "-f").exit_code == 0
    path = project.run_dir("old1") / contract.SUMMARY
    doc = json.loads(path.read_text())
    del doc["warnings"]
    path.write_text(json.dumps(doc))
    report = validate_run_dir(project.run_dir("old1"))
    assert report.ok, report.render_text()
    assert sorted(w.rule for w in report.warnings) == ["L3.best-metric-missing",
                                                        "L3.metric-pattern-unmatched"]


def test_pump_counts_matches_per_pattern(tmp_path: Path) -> None:
    pump = StdoutMetrics([MATCHING, NEVER, r"loss (?P<loss>nan)"], tmp_path / "metrics.jsonl")
    pump.feed_stream(b"iter 1: loss 0.5\nnoise\niter 2: loss 0.25\nloss nan\n")
    pump.flush()
    pump.close()
    # a line that matched but gave no finite number lifted nothing: it counts as no match
    assert pump.matches == [2, 0, 0]


HOSTILE: list[tuple[str, Any, list[dict[str, str]]]] = [
    ("not a list", {"code": "x", "message": "y"}, []),
    ("wrong types", [1, None, "text", {"code": 3, "message": "m"}, {"code": "c"}], []),
    ("extra keys dropped, long text clipped",
     [{"code": "metric-pattern-unmatched", "message": "m" * 5000, "pattern": "p" * 999,
       "evil": {"nested": True}}],
     [{"code": "metric-pattern-unmatched", "message": "m" * 297 + "...",
       "pattern": "p" * 197 + "..."}]),
]


@pytest.mark.parametrize(("value", "expected"), [(v, e) for _, v, e in HOSTILE],
                         ids=[name for name, _, _ in HOSTILE])
def test_warnings_read_back_from_a_run_dir_are_typed_and_bounded(
        value: Any, expected: list[dict[str, str]]) -> None:
    assert read_warnings(value) == expected


def test_a_flood_of_warnings_is_cut_short(project: Project) -> None:
    _with_presets(project)
    assert project.ops("run", "submit", "-p", "fine", "--run-id", "flood", "-f").exit_code == 0
    path = project.run_dir("flood") / contract.SUMMARY
    doc = json.loads(path.read_text())
    doc["warnings"] = [{"code": "best-metric-missing", "metric": f"m{i}", "message": f"w{i}"}
                       for i in range(100_000)]
    path.write_text(json.dumps(doc))
    run = project.ops("run", "status", "flood", "--json").json()["runs"][0]
    assert len(run["warnings"]) == WARNINGS_LIMIT
    report = validate_run_dir(project.run_dir("flood"))
    assert report.ok is False  # the schema bounds the list: 100000 items break it
    assert any(v.rule == "L2.schema" and "warnings" in v.message for v in report.violations)
    assert len([w for w in report.warnings if w.rule == "L3.best-metric-missing"]) <= 21


def test_warnings_about_odd_subjects_stay_within_the_schema() -> None:
    """A pattern or metric name full of characters that repr() escapes still gives a warning
    summary.json's schema accepts (the message quotes its subject)."""
    odd = "\U000e0001" * 300  # repr() writes each as 10 characters
    spec = {"metrics": {"from_stdout": [{"pattern": f"(?P<m>{odd})"}], "best": {odd: "max"}}}
    found = metric_warnings(spec, [0], {})
    assert [w["code"] for w in found] == ["metric-pattern-unmatched", "best-metric-missing"]
    schema = load_schema("summary")["properties"]["warnings"]
    jsonschema.validate(found, schema)
