"""`ops repo sync`: a commit lands on a host as an immutable tree equal to `git archive`.

The host is a fixture parameter (`case`): "local" is LocalHost, "ssh" an SSHHost on the
loopback sshd fixture, both with a temp ops home. Every host here is this machine, so the tests
read the host's files directly from the filesystem.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from ops.cli.repo_cmds import SCHEMA, repo_group
from ops.errors import ExitCode, NotFoundError, OpsError, UsageError
from ops.hosts.base import ExecResult
from ops.hosts.local import LocalHost, run_local
from ops.services import sync_host
from ops.services.sync import SyncResult, sync_ref
from ops.services.sync_host import SyncHost
from runner.schemas import load_schema

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
HOST_KINDS = ["local", pytest.param("ssh", marks=pytest.mark.ssh)]
Entries = dict[str, tuple[str, bytes]]


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True, env={**os.environ, **GIT_ENV})
    return proc.stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_repo(root: Path, files: int = 200) -> Path:
    """A repository with `files` Python files, an executable, a symlink and a .gitignore."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    for i in range(files):
        path = root / "src" / f"pkg{i % 10}" / f"mod{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"VALUE_{i}_{j} = {i * j}\n" for j in range(20)))
    (root / "run.sh").write_text("#!/bin/sh\necho run\n")
    (root / "run.sh").chmod(0o755)
    (root / "src-link").symlink_to("src")
    (root / ".gitignore").write_text("*.log\nbuild/\n")
    commit_all(root, "initial")
    return root


@dataclass
class SyncCase:
    host: SyncHost
    ops_home: str

    def sync(self, repo: Path, ref: str = "HEAD", *, allow_dirty: bool = False) -> SyncResult:
        return sync_ref(self.host, repo, ref, ops_home=self.ops_home, allow_dirty=allow_dirty)


class NoGitHost(LocalHost):
    """This machine with a PATH that holds a shell and tar but no git."""

    TOOLS = ("sh", "mkdir", "mktemp", "mv", "rm", "tar", "gzip", "find", "chmod")

    def __init__(self, bin_dir: Path):
        bin_dir.mkdir()
        for tool in self.TOOLS:
            (bin_dir / tool).symlink_to(str(shutil.which(tool)))
        self.env = {"PATH": str(bin_dir), "HOME": os.environ["HOME"]}

    def exec(self, argv: Sequence[str], *, input_text: str | None = None, check: bool = True,
             timeout: float | None = None) -> ExecResult:
        return run_local(argv, input_text=input_text, check=check, timeout=timeout, env=self.env)


@pytest.fixture(params=HOST_KINDS)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> SyncCase:
    host = LocalHost() if request.param == "local" else request.getfixturevalue("ssh_host")
    assert isinstance(host, SyncHost)
    return SyncCase(host, str(tmp_path / "ops-home"))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def archive_entries(repo: Path, commit: str) -> Entries:
    """What `git archive <commit>` holds: kind (dir, link, x or - for files) and content."""
    data = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit],
                          capture_output=True, check=True).stdout
    entries: Entries = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for member in tf.getmembers():
            name = member.name.rstrip("/")
            if member.isdir():
                entries[name] = ("dir", b"")
            elif member.issym():
                entries[name] = ("link", member.linkname.encode())
            else:
                fh = tf.extractfile(member)
                assert fh is not None
                entries[name] = ("x" if member.mode & 0o111 else "-", fh.read())
    return entries


def tree_entries(root: Path) -> Entries:
    entries: Entries = {}
    for parent, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(parent) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                entries[rel] = ("link", os.readlink(path).encode())
            elif path.is_dir():
                entries[rel] = ("dir", b"")
            else:
                entries[rel] = ("x" if path.stat().st_mode & 0o111 else "-", path.read_bytes())
    return entries


def assert_synced(repo: Path, done: SyncResult) -> None:
    assert done.code_dir.endswith(f"/code/{done.commit}")
    assert tree_entries(Path(done.code_dir)) == archive_entries(repo, done.commit)


