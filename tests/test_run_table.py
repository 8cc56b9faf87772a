"""The run table (`ops run list`, `ops ps`), the present (`ops run status`), one run in detail,
and Ctrl-C while following a run."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from ops.cli import render, render_run
from ops.services import resolve
from runner import contract, status
from runner.schemas import load_schema

from .conftest import REPO, Project
from .report_runs import FakeRun, write_run
from .test_hostile_rundirs import write_run as write_live_run

TRACE = "Traceback (most recent call last):\n  File \"train.py\", line 3\nValueError: lr < 0"


@pytest.mark.parametrize(("seconds", "shown"), [
    (0.5, "0.5s"), (42, "42s"), (65, "1m05s"), (3700, "1h01m"), (90_000, "1d01h"),
    (None, "-"), (-1, "-"), (True, "-"), ("5", "-")])
def test_durations_read_as_a_human_would_say_them(seconds: Any, shown: str) -> None:
    assert render.duration(seconds) == shown


@pytest.mark.parametrize(("count", "shown"), [
    (0, "0 B"), (1536, "1.5 KiB"), (5 * 2**20, "5 MiB"), (3 * 2**30 // 2, "1.5 GiB"),
    (None, "-"), (-3, "-"), (2.5, "-")])
def test_sizes_in_binary_units(count: Any, shown: str) -> None:
    assert render.size(count) == shown


NOW = dt.datetime(2026, 1, 10, tzinfo=dt.timezone.utc)
TABLE = [{"run_id": f"r{i}", "status": s, "preset": p, "created_at": c, "started_at": c}
         for i, (s, p, c) in enumerate([
             ("completed", "toy", "2026-01-09T12:00:00.000Z"),
             ("failed", "seg_a", "2026-01-08T12:00:00.000Z"),
             ("running", "seg_b", "2026-01-02T12:00:00.000Z")])]


@pytest.mark.parametrize(("chosen", "ids"), [
    pytest.param(resolve.TableFilter(), ["r0", "r1", "r2"], id="all-newest-first"),
    pytest.param(resolve.TableFilter(statuses=("failed", "running")), ["r1", "r2"],
                 id="status"),
    pytest.param(resolve.TableFilter(presets=("seg_*",)), ["r1", "r2"], id="preset-glob"),
    pytest.param(resolve.TableFilter(since="2d"), ["r0", "r1"], id="since"),
    pytest.param(resolve.TableFilter(limit=1), ["r0"], id="limit"),
    pytest.param(resolve.TableFilter(presets=("seg_*",), limit=1), ["r1"],
                 id="filter-then-limit"),
])
def test_table_filters(chosen: resolve.TableFilter, ids: list[str]) -> None:
    assert [r["run_id"] for r in chosen.apply(list(reversed(TABLE)), lambda: NOW)] == ids


def _fake(root: Path, run_id: str, day: int, **extra: Any) -> Path:
    spec_extra = {k: extra.pop(k) for k in ("sweep_id", "sweep_index") if k in extra}
    run_dir = write_run(root, FakeRun(run_id, preset=extra.pop("preset", "seg"),
                                      series=[{"dsc_mean": 0.5}] * 3,
                                      metrics_final={"dsc_mean": 0.7, "loss": 0.3},
                                      metrics_best={"dsc_mean": 0.8}, **extra))
    spec = json.loads((run_dir / contract.SPEC).read_text())
    spec.update(created_at=f"2026-01-0{day}T00:00:00.000Z", **spec_extra)
    contract.atomic_write_json(run_dir / contract.SPEC, spec)
    return run_dir


def test_an_ended_run_keeps_its_step_start_duration_and_headline(tmp_path: Path) -> None:
    info = status.run_status(_fake(tmp_path, "done-1", 1))
    assert info["status"] == "completed"
    assert info["step"] == 3 and info["started_at"] == "2026-01-02T10:00:00.000Z"
    assert info["duration_s"] == 300.0
    assert info["headline"] == {"metric": "dsc_mean", "goal": "max", "value": 0.8}


def test_a_live_run_has_a_duration_and_a_phase_that_matches_its_step(
        tmp_path: Path, wrapper: subprocess.Popen[bytes]) -> None:
    run_dir = write_live_run(tmp_path, "live-1", wrapper.pid)
    meta = json.loads((run_dir / contract.METADATA).read_text())
    meta["started_at"] = contract.iso(time.time() - 90)
    contract.atomic_write_json(run_dir / contract.METADATA, meta)
    beat = json.loads((run_dir / contract.HEARTBEAT).read_text())
    contract.atomic_write_json(run_dir / contract.HEARTBEAT,
                               {**beat, "phase": "starting", "step": 7, "ts": contract.iso()})
    spec = json.loads((run_dir / contract.SPEC).read_text())
    spec["metrics"] = {"best": {"loss": "min", "dice": "max"}}
    contract.atomic_write_json(run_dir / contract.SPEC, spec)
    (run_dir / contract.METRICS).write_bytes(
        b'{"step": 6, "metrics": {"loss": 0.5}}\n{"step": 7, "metrics": {"loss": 0.25, '
        b'"dice": 0.1}}\n{"step": 7, "metrics": {"dice": 0.2}}\n{"step": 8, "metr')
    info = status.run_status(run_dir)
    assert info["status"] == "running" and info["step"] == 7 and info["phase"] == "running"
    assert 80 < info["duration_s"] < 600
    assert info["headline"] == {"metric": "loss", "goal": "min", "value": None, "last": 0.25}
    assert render.headline(info["headline"]) == "loss 0.25 (now)"
    (run_dir / contract.METRICS).unlink()
    os.mkfifo(run_dir / contract.METRICS)  # never opened, never blocks
    assert status.run_status(run_dir)["headline"]["last"] is None


# -- the table through the command line ------------------------------------------------------


@pytest.fixture
def table_runs(project: Project) -> Project:
    _fake(project.runs, "a-old", 1)
    _fake(project.runs, "s-m1", 2, sweep_id="s", sweep_index=1)
    _fake(project.runs, "s-m0", 2, sweep_id="s", sweep_index=0)
    _fake(project.runs, "f-new", 3, status="failed",
          failure={"class": "ValueError", "message": "lr < 0", "traceback_tail": TRACE})
    return project


def _rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()[1:]]


def test_run_list_newest_first_with_sweep_members_in_order(table_runs: Project) -> None:
    listed = table_runs.ops("run", "list")
    assert listed.exit_code == 0, listed.stderr
    header = listed.stdout.splitlines()[0].split()
    assert header == ["RUN", "STATUS", "PRESET", "STEP", "STARTED", "DURATION", "METRIC",
                      "TMUX/JOB"]
    rows = _rows(listed.stdout)
    assert [r[0] for r in rows] == ["f-new", "s-m0", "s-m1", "a-old"]
    assert rows[0][1] == "failed" and rows[0][3] == "3"  # STEP of an ended run
    assert "5m00s" in rows[0] and rows[0][-3:-1] == ["dsc_mean", "0.8"]
    assert "\x1b" not in listed.stdout  # piped: no colour
    doc = table_runs.ops("run", "list", "--json").json()
    jsonschema.validate(doc, load_schema("run_list"))
    assert [r["run_id"] for r in doc["runs"]] == ["f-new", "s-m0", "s-m1", "a-old"]


@pytest.mark.parametrize(("args", "ids", "text"), [
    pytest.param(["run", "list", "--status", "failed"], ["f-new"], None, id="status"),
    pytest.param(["run", "list", "-n", "2"], ["f-new", "s-m0"], None, id="limit"),
    pytest.param(["ps", "-n", "1"], ["f-new"], None, id="ps-limit"),
    pytest.param(["run", "list", "--preset", "nope*"], [], "no runs match the filters (4 in ",
                 id="nothing-matches"),
    pytest.param(["run", "list", "--since", "soon"], None, "--since 'soon'", id="bad-since"),
])
def test_run_table_filters(table_runs: Project, args: list[str], ids: list[str] | None,
                           text: str | None) -> None:
    done = table_runs.ops(*args)
    if ids is None:
        assert done.exit_code == 2 and text in done.stderr
        return
    assert done.exit_code == 0, done.stderr
    if ids:
        assert [r[0] for r in _rows(done.stdout)] == ids
    if text:
        assert text in done.stdout


def test_an_empty_listing_says_where_it_looked(project: Project) -> None:
    for args in (["run", "list"], ["ps"]):
        done = project.ops(*args)
        assert done.exit_code == 0
        assert done.stdout.strip() == f"no runs in {project.runs} on local"


def test_run_status_is_the_present_and_list_the_history(table_runs: Project) -> None:
    now = table_runs.ops("run", "status")
    assert now.exit_code == 0, now.stderr
    assert now.stdout.splitlines() == [
        f"no live runs in {table_runs.runs} on local",
        "ended: 3 completed, 1 failed (ops run list shows them)"]
    as_json = table_runs.ops("run", "status", "--json").json()
    assert len(as_json["runs"]) == 4  # --json lists every run, as it always did


def test_one_run_in_detail(table_runs: Project) -> None:
    shown = table_runs.ops("run", "status", "f-new")
    assert shown.exit_code == 0, shown.stderr
    text = shown.stdout
    for needle in ("status         failed", "elapsed        5m00s",
                   "heartbeat      last step 3, phase ended",
                   "failure        ValueError: lr < 0", "traceback (last 3 lines):",
                   "  | ValueError: lr < 0", "final          best"):
        assert needle in " ".join(text.split("  ")) or needle in text, (needle, text)
    metric = next(line for line in text.splitlines() if line.strip().startswith("dsc_mean"))
    assert metric.split() == ["dsc_mean", "0.7", "0.8", "(max)"]
    record = table_runs.ops("run", "status", "f-new", "--json").json()["runs"][0]
    assert record["failure"]["traceback_tail"] == TRACE


def test_the_detail_of_a_live_service_shows_its_probe_memory_and_phase() -> None:
    text = render_run.detail_text({
        "run_id": "svc", "status": "serving", "phase": "starting", "step": 4,
        "rss_bytes": 3 * 2**20 // 2, "gpu_memory_bytes": 2 * 2**30, "heartbeat_age_s": 1.5,
        "service": {"port": 8000, "last_status_code": 200, "last_latency_ms": 3.25,
                    "requests": 5, "last_error": None}})
    assert "heartbeat      step 4, phase running (1.5s ago)" in text
    assert "memory         RSS 1.5 MiB, GPU 2 GiB" in text
    assert "service        port 8000, HTTP 200 in 3.2 ms, 5 requests" in text


# -- following: Ctrl-C stops following, never the run ---------------------------------------


def _interrupt(project: Project, args: list[str], ready: str) -> tuple[int, str, str]:
    """Run ops in its own process group, wait for ``ready`` in its stdout, then Ctrl-C the
    group as a terminal would."""
    env = {**os.environ, "OPS_PROJECT_CONFIG": str(project.config_path),
           "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ops", *args], cwd=project.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    seen = b""
    assert proc.stdout is not None
    deadline = time.time() + 60
    while ready.encode() not in seen and time.time() < deadline:
        seen += os.read(proc.stdout.fileno(), 4096) or b""
    assert ready.encode() in seen, seen[-500:]
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, (seen + out).decode(), err.decode()


def test_ctrl_c_on_tail_follow_stops_following(project: Project,
                                               wrapper: subprocess.Popen[bytes]) -> None:
    run_dir = write_live_run(project.runs, "live-tail", wrapper.pid)
    (run_dir / contract.STDOUT_LOG).write_text("epoch 1 of 90\n")
    code, _, err = _interrupt(project, ["run", "tail", "live-tail", "-f"], "epoch 1 of 90")
    assert code == 130
    assert "stopped following; the run goes on: `ops run tail live-tail -f`" in err
    assert "aborted" not in err and "Traceback" not in err


def test_ctrl_c_on_submit_follow_leaves_the_run_going(project: Project) -> None:
    code, out, err = _interrupt(project, ["run", "submit", "slow", "--run-id", "go-on", "-f"],
                                "iter 3:")
    assert code == 130 and "submitted go-on" in out
    assert "stopped following; the run goes on: `ops run tail go-on -f`" in err
    assert "aborted" not in err
    listed = project.ops("run", "status", "--json").json()["runs"]
    assert [r["status"] for r in listed if r["run_id"] == "go-on"] == ["running"]
    assert project.ops("run", "cancel", "go-on").exit_code == 0


@pytest.mark.parametrize(("args", "code", "text"), [
    pytest.param(["run", "submit", "toy", "--dry-run"], 0, "toy", id="positional"),
    pytest.param(["run", "submit", "-p", "toy", "--dry-run"], 0, "toy", id="option"),
    pytest.param(["run", "submit", "toy", "-p", "slow", "--dry-run"], 2, "two presets",
                 id="both-differ"),
    pytest.param(["run", "submit"], 2, "give exactly one of", id="none"),
])
def test_submit_takes_the_preset_positionally(project: Project, args: list[str], code: int,
                                              text: str) -> None:
    done = project.ops(*args)
    assert done.exit_code == code, done.stderr
    assert text in done.stdout + done.stderr


def test_the_detail_is_safe_and_shows_folds() -> None:
    text = render_run.detail_text({
        "run_id": "r", "status": "completed", "reason": None,
        "stdout_tail": ["ok", "\x1b[2J\x1b]0;evil\x07title"], "notes": ["a\nb"],
        "metrics_final": {"fold0/dsc_mean": 0.5, "fold0/dsc_ci_low": 0.4,
                          "fold0/dsc_ci_high": 0.6, "fold1/dsc_mean": 0.7, "dsc_mean": 0.6,
                          "loss": None},
        "failure": {"class": "X", "message": "m", "traceback_tail": "\x1b[31mred\nlast"},
        "wandb": {"run_id": "abc", "url": "https://wandb.example/abc"},
        "heartbeat": {"age_s": 3.5, "step": 12, "phase": "train"}, "gpus_now": []})
    assert "\x1b" not in text and "\\x1b[2J" in text and "note: a\\nb" in text
    assert "  fold 0   0.5 [0.4, 0.6]" in text and "  fold 1   0.7" in text
    assert "overall  0.6" in text and "non-finite" in text
    assert "wandb          abc https://wandb.example/abc" in text
    assert "heartbeat      last step 12, phase ended (3.5s ago)" in text
    assert "  | \\x1b[31mred" in text and "  | last" in text


@pytest.mark.parametrize("schema", ["run_list", "run_status"])
def test_the_table_fields_and_service_statuses_are_in_the_schemas(schema: str) -> None:
    record = {"run_id": "svc-1", "status": "serving", "notes": [], "started_at": None,
              "duration_s": 12.5, "sweep_index": 0, "metrics_best": {"loss": 0.1},
              "headline": {"metric": "loss", "goal": "min", "value": None}}
    jsonschema.validate({"schema": f"ops.{schema}/1", "runs": [record]}, load_schema(schema))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"schema": f"ops.{schema}/1", "runs": [
            {**record, "headline": {"metric": "loss", "goal": "up", "value": 1}}]},
            load_schema(schema))


def test_watch_shows_a_host_that_did_not_answer_and_asks_again(
        capsys: pytest.CaptureFixture[str]) -> None:
    from ops.cli.ps_cmd import watch_runs
    from ops.hosts.base import ConnectionLostError

    answers: list[Any] = [ConnectionLostError("connection reset"),
                          resolve.Listing([{"run_id": "r1", "status": "running"}], "/o on p", 1)]
    sleeps: list[float] = []

    def produce() -> resolve.Listing:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if not answers:
            raise KeyboardInterrupt  # Ctrl-C after the second frame

    watch_runs(produce, 0.5, sleep)  # piped: one frame after another, Ctrl-C ends quietly
    out = capsys.readouterr().out
    assert "the host did not answer: connection reset (asking again)" in out
    assert out.index("asking again") < out.index("r1") and sleeps == [0.5, 0.5]
