"""On host `local`, the runner's question verbs are answered in the ops process (no Python
started per question): the same document and exit code as `python -m runner`, under the same
scrubbed environment, and a crash in them reads as a runner process that crashed (issue 14)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ops.errors import NotFoundError, UsageError
from ops.hosts.base import HostCommandError, call_runner
from ops.hosts.local import LocalHost
from runner import cli

from .conftest import Project, base_config


def _both(host: LocalHost, args: list[str]) -> tuple[Any, Any]:
    """(exit code, parsed stdout, stderr) from this process and from a runner process."""
    here = host.runner_in_process(args)
    assert here is not None
    there = host.exec([*host.runner_argv(), *args], check=False)
    parsed = [(r.exit_code, _timeless(json.loads(r.stdout)), r.stderr) for r in (here, there)]
    return parsed[0], parsed[1]


def _timeless(doc: Any) -> Any:
    """``doc`` without ages (a heartbeat's age_s grows between the two askings)."""
    if isinstance(doc, dict):
        return {k: _timeless(v) for k, v in doc.items() if k != "age_s"}
    if isinstance(doc, list):
        return [_timeless(v) for v in doc]
    return doc


@pytest.fixture(scope="module")
def ended_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run (launched in tmux, ended) to ask about."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (CI installs it)")
    root = tmp_path_factory.mktemp("inproc") / "repo"
    (root / "configs" / "ops").mkdir(parents=True)
    runs = root / "runs" / "test-proj"
    socket = f"ops-test-inproc-{os.getpid()}"
    project = Project(root, runs, socket, root / "configs" / "ops" / "project.json")
    project.write_config(base_config(runs, socket))
    home = root.parent / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    try:
        done = project.ops("run", "submit", "printer", "--run-id", "asked-1", "--follow",
                           env=env)
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)
    assert done.exit_code == 0, done.stderr
    return project.run_dir("asked-1")


@pytest.mark.tmux
@pytest.mark.parametrize("question", [
    ["status", "{root}"], ["status", "{root}", "asked-1"], ["status", "{root}", "nope-1"],
    ["status", "{root}", "bad/id"], ["show", "{run}", "summary.json"],
    ["show", "{run}", "heartbeat.json"], ["show", "{run}", "no-such.json"], ["ls", "{run}"],
    ["ls", "{run}", "--with-checkpoints"], ["tail", "{run}", "--max-bytes", "64"],
    ["tail", "{run}", "--offset", "10", "--max-bytes", "20"], ["tail", "{run}", "--lines", "2"],
    ["tail", "{root}/absent-1"], ["version"], ["status"], ["report-data", "{root}"],
    ["report-data", "{root}", "asked-1", "--series", "5", "--volumes", "--docs"],
    ["report-data", "{root}", "asked-1", "--detail"], ["report-data", "{root}", "../x"],
], ids=" ".join)
def test_a_question_gets_the_answer_a_runner_process_gives(ended_run: Path,
                                                           question: list[str]) -> None:
    args = [a.format(root=ended_run.parent, run=ended_run) for a in question]
    here, there = _both(LocalHost(), args)
    assert here[:2] == there[:2]
    assert here[2] == ""


@pytest.mark.parametrize("verb", ["submit", "submit-sweep", "cancel", "exec", "pack",
                                  "preflight", "housekeeping", "sweep"])
def test_every_other_verb_stays_a_process(verb: str) -> None:
    assert LocalHost().runner_in_process([verb, "/nowhere"]) is None


def test_errors_map_as_they_did(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"no summary\.json in"):
        call_runner(LocalHost(), ["show", str(tmp_path), "summary.json"])
    with pytest.raises(UsageError, match="invalid choice"):
        call_runner(LocalHost(), ["show", str(tmp_path), "bogus.json"])


def test_the_answer_is_computed_under_the_scrubbed_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPS_TEST_SECRET", "s3cret")
    monkeypatch.setenv("TMUX_TMPDIR", "/somewhere/else")  # a runner process never sees it
    monkeypatch.setitem(cli.HANDLERS, "version", lambda _a: {"env": dict(os.environ)})
    seen = call_runner(LocalHost(), ["version"])["env"]
    assert "OPS_TEST_SECRET" not in seen and "TMUX_TMPDIR" not in seen
    assert seen["HOME"] == os.environ["HOME"]
    assert os.environ["OPS_TEST_SECRET"] == "s3cret"  # put back afterwards


def test_a_crash_reads_as_a_runner_process_that_crashed(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    def boom(_args: Any) -> dict[str, Any]:
        raise RuntimeError("reader blew up")

    monkeypatch.setitem(cli.HANDLERS, "status", boom)
    before = dict(os.environ)
    with pytest.raises(HostCommandError) as caught:
        call_runner(LocalHost(), ["status", str(tmp_path)])
    assert caught.value.result.exit_code == 1
    assert "runner status on local exited with 1" in caught.value.message
    assert any("RuntimeError: reader blew up" in line for line in caught.value.details)
    assert dict(os.environ) == before


def test_a_question_with_stdin_or_a_timeout_goes_to_a_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[list[str]] = []
    host = LocalHost()
    real = host.exec

    def exec_(argv: Any, **kwargs: Any) -> Any:
        asked.append(list(argv))
        return real(argv, **kwargs)

    monkeypatch.setattr(host, "exec", exec_)
    call_runner(host, ["version"])
    assert asked == []
    call_runner(host, ["version"], timeout=30)
    assert asked and asked[0][-1] == "version"


@pytest.mark.parametrize("args", [["status", "/nowhere", "-h"], ["show", "-h"],
                                  ["tail", "--help"]], ids=" ".join)
def test_help_is_printed_into_the_answer_as_a_process_prints_it(args: list[str]) -> None:
    """argparse prints --help and exits: here that text is the answer, never this process's
    stdout or exit, and call_runner refuses it as before (not JSON)."""
    host = LocalHost()
    here = host.runner_in_process(args)
    there = host.exec([*host.runner_argv(), *args], check=False)
    assert here is not None
    assert (here.exit_code, here.stdout) == (there.exit_code, there.stdout)
    assert "usage: python -m runner" in here.stdout
    with pytest.raises(HostCommandError):
        call_runner(host, args)
