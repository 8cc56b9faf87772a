"""`ops report` over synthetic run dirs: the table, formats, filters, bad and hostile input."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from ops.cli.main import main
from runner import contract
from runner.schemas import load_schema

from .report_runs import FakeRun, make_fifo, seg_run, write_run

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Out:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def proj(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose artifacts dir holds the fetched runs (no host work at all)."""
    root = tmp_path / "proj"
    (root / "configs" / "ops").mkdir(parents=True)
    (root / "configs" / "ops" / "project.json").write_text(json.dumps(
        {"project": {"name": "rep", "remote_outputs_dir": str(tmp_path / "host-runs")},
         "presets": {"p": {"kind": "command", "command": ["true"]}}}))
    monkeypatch.chdir(root)
    monkeypatch.setenv("OPS_PROJECT_CONFIG", str(root / "configs" / "ops" / "project.json"))
    return root


OpsRun = Callable[..., Out]


@pytest.fixture
def ops(capsys: pytest.CaptureFixture[str]) -> OpsRun:
    """`ops ARGS` in this process: the real entry point, its exit code and output."""
    def run(*args: str) -> Out:
        capsys.readouterr()
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:
            code = 0
        captured = capsys.readouterr()
        return Out(code, captured.out, captured.err)
    return run


def artifacts(proj: Path) -> Path:
    return proj / "artifacts" / "runs"


def sweep(root: Path) -> list[Path]:
    return [write_run(root, seg_run("r1-dice", "dice_ce", 0.0)),
            write_run(root, seg_run("r2-cldice", "cldice", 0.05,
                                    started_at="2026-01-02T11:00:00.000Z")),
            write_run(root, seg_run("r3-warp", "warp", -0.01,
                                    started_at="2026-01-02T12:00:00.000Z"))]


def test_table_shows_differing_config_metrics_best_and_ci(proj: Path, ops: OpsRun) -> None:
    sweep(artifacts(proj))
    write_run(artifacts(proj), FakeRun("r4-empty", started_at="2026-01-03T00:00:00.000Z",
                                       overrides={"loss": "x", "folds": 2}))
    out = ops("report")
    assert out.exit_code == 0, out.stderr
    header, *rows = out.stdout.split("\n\n")[0].splitlines()
    assert header.split()[:7] == ["RUN", "STATUS", "PRESET", "STARTED", "DURATION", "GIT",
                                  "overrides.loss"]
    assert "overrides.folds" not in header  # the same in every run
    assert "dsc_mean best" in header and "dsc_mean 95% CI" in header
    assert [r.split()[0] for r in rows] == ["r1-dice", "r2-cldice", "r3-warp", "r4-empty"]
    assert rows[0].endswith("0.67      0.67           [0.64, 0.7]")  # final, best, CI
    assert rows[3].split()[-3:] == ["-", "-", "-"]  # no metrics at all
    assert "aaaaaaaa" in rows[0]


def test_corrupt_summary_and_hostile_spec_are_invalid_with_reason(proj: Path,
                                                                 ops: OpsRun) -> None:
    """Must show: both broken runs are rows with the reason; the others are reported."""
    root = artifacts(proj)
    sweep(root)
    corrupt = write_run(root, seg_run("r5-corrupt", "dice_ce", 0.0))
    (corrupt / contract.SUMMARY).write_text('{"schema": "ops.summary/1", "status": ')
    hostile = write_run(root, seg_run("r6-hostile", "dice_ce", 0.0))
    (hostile / contract.SPEC).write_text(json.dumps(
        {"schema": "ops.spec/1", "run_id": "r6-hostile", "preset": ["not", "a", "name"],
         "tmux": "not-an-object", "heartbeat": [1, 2], "metrics": {"best": "max"}}))
    fifo = write_run(root, seg_run("r7-fifo", "dice_ce", 0.0))
    (fifo / contract.SPEC).unlink()
    make_fifo(fifo / contract.SPEC)
    out = ops("report", "--format", "json")
    assert out.exit_code == 0, out.stderr
    runs = {r["run_id"]: r for r in out.json()["runs"]}
    assert set(runs) == {"r1-dice", "r2-cldice", "r3-warp", "r5-corrupt", "r6-hostile",
                         "r7-fifo"}
    for rid in ("r1-dice", "r2-cldice", "r3-warp"):
        assert runs[rid]["status"] == "completed"
    for rid, reason in (("r5-corrupt", "summary.json: not valid JSON"),
                        ("r6-hostile", "spec.json: preset is a list, expected str"),
                        ("r7-fifo", "spec.json is not a regular file")):
        assert runs[rid]["status"] == "invalid", runs[rid]
        assert reason in runs[rid]["reason"] and runs[rid]["reason"]
    text = ops("report").stdout
    assert "r5-corrupt" in text and "!! r5-corrupt: invalid:" in text
    assert "!! r7-fifo: invalid: spec.json is not a regular file" in text


def test_link_out_of_the_run_dir_is_refused(proj: Path, ops: OpsRun, tmp_path: Path) -> None:
    root = artifacts(proj)
    run = write_run(root, seg_run("r1-link", "dice_ce", 0.0))
    secret = tmp_path / "elsewhere.json"
    secret.write_text((run / contract.SUMMARY).read_text())
    (run / contract.SUMMARY).unlink()
    (run / contract.SUMMARY).symlink_to(secret)
    record = ops("report", "--format", "json").json()["runs"][0]
    assert record["status"] == "invalid"
    assert "summary.json is not a regular file" in record["reason"]


