"""`ops run rm` and `ops run gc`: what they remove, and every refusal (exit code and message).

One yard per module, built with real runs on a real tmux server: a completed run, a live one,
a symbolic link out of the outputs root, a folder that is not a run dir and a plain file. The
refusal table runs against it and checks that nothing was touched.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest

from ops.errors import UsageError
from ops.services.housekeeping import parse_age, size_text
from runner import housekeeping as runner_housekeeping
from runner.housekeeping import RunEntry, remove_all, tidy_sweeps
from runner.schemas import load_schema
from runner.verbs import VerbError

from .conftest import Result, base_config

pytestmark = pytest.mark.tmux


@dataclass
class Yard:
    root: Path
    runs: Path
    outside: Path
    config: Path
    env: dict[str, str]

    def ops(self, *args: str) -> Result:
        proc = subprocess.run([sys.executable, "-m", "ops", *args], cwd=self.root,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              env={**os.environ, **self.env}, timeout=90, check=False)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def entries(self) -> set[str]:
        return {p.name for p in self.runs.iterdir()} if self.runs.exists() else set()


def _submit(yard: Yard, preset: str, run_id: str, *extra: str) -> None:
    result = yard.ops("run", "submit", "-p", preset, "--run-id", run_id, "--skip-preflight",
                      *extra)
    assert result.exit_code == 0, result.stderr


@pytest.fixture(scope="module")
def yard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Yard]:
    base = tmp_path_factory.mktemp("yard")
    root, outside = base / "repo", base / "outside"
    runs = root / "runs" / "test-proj"  # host local's outputs root: <repo>/runs/<project>
    (root / "configs" / "ops").mkdir(parents=True)
    socket = f"ops-test-{secrets.token_hex(4)}"
    config = root / "configs" / "ops" / "project.json"
    config.write_text(json.dumps(base_config(runs, socket)))
    home = base / "home"
    home.mkdir()
    yard = Yard(root, runs, outside, config,
                {"OPS_PROJECT_CONFIG": str(config), "HOME": str(home)})
    _submit(yard, "toy", "done-1", "--follow")
    _submit(yard, "slow", "live-1")
    (outside / "victim").mkdir(parents=True)
    (outside / "victim" / "spec.json").write_text("{}")
    (runs / "link-1").symlink_to(outside / "victim")
    (runs / "plain-1").mkdir()
    (runs / "file-1").write_text("not a run\n")
    yield yard
    yard.ops("run", "cancel", "live-1")
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)


@pytest.mark.parametrize(("args", "code", "message"), [
    pytest.param(["rm", "--yes", "../done-1"], 2, "is not a run id", id="dotdot"),
    pytest.param(["rm", "--yes", ".."], 2, "is not a run id", id="bare-dotdot"),
    pytest.param(["rm", "--yes", "live-1"], 4, "live-1 is running", id="live"),
    pytest.param(["rm", "--yes", "done-1", "live-1"], 4, "nothing was removed",
                 id="one-live-refuses-all"),
    pytest.param(["rm", "--yes", "liv"], 4, "live-1 is running", id="prefix-of-a-live-run"),
    pytest.param(["rm", "--yes", "-1"], 4, "live-1 is running", id="newest-is-live"),
    pytest.param(["rm", "--yes", "link-1"], 2, "symbolic link", id="symlink-out-of-root"),
    pytest.param(["rm", "--yes", "plain-1"], 2, "not a run dir", id="folder-not-a-run"),
    pytest.param(["rm", "--yes", "file-1"], 2, "not a directory", id="plain-file"),
    pytest.param(["rm", "--yes", "nope-1"], 3, "no run 'nope-1'", id="missing"),
    pytest.param(["rm", "done-1"], 2, "without a confirmation", id="asks-without-terminal"),
    pytest.param(["gc", "--older-than", "soon", "--yes"], 2, "expected a number and a unit",
                 id="bad-age"),
    pytest.param(["gc", "--older-than", "1d", "--keep-best", "-1"], 2, "-1",
                 id="negative-keep"),
    pytest.param(["gc", "--older-than", "0s"], 2, "without a confirmation",
                 id="gc-asks-without-terminal"),
])
def test_refusals_touch_nothing(yard: Yard, args: list[str], code: int, message: str) -> None:
    before = yard.entries()
    result = yard.ops("run", *args)
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert message in result.stderr
    assert result.stderr.startswith("error: ")
    assert yard.entries() == before
    assert (yard.outside / "victim" / "spec.json").exists()


def test_dry_run_lists_only_ended_run_dirs(yard: Yard) -> None:
    result = yard.ops("run", "gc", "--older-than", "0s", "--dry-run", "--scope", "host",
                      "--json")
    assert result.exit_code == 0, result.stderr
    jsonschema.validate(result.json(), load_schema("run_housekeeping"))
    (place,) = result.json()["places"]
    assert place["dry_run"] is True
    assert [r["run_id"] for r in place["runs"]] == ["done-1"]
    assert place["runs"][0]["status"] == "completed" and place["runs"][0]["bytes"] > 0
    text = yard.ops("run", "gc", "--older-than", "0s", "--dry-run", "--scope", "host")
    assert "would remove 1 run(s)" in text.stdout and "done-1  completed" in text.stdout
    assert "done-1" in yard.entries()


def test_gc_older_than_spares_young_runs(yard: Yard) -> None:
    result = yard.ops("run", "gc", "--older-than", "30d", "--yes", "--scope", "host")
    assert result.exit_code == 0, result.stderr
    assert "would remove 0 run(s)" in result.stdout and "done-1" in yard.entries()


@pytest.mark.parametrize(("text", "seconds"), [
    pytest.param("30d", 30 * 86400, id="days"), pytest.param("12h", 43200, id="hours"),
    pytest.param("90m", 5400, id="minutes"), pytest.param("2w", 14 * 86400, id="weeks"),
    pytest.param("1.5h", 5400, id="fraction"),
])
def test_parse_age(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "d", "-1d", "3 days", "1y"])
def test_parse_age_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="expected a number and a unit"):
        parse_age(text)


def test_size_text() -> None:
    assert [size_text(n) for n in (0, 1023, 1024, 5 << 20, 3 << 30)] == \
        ["0 B", "1023 B", "1.0 KiB", "5.0 MiB", "3.0 GiB"]


def test_keep_best_then_remove_and_fetched_copies(yard: Yard, tmp_path: Path) -> None:
    _submit(yard, "toy", "worse-1", "--set", "max_iters=2", "--follow")
    fetched = yard.ops("run", "fetch", "worse-1")
    assert fetched.exit_code == 0, fetched.stderr
    copies = yard.root / "artifacts" / "runs"
    assert (copies / "worse-1" / "spec.json").exists()
    (yard.runs / "done-1" / "escape").symlink_to(yard.outside / "victim")
    doc = yard.ops("run", "gc", "--older-than", "0s", "--keep-best", "1", "--dry-run",
                   "--json").json()
    jsonschema.validate(doc, load_schema("run_housekeeping"))
    plan = doc["places"]
    host, local = plan
    assert [r["run_id"] for r in host["runs"]] == ["worse-1"]
    assert [(k["run_id"], k["reason"]) for k in host["kept"]] == \
        [("done-1", "best 1 of toy by loss (min)")]
    assert [r["run_id"] for r in local["runs"]] == [] and local["kept"][0]["run_id"] == "worse-1"
    gone = yard.ops("run", "gc", "--older-than", "0s", "--keep-best", "1", "--yes",
                    "--scope", "host")
    assert gone.exit_code == 0, gone.stderr
    assert "removed 1 run(s)" in gone.stdout
    assert "worse-1" not in yard.entries() and "done-1" in yard.entries()
    removed = yard.ops("run", "rm", "--yes", "done")  # a unique prefix
    assert removed.exit_code == 0 and "removed 1 run(s)" in removed.stdout
    assert "done-1" not in yard.entries()
    assert (yard.outside / "victim" / "spec.json").exists()  # a link inside was not followed
    assert {"live-1", "link-1", "plain-1", "file-1"} <= yard.entries()
    copy = yard.ops("run", "rm", "--fetched", "--yes", "worse-1")
    assert copy.exit_code == 0, copy.stderr
    assert not (copies / "worse-1").exists()


def test_sweep_records_go_with_their_last_member(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside.log"
    sweeps = root / ".sweeps"
    sweeps.mkdir(parents=True)
    (root / "here-1").mkdir()
    outside.write_text("not ops's\n")
    records = {"gone": ["gone-1", "gone-2"], "half": ["gone-3", "here-1"], "odd": "x"}
    for sweep_id, members in records.items():
        (sweeps / f"{sweep_id}.json").write_text(json.dumps({"members": members}))
        (sweeps / f"{sweep_id}.driver.json").write_text("{}")
    (sweeps / "gone.driver.log").symlink_to(outside)
    assert tidy_sweeps(root) == ["gone"]
    assert sorted(p.name for p in sweeps.iterdir()) == [
        "gone.driver.log", "half.driver.json", "half.json", "odd.driver.json", "odd.json"]
    assert outside.read_text() == "not ops's\n"  # a link is never followed nor removed


def test_a_removal_that_fails_says_what_was_done(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """As root (the test machine) a permission error cannot be made on demand: rmtree is
    made to fail for the second run, as a read-only filesystem would."""
    entries = []
    for name in ("a-1", "b-1", "c-1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "spec.json").write_text("{}")
        entries.append(RunEntry(name, tmp_path / name, "completed", None))
    real = runner_housekeeping.shutil.rmtree

    def flaky(path: Path) -> None:
        if Path(path).name == "b-1":
            raise PermissionError(13, "Read-only file system")
        real(path)

    monkeypatch.setattr(runner_housekeeping.shutil, "rmtree", flaky)
    with pytest.raises(VerbError, match="b-1 could not be removed: Read-only file system; "
                                        "removed before it: a-1") as info:
        remove_all(tmp_path, entries)
    assert info.value.kind == "failed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b-1", "c-1"]