@pytest.mark.parametrize("inline_max", [sync_host.INLINE_MAX_BYTES, 0], ids=["stdin", "sftp"])
def test_checkout_is_byte_identical_to_git_archive(case: SyncCase, repo: Path, inline_max: int,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync_host, "INLINE_MAX_BYTES", inline_max)
    done = case.sync(repo)
    assert (done.method, done.commit, done.branch) == ("bundle", git(repo, "rev-parse", "HEAD"),
                                                       "main")
    assert not done.dirty and done.base_commit == done.commit
    assert_synced(repo, done)
    assert not list(Path(case.ops_home, "code").glob(".stage.*"))
    uploads = Path(case.ops_home, "uploads")
    assert uploads.exists() == (inline_max == 0)  # the uploaded file is gone after the sync
    assert not uploads.exists() or not list(uploads.iterdir())


def test_two_refs_give_two_code_dirs_even_at_once(case: SyncCase, repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "other")
    (repo / "src" / "pkg0" / "mod0.py").write_text("OTHER = 1\n")
    commit_all(repo, "other change")
    git(repo, "checkout", "-q", "main")
    with ThreadPoolExecutor(2) as pool:
        main, other = pool.map(lambda ref: case.sync(repo, ref), ["main", "other"])
    assert main.code_dir != other.code_dir
    assert_synced(repo, main)
    assert_synced(repo, other)
    assert (Path(other.code_dir) / "src/pkg0/mod0.py").read_text() == "OTHER = 1\n"
    assert (Path(main.code_dir) / "src/pkg0/mod0.py").read_text().startswith("VALUE_0_0")


def test_second_sync_after_one_line_commit_sends_a_few_kb(case: SyncCase, repo: Path) -> None:
    first = case.sync(repo)
    mod = repo / "src" / "pkg3" / "mod13.py"
    mod.write_text(mod.read_text().replace("VALUE_13_5 = 65", "VALUE_13_5 = 66"))
    commit_all(repo, "one line")
    second = case.sync(repo)
    assert (second.method, second.commits_sent, second.reused_tree) == ("bundle", 1,
                                                                          first.commit)
    assert second.bytes_sent < 5000 < first.bytes_sent
    assert_synced(repo, second)
    assert "VALUE_13_5 = 65" in (Path(first.code_dir) / "src/pkg3/mod13.py").read_text()


