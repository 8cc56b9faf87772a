"""Whose runs are these (issue 8, item 1): host `local` keeps its runs in the checkout
(`<repo>/runs/<project>` unless project.local_outputs_dir says otherwise), whoever runs ops;
`ops config show` prints each host's outputs root and where it came from; listings say where
they looked; runs the old rule put in a writable remote_outputs_dir are pointed at."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from ops.config.loader import load_config
from ops.errors import ConfigError
from runner.schemas import load_schema

from .conftest import PROJECT_NAME, Project, base_config


def _plain(project: Project, **project_fields: Any) -> dict[str, Any]:
    """The test project with no local outputs setting at all (the default rule)."""
    doc = base_config(project.runs, project.socket)
    doc["project"] = {"name": PROJECT_NAME, **project_fields}
    return doc


def test_local_runs_go_to_the_checkout_even_when_the_remote_root_is_writable(
        project: Project, tmp_path: Path) -> None:
    """As root, /mnt/runs/<project> is writable and the old rule put local runs there; a
    writable remote_outputs_dir stands in for it."""
    remote = tmp_path / "mnt-runs"
    project.write_config(_plain(project, remote_outputs_dir=str(remote)))
    result = project.ops("run", "submit", "-p", "toy", "--run-id", "here-1", "-f")
    assert result.exit_code == 0, result.stderr
    assert (project.root / "runs" / PROJECT_NAME / "here-1" / "summary.json").is_file()
    assert not (remote / "here-1").exists()
    listed = project.ops("run", "status", "--json").json()["runs"]
    assert [run["run_id"] for run in listed] == ["here-1"]
    assert listed[0]["run_dir"] == str(project.root / "runs" / PROJECT_NAME / "here-1")


def _checkout(tmp_path: Path, name: str, project: Project, shared: Path) -> Project:
    root = tmp_path / name
    (root / "configs" / "ops").mkdir(parents=True)
    twin = Project(root, root / "runs" / PROJECT_NAME, project.socket,
                   root / "configs" / "ops" / "project.json")
    twin.write_config(_plain(twin, remote_outputs_dir=str(shared)))
    return twin


def test_two_checkouts_of_one_project_never_see_or_cancel_each_others_runs(
        project: Project, tmp_path: Path) -> None:
    shared = tmp_path / "shared-runs"  # the old rule sent both checkouts' runs here
    first = _checkout(tmp_path, "first", project, shared)
    second = _checkout(tmp_path, "second", project, shared)
    started = first.ops("run", "submit", "-p", "slow", "--run-id", "mine-1")
    assert started.exit_code == 0, started.stderr
    try:
        listed = second.ops("run", "list")
        assert listed.exit_code == 0, listed.stderr
        assert "mine-1" not in listed.stdout
        assert f"no runs in {second.runs} on local" in listed.stdout
        cancel = second.ops("run", "cancel", "mine-1")
        assert cancel.exit_code == 3, cancel.stdout + cancel.stderr
        assert "mine-1" in first.ops("run", "list").stdout
    finally:
        assert first.ops("run", "cancel", "mine-1").exit_code == 0
    assert first.summary("mine-1")["status"] == "killed"


def test_the_same_run_id_in_two_checkouts_gets_two_tmux_sessions(
        project: Project, tmp_path: Path) -> None:
    """One tmux socket serves every checkout: a run id taken in one must not make the other's
    launch fail, nor let its table report the first run's session as its own."""
    shared = tmp_path / "shared-runs"
    first = _checkout(tmp_path, "first", project, shared)
    second = _checkout(tmp_path, "second", project, shared)
    assert first.ops("run", "submit", "-p", "slow", "--run-id", "same-1").exit_code == 0
    try:
        again = second.ops("run", "submit", "-p", "slow", "--run-id", "same-1", "--json")
        assert again.exit_code == 0, again.stdout + again.stderr
        sessions = [json.loads((p.runs / "same-1" / "spec.json").read_text())["tmux"]["session"]
                    for p in (first, second)]
        assert sessions[0] == "ops-same-1" and sessions[1].startswith("ops-same-1_+")
        assert again.json()["tmux_session"] == sessions[1]
        assert second.ops("run", "cancel", "same-1").exit_code == 0
        assert second.summary("same-1")["status"] == "killed"
        status = first.ops("run", "status", "--json").json()["runs"]
        assert [(r["run_id"], r["status"], r["tmux_alive"]) for r in status] == [
            ("same-1", "running", True)]
    finally:
        assert first.ops("run", "cancel", "same-1").exit_code == 0


def test_config_show_prints_each_hosts_outputs_root_and_where_it_came_from(
        project: Project) -> None:
    doc = _plain(project)
    doc["hosts"] = {"gpu": {"address": "me@gpu.example"},
                    "box": {"address": "box.example", "outputs_dir": "/data/runs"}}
    project.write_config(doc)
    overlay = project.config_path.with_name("project.local.json")
    overlay.write_text(json.dumps({"project": {"remote_outputs_dir": "/scratch/runs"}}))
    text = project.ops("config", "show")
    assert text.exit_code == 0, text.stderr
    local_root = project.root / "runs" / PROJECT_NAME
    for line in (f"local  {local_root}  [project.local_outputs_dir: default]",
                 "gpu    /scratch/runs  [project.remote_outputs_dir: project.local.json]",
                 "box    /data/runs  [hosts.box.outputs_dir: project.json]"):
        assert line in text.stdout, text.stdout
    shown = project.ops("config", "show", "--json").json()
    jsonschema.validate(shown, load_schema("config_show"))
    assert [(r["host"], r["path"], r["source"]) for r in shown["outputs_roots"]] == [
        ("local", str(local_root), "default"), ("gpu", "/scratch/runs", "project.local.json"),
        ("box", "/data/runs", "project.json")]


