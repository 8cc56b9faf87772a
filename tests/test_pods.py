"""`ops pod` against fake provider CLIs whose "instance" is this machine's loopback sshd."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from .conftest import Project, Result
from .fake_providers.cloud import FakeCloud
from .sshd_fixture import Sshd

pytestmark = [pytest.mark.ssh, pytest.mark.tmux]

CANARY = "canary-wandb-key-7f3a9c1e5b"


def _git(repo: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def _pod_python(tmp: Path) -> Path:
    """This venv's interpreter as a pod has it: its packages (psutil) but not this
    checkout's runner (the editable install's .pth is skipped with -S), so ops must use the
    runner it uploads, as on a real pod."""
    site = next(p for p in sys.path if p.endswith("site-packages"))
    script = tmp / "pod-python"
    script.write_text(f'#!/bin/sh\nPYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site}" '
                      f'exec "{sys.executable}" -S "$@"\n')
    script.chmod(0o755)
    return script


class Pods:
    """The test project, a fake cloud on PATH, and the pod-side paths of this test."""

    def __init__(self, project: Project, cloud: FakeCloud, sshd: Sshd, tmp: Path):
        self.project, self.cloud, self.sshd = project, cloud, sshd
        self.pod_runs, self.pod_home = tmp / "pod-runs", tmp / "pod-home"
        self.netrc = tmp / "pod-netrc"
        self.python = _pod_python(tmp)

    def ops(self, *args: str, timeout: float = 90) -> Result:
        return self.project.ops(*args, env=self.cloud.env, timeout=timeout)

    def up_args(self, name: str, provider: str, *extra: str) -> list[str]:
        return ["pod", "up", name, "--provider", provider, "--identity",
                str(self.sshd.client_key), "--user", self.sshd.user,
                "--ops-home", str(self.pod_home), "--outputs-dir", str(self.pod_runs),
                "--python", str(self.python), "--netrc-path", str(self.netrc),
                "--timeout", "60", *extra]

    def up(self, name: str, provider: str, *extra: str) -> Result:
        return self.ops(*self.up_args(name, provider, *extra))

    def pods_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.project.root / ".ops" / "pods.json").read_text())
        return doc


@pytest.fixture
def pods(project: Project, sshd: Sshd, hermetic_home: Path, tmp_path: Path) -> Pods:
    doc = json.loads(project.config_path.read_text())
    doc["storage"] = {"hf_home": str(tmp_path / "pod-hf"),
                      "datasets_root": str(tmp_path / "pod-datasets")}
    project.write_config(doc)
    _git(project.root, "init", "-q", "-b", "main")
    (project.root / "README").write_text("x\n")
    _git(project.root, "add", "-A")
    _git(project.root, "commit", "-q", "-m", "x")
    netrc = hermetic_home / ".netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {CANARY}\n")
    netrc.chmod(0o600)
    return Pods(project, FakeCloud.make(tmp_path, sshd.port, boot_polls=2, port_after=1),
                sshd, tmp_path)


def _files_containing(root: Path, needle: str) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and needle.encode() in path.read_bytes():
            found.append(path)
    return found


def _creds_from_script(pods: Pods) -> None:
    """The W&B key from storage.wandb.ensure_creds_script instead of the netrc."""
    (Path.home() / ".netrc").unlink()
    script = pods.pod_runs.parent / "creds.py"  # outside the repo: never synced
    script.write_text(f"print({CANARY!r})\n")
    doc = json.loads(pods.project.config_path.read_text())
    doc["storage"]["wandb"] = {"ensure_creds_script": f"{sys.executable} {script}"}
    pods.project.write_config(doc)
    _git(pods.project.root, "add", "-A")
    _git(pods.project.root, "commit", "-q", "-m", "creds")


def _up_ready(pods: Pods, provider: str) -> Result:
    up = pods.up("gpu1", provider)
    assert up.exit_code == 0, up.stderr
    assert "gpu1: ready" in up.stdout
    assert "preflight warn (profile cpu, cpu)" in up.stderr
    describes = [c for c in pods.cloud.calls() if c[1:3] in (["show", "instance"],
                                                             ["pod", "get"]) or c[1:2] == ["ps"]]
    assert len(describes) >= 4  # 2 booting, 1 running without the port mapping, then mapped
    record = pods.pods_json()["pods"]["gpu1"]
    assert record["state"] == "ready"
    assert [h["to"] for h in record["history"]][-3:] == ["ssh_ready", "bootstrapped", "ready"]
    # the W&B key reached the pod's netrc, 0600
    assert stat.S_IMODE(pods.netrc.stat().st_mode) == 0o600
    assert CANARY in pods.netrc.read_text()
    return up


def _dry_run_and_ssh(pods: Pods) -> None:
    dry = pods.ops("run", "submit", "-p", "printer", "-H", "gpu1", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    est = dry.json()["estimate"]  # cost at the pod's $/h (the offer's dph_total)
    assert est["runs"] == 1 and est["price_per_hour"] == 0.412
    assert est["cost"] == round(est["duration_s"] / 3600 * 0.412, 4)
    # the system ssh, with the pod's own known_hosts and key
    shell = pods.ops("pod", "ssh", "gpu1", "--", "echo", "hello from the pod")
    assert shell.exit_code == 0 and shell.stdout == "hello from the pod\n", shell.stderr


@pytest.mark.parametrize("provider", ["vast", "runpod", "lium"])
def test_up_submit_status_fetch_rm(pods: Pods, provider: str) -> None:
    if provider == "runpod":
        _creds_from_script(pods)
    up = _up_ready(pods, provider)
    sub = pods.ops("run", "submit", "-p", "printer", "-H", "gpu1", "--run-id", "p1", "--json")
    assert sub.exit_code == 0, sub.stderr
    pods.project.wait_for((pods.pod_runs / "p1" / "summary.json").exists)
    env = json.loads((pods.pod_runs / "p1" / "spec.json").read_text())["workload"]["env"]
    assert env["HF_HOME"] == str(pods.pod_runs.parent / "pod-hf")
    assert (pods.pod_runs.parent / "pod-hf").is_dir()
    assert (pods.pod_runs.parent / "pod-datasets").is_dir()
    status = pods.ops("pod", "status", "gpu1", "--json")
    assert status.exit_code == 0, status.stderr
    doc = status.json()
    assert doc["reachable"] is True and doc["runs"] == {"completed": 1}
    assert doc["machine"]["disk_free_gb"] > 0
    if provider == "vast":
        _dry_run_and_ssh(pods)

    refused = pods.ops("pod", "rm", "gpu1")  # p1 was never fetched
    assert refused.exit_code == 4 and "p1: completed, never fetched" in refused.stderr
    assert pods.netrc.exists()
    fetched = pods.ops("run", "fetch", "p1", "-H", "gpu1")
    assert fetched.exit_code == 0, fetched.stderr
    rm = pods.ops("pod", "rm", "gpu1")
    assert rm.exit_code == 0, rm.stderr

    assert not pods.netrc.exists()
    assert "gpu1" not in pods.pods_json()["pods"]
    assert not (pods.project.root / ".ops" / "pods" / "gpu1").exists()
    assert [i["destroyed"] for i in pods.cloud.instances()] == [True]
    texts = [up.stdout, up.stderr, sub.stdout, sub.stderr, status.stdout, rm.stdout, rm.stderr,
             json.dumps(pods.cloud.calls())]
    assert not [t for t in texts if CANARY in t]  # not in argv, not in output
    for root in (pods.pod_runs, pods.project.root, pods.pod_home):
        assert _files_containing(root, CANARY) == []


def test_vast_create_asks_for_no_auto_tmux_and_the_cheapest_offer(pods: Pods) -> None:
    pods.cloud.scenario(fail_create=True)
    result = pods.up("gpu1", "vast", "--max-price", "0.5")
    assert result.exit_code == 5 and "create" in result.stderr
    create = next(c for c in pods.cloud.calls() if c[1:3] == ["create", "instance"])
    assert create[3] == "991"  # the cheapest offer under the cap
    assert create[create.index("--onstart-cmd") + 1] == "touch ~/.no_auto_tmux"
    record = pods.pods_json()["pods"]["gpu1"]
    assert record["state"] == "failed" and record["instance_id"] is None
    listed = pods.ops("pod", "list")
    assert "gpu1" in listed.stdout and "failed" in listed.stdout


@pytest.mark.parametrize(("provider", "scenario"), [
    ("runpod", {"die_after": 2}), ("lium", {"gone_after": 2}), ("vast", {"die_after": 1}),
])
def test_a_pod_that_dies_while_booting_is_destroyed(pods: Pods, provider: str,
                                                    scenario: dict[str, Any]) -> None:
    pods.cloud.scenario(boot_polls=4, **scenario)
    result = pods.up("gpu1", provider, "--ttl", "8h")
    assert result.exit_code == 5, result.stderr
    create = next(c for c in pods.cloud.calls() if "create" in c or "up" in c)
    ttl_flag = {"runpod": "--terminate-after", "lium": "--ttl"}.get(provider)
    assert ttl_flag is None or ttl_flag in create  # the provider's own TTL where it has one
    assert "failed" in result.stderr or "gone" in result.stderr
    assert all(i["destroyed"] for i in pods.cloud.instances())
    assert pods.pods_json()["pods"]["gpu1"]["state"] in ("gone", "failed")


def test_keep_leaves_a_failed_pod_rented(pods: Pods) -> None:
    pods.cloud.scenario(die_after=1)
    result = pods.up("gpu1", "runpod", "--keep")
    assert result.exit_code == 5
    assert [i["destroyed"] for i in pods.cloud.instances()] == [False]
    rm = pods.ops("pod", "rm", "gpu1")
    assert rm.exit_code == 0, rm.stderr
    assert [i["destroyed"] for i in pods.cloud.instances()] == [True]


def test_sigkill_mid_up_leaves_a_pod_that_list_shows_and_rm_destroys(pods: Pods) -> None:
    pods.cloud.scenario(create_delay=30)
    env = {**os.environ, "OPS_PROJECT_CONFIG": str(pods.project.config_path), **pods.cloud.env}
    proc = subprocess.Popen([sys.executable, "-m", "ops", *pods.up_args("gpu1", "vast")],
                            cwd=pods.project.root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        pods.project.wait_for(lambda: bool(pods.cloud.instances()), timeout=30)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # ops and the CLI it was waiting on
        proc.wait()
    record = pods.pods_json()["pods"]["gpu1"]  # parses
    assert record["state"] == "requested" and record["instance_id"] is None
    listed = pods.ops("pod", "list", "--json")
    assert [p["name"] for p in listed.json()["pods"]] == ["gpu1"]
    rm = pods.ops("pod", "rm", "gpu1")
    assert rm.exit_code == 0, rm.stderr
    assert "by its label" in rm.stderr
    assert [i["destroyed"] for i in pods.cloud.instances()] == [True]


def test_a_pod_name_is_unique_while_it_is_recorded(pods: Pods) -> None:
    pods.cloud.scenario(fail_create=True)
    assert pods.up("gpu1", "vast").exit_code == 5
    second = pods.up("gpu1", "runpod")
    assert second.exit_code == 4 and "already exists" in second.stderr


def test_a_live_run_blocks_rm_and_force_overrides(pods: Pods) -> None:
    up = pods.up("gpu1", "vast", "--ttl", "2h")
    assert up.exit_code == 0, up.stderr
    assert "self-destruct timer in 7" in up.stderr  # vast has no TTL: a pod-side timer
    timers = [p for p in psutil.process_iter(["cmdline"])
              if (p.info["cmdline"] or [])[:2] == ["sh", "-c"]
              and "vastai destroy instance" in " ".join(p.info["cmdline"])]
    assert len(timers) == 1
    for timer in timers:  # this test started it
        for child in timer.children(recursive=True):
            child.kill()
        timer.kill()
    listed = pods.ops("pod", "list", "--json").json()["pods"][0]
    assert 7000 < listed["ttl_left_s"] <= 7200
    sub = pods.ops("run", "submit", "-p", "slow", "-H", "gpu1", "--run-id", "s1")
    assert sub.exit_code == 0, sub.stderr
    refused = pods.ops("pod", "rm", "gpu1")
    assert refused.exit_code == 4
    assert "s1: launching" in refused.stderr or "s1: running" in refused.stderr
    forced = pods.ops("pod", "rm", "gpu1", "--force")
    assert forced.exit_code == 0, forced.stderr
    assert not pods.netrc.exists()


def test_rm_then_up_on_the_same_address_with_a_new_host_key(pods: Pods,
                                                            sshd_factory: Any) -> None:
    server = sshd_factory()
    pods.sshd = server
    first = pods.up("box", "ssh", "--address", server.address)  # adopt: no provider at all
    assert first.exit_code == 0, first.stderr
    assert stat.S_IMODE(pods.netrc.stat().st_mode) == 0o600
    assert pods.ops("pod", "status", "box", "--json").json()["reachable"] is True
    assert pods.ops("pod", "rm", "box").exit_code == 0
    assert not pods.netrc.exists() and pods.cloud.calls() == []
    server.restart(new_host_key=True)
    again = pods.up("box", "ssh", "--address", server.address)
    assert again.exit_code == 0, again.stderr