def count_execs(case: SyncCase, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which scripts (probe or apply) the host runs from now on, in order."""
    scripts: list[str] = []
    real_exec = case.host.exec

    def exec_and_count(argv: Sequence[str], **kwargs: Any) -> ExecResult:
        scripts.append("apply" if "stale()" in argv[2] else "probe")
        return real_exec(argv, **kwargs)
    monkeypatch.setattr(case.host, "exec", exec_and_count)
    return scripts


def test_a_later_sync_is_one_exec_and_a_stale_guess_costs_one_more(
        case: SyncCase, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    execs = count_execs(case, monkeypatch)
    case.sync(repo)
    assert execs == ["probe", "apply"]  # nothing synced from this clone yet: ask first
    (repo / "README").write_text("one\n")
    commit_all(repo, "one")
    execs.clear()
    assert case.sync(repo).reused_tree is not None
    assert execs == ["apply"]  # the parent was synced: bundle and apply at once
    (repo / "README").write_text("two\n")
    commit_all(repo, "two")
    execs.clear()
    elsewhere = SyncCase(case.host, str(tmp_path / "other-home"))  # has nothing yet
    done = elsewhere.sync(repo)
    assert execs == ["apply", "apply"]  # the guess was stale; the answer said what is there
    assert done.method == "bundle" and done.commits_sent == 3  # the whole history
    assert_synced(repo, done)


def test_resync_sends_nothing_and_a_lost_tree_comes_from_the_mirror(case: SyncCase,
                                                                    repo: Path) -> None:
    first = case.sync(repo)
    again = case.sync(repo, first.commit)
    assert (again.method, again.bytes_sent, again.code_dir) == ("present", 0, first.code_dir)
    shutil.rmtree(first.code_dir)
    rebuilt = case.sync(repo)
    assert (rebuilt.method, rebuilt.bytes_sent) == ("mirror", 0)
    assert_synced(repo, rebuilt)


def test_a_reused_tree_drops_what_runs_did_and_follows_every_kind_of_change(
        case: SyncCase, repo: Path) -> None:
    first = case.sync(repo)
    old = Path(first.code_dir)
    assert not any(p.stat().st_mode & 0o222 for p in old.rglob("*") if p.is_file()
                   and not p.is_symlink())
    (old / "src" / "__pycache__").mkdir()  # what a run leaves behind in its code dir
    (old / "src" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"stale")
    (old / "new.txt").write_text("untracked, and the next commit adds this path\n")
    (old / "src" / "pkg4" / "mod4.py").unlink()  # tracked files a run replaced or deleted
    (old / "src" / "pkg4" / "mod4.py").write_text("REPLACED = 1\n")
    (old / "src" / "pkg5" / "mod5.py").unlink()
    edited = old / "src" / "pkg6" / "mod6.py"  # edited in place: every tree sharing it sees it
    edited.chmod(0o644)
    with edited.open("r+") as fh:
        fh.write("EDITED")
    for path in (repo / "src" / "pkg9").iterdir():  # a directory disappears
        path.unlink()
    (repo / "src" / "pkg0" / "mod0.py").unlink()  # a file becomes a directory
    (repo / "src" / "pkg0" / "mod0.py").mkdir()
    (repo / "src" / "pkg0" / "mod0.py" / "inner.py").write_text("INNER = 1\n")
    (repo / "src" / "pkg1" / "mod1.py").unlink()  # a file becomes a symlink
    (repo / "src" / "pkg1" / "mod1.py").symlink_to("mod11.py")
    (repo / "src" / "pkg2" / "mod2.py").chmod(0o755)  # only the mode changes
    (repo / "new.txt").write_text("tracked now\n")
    commit_all(repo, "every kind of change")
    second = case.sync(repo)
    assert second.reused_tree == first.commit
    assert_synced(repo, second)
    left = tree_entries(old)
    assert left["src/pkg4/mod4.py"] == ("-", b"REPLACED = 1\n")
    assert "src/pkg5/mod5.py" not in left and "src/__pycache__" in left


def test_export_attributes_mean_a_full_archive(case: SyncCase, repo: Path) -> None:
    (repo / ".gitattributes").write_text("version.txt export-subst\nsecret.txt export-ignore\n")
    (repo / "version.txt").write_text("$Format:%H$\n")
    (repo / "secret.txt").write_text("not exported\n")
    first = commit_all(repo, "attributes")
    assert "secret.txt" not in tree_entries(Path(case.sync(repo).code_dir))
    (repo / "README").write_text("changed\n")
    commit_all(repo, "readme")
    second = case.sync(repo)
    assert second.reused_tree is None
    assert_synced(repo, second)
    version = (Path(second.code_dir) / "version.txt").read_text().strip()
    assert version == second.commit != first


def _dirty(repo: Path) -> None:
    (repo / "src" / "pkg1" / "mod1.py").write_text("EDITED = True\n")  # tracked, modified
    (repo / "notes.txt").write_text("untracked\n")  # untracked, not ignored
    (repo / "debug.log").write_text("ignored\n")  # ignored


@pytest.mark.parametrize("ref", ["HEAD", "main"], ids=["head", "checked-out-branch"])
def test_dirty_tree_is_refused_without_allow_dirty(case: SyncCase, repo: Path, ref: str) -> None:
    _dirty(repo)
    with pytest.raises(UsageError) as caught:
        case.sync(repo, ref)
    assert caught.value.exit_code == ExitCode.USAGE
    assert "uncommitted changes" in caught.value.message
    assert set(caught.value.details) == {"src/pkg1/mod1.py", "notes.txt"}
    assert not Path(case.ops_home, "code").exists()


def test_dirty_tree_does_not_matter_for_another_ref(case: SyncCase, repo: Path) -> None:
    git(repo, "branch", "release")
    _dirty(repo)
    done = case.sync(repo, "release")
    assert not done.dirty and done.commit == git(repo, "rev-parse", "release")


def test_allow_dirty_syncs_a_snapshot_without_touching_the_index(case: SyncCase,
                                                                 repo: Path) -> None:
    (repo / "src" / "pkg2" / "mod2.py").write_text("STAGED = 1\n")
    git(repo, "add", "src/pkg2/mod2.py")
    _dirty(repo)
    head, cached = git(repo, "rev-parse", "HEAD"), git(repo, "diff", "--cached")
    status = git(repo, "status", "--porcelain")
    index = (repo / ".git" / "index").read_bytes()  # after status had its chance to refresh
    done = case.sync(repo, allow_dirty=True)
    assert done.dirty and done.base_commit == head and done.commit != head
    assert git(repo, "rev-parse", f"{done.commit}^") == head
    assert git(repo, "rev-parse", f"refs/ops/snapshots/{done.commit}") == done.commit
    files = git(repo, "ls-tree", "-r", "--name-only", done.commit).splitlines()
    assert {"notes.txt", "src/pkg1/mod1.py", "src/pkg2/mod2.py"} <= set(files)
    assert "debug.log" not in files
    assert_synced(repo, done)
    assert (Path(done.code_dir) / "src/pkg1/mod1.py").read_text() == "EDITED = True\n"
    assert (repo / ".git" / "index").read_bytes() == index
    assert (git(repo, "rev-parse", "HEAD"), git(repo, "diff", "--cached")) == (head, cached)
    assert git(repo, "status", "--porcelain") == status
    again = case.sync(repo, allow_dirty=True)  # same tree on the same base: the same commit
    assert (again.commit, again.method) == (done.commit, "present")


def test_pull_request_ref_is_fetched_from_origin(case: SyncCase, repo: Path,
                                                 tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "feature.py").write_text("FEATURE = 7\n")
    pr_commit = commit_all(repo, "feature")
    git(repo, "push", "-q", "origin", "feature:refs/pull/7/head")
    git(repo, "checkout", "-q", "main")
    git(repo, "branch", "-q", "-D", "feature")
    done = case.sync(repo, "pr:7")
    assert (done.commit, done.ref, done.branch) == (pr_commit, "pr:7", None)
    assert git(repo, "rev-parse", "refs/ops/pr/7") == pr_commit
    assert_synced(repo, done)
    with pytest.raises(NotFoundError, match="no pull request 8"):
        case.sync(repo, "pr:8")


@pytest.mark.parametrize(("ref", "error", "message"), [
    ("no-such-branch", UsageError, "unknown ref 'no-such-branch'"),
    ("--upload-pack=evil", UsageError, "not a ref"),
    ("pr:seven", UsageError, "pull request number"),
], ids=["unknown", "option-like", "pr-not-a-number"])
def test_bad_refs_are_usage_errors(case: SyncCase, repo: Path, ref: str, error: type[OpsError],
                                   message: str) -> None:
    with pytest.raises(error, match=message):
        case.sync(repo, ref)


def test_host_without_git_gets_an_archive(repo: Path, tmp_path: Path) -> None:
    host = NoGitHost(tmp_path / "bin")
    assert isinstance(host, SyncHost)
    case = SyncCase(host, str(tmp_path / "ops-home"))
    done = case.sync(repo)
    assert done.method == "archive" and done.bytes_sent > 0
    assert_synced(repo, done)
    assert not Path(case.ops_home, "mirror.git").exists()
    assert case.sync(repo).method == "present"


# -- the command -------------------------------------------------------------------------------

@pytest.fixture
def configured_repo(repo: Path, tmp_path: Path) -> Callable[..., tuple[int, str, BaseException]]:
    config = repo / "configs" / "ops" / "project.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"project": {
        "name": "t", "ops_home": str(tmp_path / "ops-home"),
        "remote_outputs_dir": str(tmp_path / "runs")}}))
    commit_all(repo, "ops config")

    def invoke(*args: str) -> tuple[int, str, BaseException]:
        result = CliRunner().invoke(repo_group, ["sync", *args],
                                    obj={"project_config": str(config)})
        return result.exit_code, result.output, result.exception  # type: ignore[return-value]
    return invoke


def test_sync_command_prints_a_versioned_envelope(
        configured_repo: Callable[..., tuple[int, str, BaseException]], repo: Path) -> None:
    code, out, _ = configured_repo("--json")
    assert code == 0, out
    doc = json.loads(out)
    assert (doc["schema"], doc["method"], doc["commit"]) == (
        SCHEMA, "bundle", git(repo, "rev-parse", "HEAD"))
    jsonschema.validate(doc, load_schema("repo_sync"))
    code, out, _ = configured_repo()
    assert code == 0 and "nothing sent" in out


def test_sync_command_refuses_a_dirty_tree(
        configured_repo: Callable[..., tuple[int, str, BaseException]], repo: Path) -> None:
    _dirty(repo)
    _, _, error = configured_repo("--ref", "main")
    assert isinstance(error, UsageError) and error.exit_code == ExitCode.USAGE
    assert "--allow-dirty" in error.render()
