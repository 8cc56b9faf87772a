"""A code sync spends its time in git processes and round trips: count them (issue 14). An
unchanged re-sync is three local git processes and one exec; a one-commit sync adds only the
bundle's own."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ops.hosts.base import ExecResult
from ops.hosts.local import LocalHost
from ops.services import sync

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


def test_unchanged_resync_is_three_git_processes_and_one_exec(
        tmp_path: Path, counted: tuple[list[str], list[str]]) -> None:
    repo = make_repo(tmp_path / "repo", files=20)
    home = str(tmp_path / "home")
    first = sync.sync_ref(LocalHost(), repo, "HEAD", ops_home=home)
    local, execs = counted
    local.clear()
    execs.clear()
    again = sync.sync_ref(LocalHost(), repo, "HEAD", ops_home=home)
    assert (again.commit, again.method, again.branch) == (first.commit, "present", "main")
    assert local == ["rev-parse HEAD^{commit}", "--no-optional-locks status",
                     "log --no-show-signature"]
    assert len(execs) == 1


def test_one_new_commit_is_sent_with_its_ancestor_found_in_one_log(
        tmp_path: Path, counted: tuple[list[str], list[str]]) -> None:
    repo = make_repo(tmp_path / "repo", files=20)
    home = str(tmp_path / "home")
    sync.sync_ref(LocalHost(), repo, "HEAD", ops_home=home)
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
