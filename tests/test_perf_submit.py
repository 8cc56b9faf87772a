"""A warm submit is one round trip (issue 14): `runner submit` checks the code tree and
preflight itself, and only a host that lacks the code costs a sync. Round trips are counted in
the loopback sshd's log (one "Starting session: command" line per exec) and in the resident
runner's (one line per request it answered), so the counts are exact whatever the load."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ops.services import synced
from ops.services.target import forget_runner
from runner import verbs

from .conftest import Project, git, pod_config
from .sshd_fixture import SshAlias, Sshd, served_requests

pytestmark = [pytest.mark.ssh, pytest.mark.tmux]


@pytest.fixture
def pod(project: Project, ssh_alias: SshAlias, tmp_path: Path) -> Project:
    doc = pod_config(project, ssh_alias.name, tmp_path)
    doc["presets"]["version"] = {"kind": "command", "limits": {"grace_sec": 1},
                                 "command": ["sh", "-c", "cat version.txt"]}
    doc["presets"]["needs_data"] = {"kind": "command", "limits": {"grace_sec": 1},
                                    "command": ["true"],
                                    "dataset": {"name": "d", "dir": str(tmp_path / "no-data")}}
    project.write_config(doc)
    project.runs = tmp_path / "pod-runs"
    (project.root / ".gitignore").write_text("/.ops/\n/runs/\n")
    (project.root / "version.txt").write_text("A\n")
    git(project.root, "init", "-q", "-b", "main")
    git(project.root, "add", "-A")
    git(project.root, "commit", "-q", "-m", "A")
    assert project.ops("run", "status").exit_code == 0  # the runner checked and remembered
    return project


class Execs:
    """Round trips since the last call: execs the sshd started (SFTP sessions are not
    counted) and requests the pod's resident runner answered (runner.serve)."""

    def __init__(self, sshd: Sshd, ops_home: Path):
        self.sshd, self.ops_home = sshd, ops_home
        self.seen = self._count()

    def _count(self) -> int:
        return self.sshd.log().count("Starting session: command") + \
            served_requests(self.ops_home)

    def since(self) -> int:
        now = self._count()
        done, self.seen = now - self.seen, now
        return done


def submit(pod: Project, run_id: str, *args: str) -> Any:
    result = pod.ops("run", "submit", "-p", "version", "--run-id", run_id, "--json", *args)
    assert result.exit_code == 0, result.stderr
    return result.json()


def finished(pod: Project, run_id: str) -> tuple[str, str]:
    """(the run's printed version, the commit its run_metadata records)."""
    pod.wait_for((pod.runs / run_id / "summary.json").exists, timeout=60)
    assert pod.summary(run_id)["status"] == "completed"
    meta = json.loads((pod.runs / run_id / "run_metadata.json").read_text())
    return (pod.runs / run_id / "stdout.log").read_text().strip(), meta["git"]["commit"]


def test_a_warm_submit_is_one_round_trip_and_a_new_commit_two(pod: Project,
                                                                sshd: Sshd) -> None:
    execs = Execs(sshd, pod.runs.parent / "pod-home")
    head = git(pod.root, "rev-parse", "HEAD")
    submit(pod, "cold")
    assert execs.since() == 3  # probe, apply (the first tree), runner submit
    submit(pod, "warm")
    assert execs.since() == 1  # runner submit, which found the tree itself
    assert finished(pod, "cold") == finished(pod, "warm") == ("A", head)
    spec = json.loads((pod.runs / "warm" / "spec.json").read_text())
    assert spec["code"]["commit"] == head and spec["code"]["dir"].endswith(f"/code/{head}")
    (pod.root / "version.txt").write_text("B\n")
    git(pod.root, "commit", "-q", "-am", "B")
    submit(pod, "changed")
    assert execs.since() == 2  # apply (a bundle of one commit on the synced tree), submit
    assert finished(pod, "changed") == ("B", git(pod.root, "rev-parse", "HEAD"))


def test_a_host_that_lost_the_tree_gets_it_synced_and_the_run_launches(
        pod: Project, sshd: Sshd, tmp_path: Path) -> None:
    head = git(pod.root, "rev-parse", "HEAD")
    submit(pod, "first")
    assert finished(pod, "first") == ("A", head)
    shutil.rmtree(tmp_path / "pod-home" / "code" / head)  # the record here is now wrong
    execs = Execs(sshd, pod.runs.parent / "pod-home")
    submit(pod, "again")
    assert execs.since() == 3  # refused (no code, nothing created), the sync, the submit
    assert finished(pod, "again") == ("A", head)
    shutil.rmtree(tmp_path / "pod-home" / "code")  # a rebuilt pod: no trees, no mirror
    shutil.rmtree(tmp_path / "pod-home" / "mirror.git")
    submit(pod, "rebuilt")
    assert finished(pod, "rebuilt") == ("A", head)