def test_a_configured_local_outputs_dir_is_used_as_documented(project: Project,
                                                              tmp_path: Path) -> None:
    elsewhere = tmp_path / "big-disk"
    project.write_config(_plain(project, local_outputs_dir=str(elsewhere)))
    assert project.ops("run", "submit", "-p", "toy", "--run-id", "far-1", "-f").exit_code == 0
    assert (elsewhere / PROJECT_NAME / "far-1" / "summary.json").is_file()
    shown = project.ops("config", "show").stdout
    assert f"local  {elsewhere / PROJECT_NAME}  [project.local_outputs_dir: project.json]" \
        in shown


def _old_run(root: Path, run_id: str, project_name: str) -> None:
    (root / run_id).mkdir(parents=True)
    (root / run_id / "spec.json").write_text(json.dumps({"project": project_name}))


def test_runs_left_where_the_old_rule_put_them_are_pointed_at(project: Project,
                                                             tmp_path: Path) -> None:
    old = tmp_path / "mnt-runs"
    project.write_config(_plain(project, remote_outputs_dir=str(old)))
    quiet = project.ops("run", "list")
    assert quiet.exit_code == 0 and "note:" not in quiet.stderr  # nothing there yet
    _old_run(old, "toy-20260101T000000-aaaa", PROJECT_NAME)
    _old_run(old, "toy-20260101T000000-bbbb", PROJECT_NAME)
    _old_run(old, "other-20260101T000000-cccc", "another-project")  # not ours: not counted
    (old / "not a run").mkdir()
    (old / "linked-run").symlink_to(old / "toy-20260101T000000-aaaa")  # links never count
    (old / "toy-20260101T000000-dddd").mkdir()
    (old / "toy-20260101T000000-dddd" / "spec.json").write_bytes(b"\xff{[")  # unreadable
    listed = project.ops("run", "list")
    assert listed.exit_code == 0, listed.stderr
    note = f"note: 2 earlier runs of this project are in {old}, where local runs went before"
    assert note in listed.stderr
    assert f"no runs in {project.runs} on local" in listed.stdout
    shown = project.ops("config", "show", "--json").json()
    assert len(shown["notes"]) == 1 and shown["notes"][0].startswith(note)
    as_json = project.ops("run", "list", "--json")
    json.loads(as_json.stdout)  # the note is on stderr: JSON stays JSON


def test_runs_inside_the_checkout_never_make_it_dirty(project: Project) -> None:
    project.write_config(_plain(project))
    subprocess.run(["git", "init", "-q", str(project.root)], check=True)
    for args in (["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm",
                                  "project"]):
        subprocess.run(["git", "-C", str(project.root), *args], check=True)
    for run_id in ("clean-1", "clean-2"):
        assert project.ops("run", "submit", "-p", "toy", "--run-id", run_id, "-f").exit_code == 0
    status = subprocess.run(["git", "-C", str(project.root), "status", "--porcelain"],
                            capture_output=True, text=True, check=True)
    assert status.stdout == ""
    meta = json.loads((project.run_dir("clean-2") / "run_metadata.json").read_text())
    assert meta["git"]["dirty"] is False


def test_config_show_lists_pods_with_their_own_root_or_the_project_default(
        project: Project) -> None:
    from ops.pods.state import PodRecord, PodStore

    project.write_config(_plain(project))
    assert not (project.root / ".ops").exists()
    project.ops("config", "show")
    assert not (project.root / ".ops").exists()  # showing the config creates nothing there
    store = PodStore(project.root)
    store.add(PodRecord(name="p-own", provider="ssh", label="x", outputs_dir="/vol/runs"))
    store.add(PodRecord(name="p-default", provider="ssh", label="y"))
    roots = project.ops("config", "show", "--json").json()["outputs_roots"]
    pods = {r["host"]: (r["kind"], r["path"], r["setting"], r["source"]) for r in roots
            if r["kind"] == "pod"}
    assert pods == {
        "p-own": ("pod", "/vol/runs", "pod record", ".ops/pods.json"),
        "p-default": ("pod", f"/mnt/runs/{PROJECT_NAME}", "project.remote_outputs_dir",
                      "default")}


def test_an_outputs_dir_with_a_nul_is_a_config_error_not_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "configs" / "ops" / "project.json"
    config.parent.mkdir(parents=True)
    for field, where in (("local_outputs_dir", "project"), ("remote_outputs_dir", "project"),
                         ("outputs_dir", "hosts.h")):
        doc: dict[str, Any] = {"project": {"name": "d"}, "hosts": {"h": {"address": "x"}}}
        section = doc["project"] if where == "project" else doc["hosts"]["h"]
        section[field] = "runs\x00evil"
        config.write_text(json.dumps(doc))
        with pytest.raises(ConfigError) as caught:
            load_config(config)
        assert f"{where}.{field}: must not contain a NUL" in "\n".join(caught.value.details)