def test_formats_md_csv_json(proj: Path, ops: OpsRun) -> None:
    sweep(artifacts(proj))
    md = ops("report", "--format", "md", "--metric", "dsc_mean").stdout
    assert md.splitlines()[0].startswith("| RUN | STATUS |")
    assert md.splitlines()[1].startswith("|---|---|")
    rows = list(csv.DictReader(io.StringIO(ops("report", "--format", "csv").stdout)))
    assert [r["run"] for r in rows] == ["r1-dice", "r2-cldice", "r3-warp"]
    assert float(rows[1]["dsc_mean"]) == pytest.approx(0.72)
    assert float(rows[1]["dsc_mean_ci_low"]) == pytest.approx(0.69)
    doc = ops("report", "--format", "json").json()
    jsonschema.validate(doc, load_schema("report"))
    assert doc["config_keys"] == ["overrides.loss"]
    assert doc["runs"][0]["series"]["train_loss"][0] == [1.0, 2.0]


def test_filters_sort_and_top(proj: Path, ops: OpsRun) -> None:
    sweep(artifacts(proj))
    ids = lambda out: [r["run_id"] for r in out.json()["runs"]]  # noqa: E731
    assert ids(ops("report", "--preset", "w*", "--format", "json")) == ["r3-warp"]
    assert ids(ops("report", "--sort", "-dsc_mean", "--top", "2", "--format", "json")) == [
        "r2-cldice", "r1-dice"]
    assert ids(ops("report", "--status", "failed", "--format", "json")) == []
    assert ids(ops("report", "--since", "1d", "--format", "json")) == []  # all from January
    assert len(ids(ops("report", "--since", "2026-01-02T10:30:00", "--format", "json"))) == 2


def test_sources_paths_globs_and_run_ids(proj: Path, ops: OpsRun, tmp_path: Path) -> None:
    sweep(artifacts(proj))
    other = tmp_path / "elsewhere"
    write_run(other, seg_run("x1", "dice_ce", 0.0))
    out = ops("report", "r1-dice", str(other / "x1"), str(artifacts(proj) / "r2-*"),
              "--format", "json")
    assert [r["run_id"] for r in out.json()["runs"]] == ["r1-dice", "x1", "r2-cldice"]
    whole = ops("report", str(other), "--format", "json")
    assert [r["run_id"] for r in whole.json()["runs"]] == ["x1"]


@pytest.mark.parametrize(("args", "code", "message"), [
    pytest.param(["never-fetched"], 3, "no fetched copy of 'never-fetched'", id="unknown-id"),
    pytest.param(["/nonexistent/dir"], 3, "no such run directory", id="missing-path"),
    pytest.param(["nomatch-*"], 3, "matches no directory", id="empty-glob"),
    pytest.param(["--since", "yesterday"], 2, "--since 'yesterday'", id="bad-since"),
    pytest.param(["--sort", "nosuch"], 2, "no selected run has a metric", id="bad-sort"),
    pytest.param(["--group-by", "nokey"], 2, "no selected run has that config key",
                 id="bad-group-by"),
    pytest.param(["--format", "pdf"], 2, "Invalid value for '--format'", id="bad-format"),
])
def test_bad_input(proj: Path, ops: OpsRun, args: list[str], code: int, message: str) -> None:
    sweep(artifacts(proj))
    out = ops("report", *args)
    assert out.exit_code == code, (out.stdout, out.stderr)
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_output_file(proj: Path, ops: OpsRun) -> None:
    sweep(artifacts(proj))
    out = ops("report", "--format", "md", "-o", "report.md")
    assert out.exit_code == 0 and out.stdout == ""
    assert (proj / "report.md").read_text().startswith("| RUN |")


def test_html_without_matplotlib_says_how_to_install(proj: Path, tmp_path: Path) -> None:
    sweep(artifacts(proj))
    shim = tmp_path / "shim" / "matplotlib"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('hidden for this test')\n")
    env = {**os.environ, "PYTHONPATH": f"{shim.parent}{os.pathsep}{REPO}"}
    proc = subprocess.run([sys.executable, "-m", "ops", "report", "--format", "html"],
                          cwd=proj, env=env, capture_output=True, text=True, check=False,
                          timeout=60)
    assert proc.returncode == 2
    assert "needs matplotlib" in proc.stderr and "pip install 'pod-ops[report]'" in proc.stderr


def test_finished_runs_are_cached_until_their_files_change(proj: Path, ops: OpsRun,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    sweep(artifacts(proj))
    first = ops("report", "--format", "csv")
    assert first.exit_code == 0 and list((proj / ".ops" / "report-cache").glob("*.json"))
    from runner import report_data

    read: list[str] = []
    real = report_data.collect
    monkeypatch.setattr(report_data, "collect",
                        lambda run_dir, *a, **k: read.append(run_dir.name) or real(
                            run_dir, *a, **k))
    assert ops("report", "--format", "csv").stdout == first.stdout
    assert read == []  # every finished run came from the cache
    summary = artifacts(proj) / "r2-cldice" / contract.SUMMARY
    doc = json.loads(summary.read_text())
    doc["metrics_final"]["dsc_mean"] = 0.99
    contract.atomic_write_json(summary, doc)
    again = ops("report", "--format", "csv")
    assert read == ["r2-cldice"] and ",0.99," in again.stdout
    ops("report", "--format", "csv", "--no-cache")
    assert read[1:] == ["r1-dice", "r2-cldice", "r3-warp"]


def test_an_unwritable_cache_dir_only_costs_speed(proj: Path, ops: OpsRun) -> None:
    sweep(artifacts(proj))
    (proj / ".ops").write_text("a file where the cache dir would go\n")
    out = ops("report", "--format", "csv")
    assert out.exit_code == 0, out.stderr
    assert len(out.stdout.splitlines()) == 4