def test_a_failed_preflight_refuses_in_the_launching_round_trip(pod: Project,
                                                                 sshd: Sshd) -> None:
    submit(pod, "synced")  # the code is on the host now
    execs = Execs(sshd, pod.runs.parent / "pod-home")
    refused = pod.ops("run", "submit", "-p", "needs_data", "--run-id", "nodata")
    assert refused.exit_code == 6, refused.stderr
    assert "dataset" in refused.stderr and "--skip-preflight" in refused.stderr
    assert execs.since() == 1
    assert not (pod.runs / "nodata").exists()
    forced = pod.ops("run", "submit", "-p", "needs_data", "--run-id", "nodata",
                     "--skip-preflight")
    assert forced.exit_code == 0, forced.stderr
    assert execs.since() == 1 and (pod.runs / "nodata").is_dir()


def test_a_dirty_tree_is_refused_before_any_round_trip(pod: Project, sshd: Sshd) -> None:
    (pod.root / "version.txt").write_text("edited\n")
    execs = Execs(sshd, pod.runs.parent / "pod-home")
    refused = pod.ops("run", "submit", "-p", "version", "--run-id", "dirty")
    assert refused.exit_code == 2 and "allow-dirty" in refused.stderr
    assert execs.since() == 0 and not (pod.runs / "dirty").exists()
    submit(pod, "dirty", "--allow-dirty")
    assert finished(pod, "dirty")[0] == "edited"
    meta = json.loads((pod.runs / "dirty" / "run_metadata.json").read_text())
    assert meta["git"]["dirty"] is True
    assert meta["git"]["base_commit"] == git(pod.root, "rev-parse", "HEAD")
    submit(pod, "dirty-again", "--allow-dirty")  # the same snapshot: already there
    assert execs.since() == 3 + 1


def test_a_warm_sweep_is_one_round_trip(pod: Project, sshd: Sshd) -> None:
    submit(pod, "synced")
    execs = Execs(sshd, pod.runs.parent / "pod-home")
    result = pod.ops("run", "submit", "-p", "pair", "--json", "--skip-preflight")
    assert result.exit_code == 0, result.stderr
    assert execs.since() == 1 and len(result.json()["run_ids"]) == 2



# what a command records of its own start-up: the dataclasses it creates and what it imported
_START_UP_PROBE = """
import dataclasses, json, sys
created = []
make = dataclasses._process_class
def spy(cls, *args, **kwargs):
    created.append(f"{cls.__module__}.{cls.__qualname__}")
    return make(cls, *args, **kwargs)
dataclasses._process_class = spy
from ops.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
print(json.dumps({"created": created, "modules": sorted(sys.modules)}))
"""


def start_up(pod: Project, *args: str) -> tuple[Any, dict[str, Any]]:
    """(the command's JSON answer, what its start-up created and imported)."""
    env = {**os.environ, "OPS_PROJECT_CONFIG": str(pod.config_path)}
    proc = subprocess.run([sys.executable, "-c", _START_UP_PROBE, *args], cwd=pod.root,
                          capture_output=True, text=True, env=env, timeout=90, check=False)
    assert proc.returncode == 0, proc.stderr
    answer, _, probe = proc.stdout.rstrip().rpartition("\n")
    return json.loads(answer), json.loads(probe)


def test_a_warm_submit_and_status_create_no_dataclass(pod: Project) -> None:
    """On Python 3.11 a dataclass costs about 1 ms of start-up to create (its methods are
    compiled from source), a NamedTuple a tenth of that: a warm submit created 29 of them,
    status 17 (issue 14). Now the records they build on the way to the host are NamedTuples
    or plain classes, and the standard modules only a few commands need are imported where
    those commands use them."""
    submit(pod, "first")  # the config and the preset's spec template are cached
    answer, submitted = start_up(pod, "run", "submit", "-p", "version", "--json")
    listing, status = start_up(pod, "run", "status", "--json")
    assert answer["run_id"] in {run["run_id"] for run in listing["runs"]}
    assert (submitted["created"], status["created"]) == ([], [])
    needless = {"pickle", "tempfile", "shutil", "secrets", "hashlib", "base64", "pydantic"}
    assert (needless & set(submitted["modules"]), needless & set(status["modules"])) == \
        (set(), set())


