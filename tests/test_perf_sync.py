"""A code sync spends its time in git processes and round trips: count them (issue 14). An
unchanged re-sync is two local git processes and one exec; a commit on top of one the host
holds is five, the dirty check running beside the bundle's making."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ops.errors import UsageError
from ops.hosts.base import ExecResult
from ops.hosts.local import LocalHost
from ops.services import sync, synced

from .test_sync import commit_all, git, make_repo


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """(local git commands, host execs) of the syncs in a test."""
    local: list[str] = []
    execs: list[str] = []
    real_local = sync.run_local

    def run_local(argv: Sequence[str], **kwargs: Any) -> ExecResult:
        local.append(" ".join(argv[1:3]))
        return real_local(argv, **kwargs)

    real_exec = LocalHost.exec

    def exec_counted(self: LocalHost, argv: Sequence[str], **kwargs: Any) -> ExecResult:
        execs.append(argv[0])
        return real_exec(self, argv, **kwargs)

    monkeypatch.setattr(sync, "run_local", run_local)
    monkeypatch.setattr(LocalHost, "exec", exec_counted)
    return local, execs


def test_unchanged_resync_is_two_git_processes_and_one_exec(
        tmp_path: Path, counted: tuple[list[str], list[str]]) -> None:
    repo = make_repo(tmp_path / "repo", files=20)
    home = str(tmp_path / "home")
    first = sync.sync_ref(LocalHost(), repo, "HEAD", ops_home=home)
    local, execs = counted
    local.clear()
    execs.clear()
    again = sync.sync_ref(LocalHost(), repo, "HEAD", ops_home=home)
    assert (again.commit, again.method, again.branch) == (first.commit, "present", "main")
    assert local == ["rev-parse HEAD^{commit}", "--no-optional-locks status"]
    assert len(execs) == 1


def test_one_new_commit_is_sent_with_its_ancestor_found_in_one_log(
        tmp_path: Path, counted: tuple[list[str], list[str]]) -> None:
    """A host with no record here: the first-parent log finds what this clone synced."""
    repo = make_repo(tmp_path / "repo", files=20)
    home = str(tmp_path / "home")
    sync.sync_ref(LocalHost(), repo, "HEAD", ops_home=home)
    synced.record_path(repo).unlink()  # no word on the host: the log of refs/ops/ decides
    (repo / "src" / "pkg1" / "mod1.py").write_text("VALUE = 2\n")
    commit = commit_all(repo, "one line")
    local, execs = counted
    local.clear()
    execs.clear()
    done = sync.sync_ref(LocalHost(), repo, "main", ops_home=home)
    assert (done.commit, done.method, done.commits_sent, done.branch) == (commit, "bundle", 1,
                                                                          "main")
    assert "for-each-ref --format=%(objectname)" not in local
    assert len(local) <= 8 and len(execs) == 1
    detached = git(repo, "rev-parse", "HEAD~1")
    assert sync.sync_ref(LocalHost(), repo, detached, ops_home=home).branch is None


def test_a_child_of_a_commit_the_host_holds_is_five_git_processes_and_one_exec(
        tmp_path: Path, counted: tuple[list[str], list[str]]) -> None:
    """The edit-commit-sync loop: the parent's tree is on the host (recorded here), so no log
    search and no commit count; the bundle names HEAD, so its ref is written during the
    exec; the attributes' verdict of the parent carries over (one grep, the first time)."""
    repo = make_repo(tmp_path / "repo", files=20)
    home = str(tmp_path / "home")
    sync.sync_ref(LocalHost(), repo, "HEAD", ops_home=home)
    local, execs = counted
    for round_no in range(3):
        (repo / "src" / "pkg1" / "mod1.py").write_text(f"VALUE = {round_no}\n")
        commit = commit_all(repo, f"change {round_no}")
        local.clear()
        execs.clear()
        done = sync.sync_ref(LocalHost(), repo, "HEAD", ops_home=home)
        assert (done.commit, done.method, done.commits_sent) == (commit, "bundle", 1)
        assert done.reused_tree == git(repo, "rev-parse", "HEAD~1")
        expected = ["rev-parse HEAD^{commit}", "--no-optional-locks status", "bundle create",
                    "diff --quiet", *(["grep -q"] if round_no == 0 else []),
                    f"update-ref refs/ops/commits/{commit}"]
        assert sorted(local) == sorted(expected), local
        assert len(execs) == 1
        assert git(repo, "rev-parse", f"refs/ops/commits/{commit}") == commit
        tree = Path(done.code_dir)
        assert (tree / "src" / "pkg1" / "mod1.py").read_text() == f"VALUE = {round_no}\n"


def test_a_dirty_tree_never_sends_the_bundle_made_while_status_ran(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", files=20)
    home = str(tmp_path / "home")
    sync.sync_ref(LocalHost(), repo, "HEAD", ops_home=home)
    (repo / "src" / "pkg1" / "mod1.py").write_text("VALUE = 1\n")
    head = commit_all(repo, "committed")
    (repo / "src" / "pkg1" / "mod1.py").write_text("VALUE = 'not committed'\n")
    with pytest.raises(UsageError, match="uncommitted"):
        sync.sync_ref(LocalHost(), repo, "HEAD", ops_home=home)
    assert not (Path(home) / "code" / head).exists()
    with pytest.raises(subprocess.CalledProcessError):
        git(repo, "rev-parse", "--verify", "-q", f"refs/ops/commits/{head}")
    done = sync.sync_ref(LocalHost(), repo, "HEAD", ops_home=home, allow_dirty=True)
    assert done.dirty and done.base_commit == head and done.commit != head
    assert (Path(done.code_dir) / "src/pkg1/mod1.py").read_text() == "VALUE = 'not committed'\n"


def test_a_snapshot_of_a_dirty_tree_works_with_ops_state_gitignored(tmp_path: Path) -> None:
    """`.ops/` gitignored (as a project has it): git's add still exits 1 for the exclusion of
    an ignored path, after staging everything; the snapshot must not fail on that."""
    repo = make_repo(tmp_path / "repo", files=5)
    (repo / ".gitignore").write_text("*.log\nbuild/\n/.ops/\n")
    commit_all(repo, "ignore ops state")
    (repo / ".ops").mkdir()
    (repo / ".ops" / "runners.json").write_text("{}\n")
    (repo / "src" / "pkg1" / "mod1.py").write_text("EDITED = True\n")
    done = sync.sync_ref(LocalHost(), repo, "HEAD", ops_home=str(tmp_path / "home"),
                         allow_dirty=True)
    assert done.dirty
    assert (Path(done.code_dir) / "src/pkg1/mod1.py").read_text() == "EDITED = True\n"
    assert not (Path(done.code_dir) / ".ops").exists()
