"""`ops report --host` and the detailed `ops run status RUN` against a pod reached only through
a real sshd on 127.0.0.1: every run in one `runner report-data` round trip."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from ops.config.loader import load_config
from ops.report import build, sources
from ops.services.hosts import open_target
from runner import contract
from runner.schemas import load_schema

from .report_runs import seg_run, write_run
from .sshd_fixture import SshAlias

pytestmark = pytest.mark.ssh


@pytest.fixture
def pod_project(tmp_path: Path, ssh_alias: SshAlias,
                monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose host `pod` is this machine through sshd; its runs written in place."""
    root = tmp_path / "proj"
    (root / "configs" / "ops").mkdir(parents=True)
    outputs = tmp_path / "pod-runs"
    config = root / "configs" / "ops" / "project.json"
    config.write_text(json.dumps({
        "project": {"name": "rep", "remote_outputs_dir": str(outputs)},
        "hosts": {"pod": {"address": ssh_alias.name, "outputs_dir": str(outputs),
                          "ops_home": str(tmp_path / "pod-home"), "python": sys.executable}},
        "presets": {"p": {"kind": "command", "command": ["true"]}}}))
    for i, loss in enumerate(("dice_ce", "cldice", "warp")):
        write_run(outputs, seg_run(f"r{i}-{loss}", loss, 0.02 * i,
                                   started_at=f"2026-01-02T1{i}:00:00.000Z"))
    broken = write_run(outputs, seg_run("r9-broken", "warp", 0.0))
    (broken / contract.SUMMARY).write_text("{not json")
    monkeypatch.chdir(root)
    monkeypatch.setenv("OPS_PROJECT_CONFIG", str(config))
    return root


class CountingHost:
    """The real SSH host, counting the commands the report runs on it."""

    def __init__(self, host: Any) -> None:
        self.host, self.name, self.calls = host, host.name, 0

    def exec(self, argv: Sequence[str], **kwargs: Any) -> Any:
        self.calls += 1
        return self.host.exec(argv, **kwargs)

    def runner_argv(self) -> list[str]:
        argv: list[str] = self.host.runner_argv()
        return argv


def test_report_over_ssh_in_one_round_trip(pod_project: Path) -> None:
    loaded = load_config(pod_project / "configs" / "ops" / "project.json")
    target = open_target(loaded, "pod")  # connects and checks the runner first
    try:
        counting = CountingHost(target.host)
        counted = type(target)(counting, target.paths)  # type: ignore[arg-type]
        options = build.ReportOptions(sources.Selection(), group_by="loss", fmt="json")
        report = build.make_report(options, artifacts=pod_project / "artifacts",
                                   open_host=lambda: counted)
    finally:
        target.close()
    assert counting.calls == 1
    doc = report.to_json()
    jsonschema.validate(doc, load_schema("report"))
    runs = {r["run_id"]: r for r in doc["runs"]}
    assert runs["r9-broken"]["status"] == "invalid"
    assert "summary.json: not valid JSON" in runs["r9-broken"]["reason"]
    assert [runs[f"r{i}-{loss}"]["status"] for i, loss in
            enumerate(("dice_ce", "cldice", "warp"))] == ["completed"] * 3
    assert runs["r1-cldice"]["series"]["train_loss"][0] == [1.0, 2.0]
    assert doc["comparison"]["reference"] == "dice_ce"
    assert {t["group"] for t in doc["comparison"]["tests"]} == {"cldice", "warp"}


def test_cli_report_and_detail_over_ssh(pod_project: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from ops.cli.main import main

    with pytest.raises(SystemExit) as done:
        main(["report", "--host", "pod", "--group-by", "loss"])
    out = capsys.readouterr()
    assert done.value.code == 0, out.err
    assert "per-volume comparison by loss" in out.out and "p=0.008" in out.out
    assert "!! r9-broken: invalid: summary.json: not valid JSON" in out.out
    with pytest.raises(SystemExit) as done:
        main(["run", "status", "r1-cldice", "--host", "pod"])
    out = capsys.readouterr()
    assert done.value.code == 0, out.err
    assert "fold 0" in out.out and "stdout.log (last 20 lines):" in out.out
    assert "wandb          wb-r1-cldice" in out.out
    with pytest.raises(SystemExit) as done:
        main(["run", "status", "r1-cldice", "--host", "pod", "--json"])
    doc = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, load_schema("run_status"))
    assert doc["runs"][0]["stdout_tail"][-1] == "line 29"
    assert "gpus_now" in doc["runs"][0]
    with pytest.raises(SystemExit) as done:
        main(["run", "status", "never-ran", "--host", "pod"])
    assert done.value.code == 3
    assert "no run 'never-ran'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["report", "--host", "pod", "r1-cldice", "gone-1"])
    assert done.value.code == 3
    assert "no run 'gone-1' on pod" in capsys.readouterr().err