# -- the runner's side, in process ---------------------------------------------------------


def _spec(run_id: str, code_dir: Path) -> dict[str, Any]:
    return {"run_id": run_id, "code": {"dir": str(code_dir), "commit": "0" * 40}}


@pytest.mark.parametrize("kind", ["absent", "file", "symlink to a tree"])
def test_runner_submit_refuses_without_the_code_tree_and_creates_nothing(
        tmp_path: Path, kind: str) -> None:
    tree = tmp_path / "home" / "code" / ("0" * 40)
    real = tmp_path / "elsewhere"
    real.mkdir()
    tree.parent.mkdir(parents=True)
    if kind == "file":
        tree.write_text("not a tree")
    elif kind == "symlink to a tree":
        tree.symlink_to(real)
    root = tmp_path / "runs"
    root.mkdir()
    answer = verbs.submit(root, {"spec": _spec("r1", tree), "need_code": True})
    assert answer["refused"] == "code_missing" and answer["code_dir"] == str(tree)
    assert list(root.iterdir()) == []
    sweep = verbs.submit_sweep(root, {"sweep_id": "s1", "need_code": True,
                                      "specs": [_spec("r2", tree), _spec("r3", tree)]})
    assert sweep["refused"] == "code_missing" and list(root.iterdir()) == []


def test_runner_submit_runs_preflight_first_and_refuses_on_a_fail(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    args = ["preflight", "--json", "--outputs-root", str(root), "--dataset",
            str(tmp_path / "missing")]
    answer = verbs.submit(root, {"spec": _spec("r1", tmp_path), "need_code": True,
                                 "preflight": args})
    assert answer["refused"] == "preflight" and answer["preflight"]["status"] == "fail"
    assert any(c["name"] == "dataset" and c["status"] == "fail"
               for c in answer["preflight"]["checks"])
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("args", [["preflight", "--no-such-option"], ["status"], "preflight",
                                  [1, 2]], ids=["unknown option", "another verb", "a string",
                                                "not strings"])
def test_bad_preflight_arguments_are_a_usage_error(tmp_path: Path, args: Any) -> None:
    with pytest.raises(verbs.VerbError) as caught:
        verbs.submit(tmp_path, {"spec": _spec("r1", tmp_path), "preflight": args})
    assert caught.value.kind == "usage"
    assert list(tmp_path.iterdir()) == []


# -- the record of what each host holds ------------------------------------------------------


def test_the_synced_record_is_kept_in_the_git_dir_bounded_and_forgotten_per_host(
        tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    shas = [f"{i:040x}" for i in range(synced.KEEP_PER_HOST + 6)]
    record = synced.Record(repo)
    for sha in shas:
        record.remember("pod", "/home/u/.ops", sha)
    record.remember("other", "/ops", shas[0])
    record.save()
    assert synced.record_path(repo) == repo / ".git" / synced.RECORD_NAME
    assert synced.holds(repo, "pod", "/home/u/.ops", shas[-1])
    assert not synced.holds(repo, "pod", "/home/u/.ops", shas[0])  # the oldest fell off
    assert not synced.holds(repo, "pod", "/elsewhere", shas[-1])  # another ops home
    forget_runner(repo, "pod")  # `ops pod rm`: the name may come back as a new machine
    assert not synced.holds(repo, "pod", "/home/u/.ops", shas[-1])
    assert synced.holds(repo, "other", "/ops", shas[0])


def test_a_damaged_record_reads_as_empty_and_a_worktree_keeps_it_in_its_git_dir(
        tmp_path: Path) -> None:
    repo = tmp_path / "worktree"
    gitdir = tmp_path / "main" / ".git" / "worktrees" / "wt"
    gitdir.mkdir(parents=True)
    repo.mkdir()
    (repo / ".git").write_text(f"gitdir: {gitdir}\n")
    assert synced.record_path(repo) == gitdir / synced.RECORD_NAME
    synced.record_path(repo).write_text("{not json")
    assert not synced.holds(repo, "pod", "/h", "a" * 40)
    record = synced.Record(repo)
    record.remember("pod", "/h", "a" * 40)
    record.save()
    assert synced.holds(repo, "pod", "/h", "a" * 40)
    plain = tmp_path / "no-git"
    plain.mkdir()
    assert synced.record_path(plain) == plain / ".ops" / "synced.json"
