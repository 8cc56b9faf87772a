"""The same run commands against a pod reached only through a real sshd on 127.0.0.1."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest

from ops.config.loader import load_config
from ops.errors import HostError
from ops.services import fetch, runs, submit
from ops.services.hosts import open_target

from .conftest import WORKLOADS, Project, base_config, git, pod_config
from .secret_scan import leaks, workload_holding
from .sshd_fixture import SshAlias

pytestmark = [pytest.mark.ssh, pytest.mark.tmux]


@pytest.fixture
def pod(project: Project, ssh_alias: SshAlias, tmp_path: Path) -> Project:
    """The test project with host `pod`: this machine through sshd, its own outputs and home."""
    doc = pod_config(project, ssh_alias.name, tmp_path)
    doc["presets"]["version"] = {"kind": "command", "limits": {"grace_sec": 1},
                                 "command": ["sh", "-c", "sleep 1; cat version.txt"]}
    # events the tests wait for instead of wall-clock overlaps: a run that holds until the
    # test creates a release file, and one that waits at gates the test opens
    held = (f"cat version.txt; i=0; while [ ! -e {tmp_path / 'release'} ] && [ $i -lt 1200 ]; "
            "do sleep 0.05; i=$((i+1)); done")
    doc["presets"]["held"] = {"kind": "command", "limits": {"grace_sec": 1},
                              "command": ["sh", "-c", held]}
    doc["presets"]["gated"] = {"kind": "command", "limits": {"grace_sec": 1},
                               "command": ["{python}", str(WORKLOADS / "gated.py"), "10",
                                           *(str(tmp_path / f"gate-{k}") for k in range(2))]}
    project.write_config(doc)
    project.runs = tmp_path / "pod-runs"
    git(project.root, "init", "-q", "-b", "main")
    (project.root / "version.txt").write_text("A\n")
    git(project.root, "add", "-A")
    git(project.root, "commit", "-q", "-m", "A")
    return project


def test_two_refs_run_at_once_each_with_its_own_code(pod: Project, tmp_path: Path) -> None:
    first = git(pod.root, "rev-parse", "HEAD")
    (pod.root / "version.txt").write_text("B\n")
    git(pod.root, "commit", "-q", "-am", "B")
    a = pod.ops("run", "submit", "-p", "held", "--ref", first, "--run-id", "ref-a", "--json")
    b = pod.ops("run", "submit", "-p", "held", "--ref", "main", "--run-id", "ref-b", "--json")
    assert a.exit_code == 0 and b.exit_code == 0, a.stderr + b.stderr
    logs = {r: pod.runs / r / "stdout.log" for r in ("ref-a", "ref-b")}
    # both have printed their version and both are held: they run at once, whatever the load
    pod.wait_for(lambda: all(p.exists() and p.read_text().endswith("\n") for p in logs.values()),
                 timeout=60)
    assert not any((pod.runs / r / "summary.json").exists() for r in logs)
    (tmp_path / "release").touch()
    for run_id, expected in (("ref-a", "A"), ("ref-b", "B")):
        pod.wait_for((pod.runs / run_id / "summary.json").exists, timeout=60)
        assert pod.summary(run_id)["status"] == "completed"
        assert logs[run_id].read_text() == f"{expected}\n"
        meta = json.loads((pod.runs / run_id / "run_metadata.json").read_text())
        assert meta["git"]["commit"] == (first if expected == "A" else
                                         git(pod.root, "rev-parse", "HEAD"))


def test_dirty_tree_is_refused_for_a_remote_submit(pod: Project) -> None:
    (pod.root / "version.txt").write_text("edited\n")
    result = pod.ops("run", "submit", "-p", "version", "--run-id", "dirty")
    assert result.exit_code == 2 and "allow-dirty" in result.stderr
    assert not (pod.runs / "dirty").exists()
    allowed = pod.ops("run", "submit", "-p", "version", "--run-id", "dirty", "--allow-dirty",
                      "-f")
    assert allowed.exit_code == 0 and allowed.stdout.endswith("edited\n")
    meta = json.loads((pod.runs / "dirty" / "run_metadata.json").read_text())
    assert meta["git"]["dirty"] is True and meta["git"]["base_commit"]


def test_submit_status_tail_fetch_over_ssh(pod: Project, tmp_path: Path) -> None:
    result = pod.ops("run", "submit", "-p", "toy", "--run-id", "remote-1", "--follow")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("iter ") == 15
    status = pod.ops("run", "status", "--json").json()["runs"]
    assert [(r["run_id"], r["status"]) for r in status] == [("remote-1", "completed")]
    dest = tmp_path / "fetched"
    fetched = pod.ops("run", "fetch", "remote-1", "--to", str(dest), "--with-checkpoints",
                      "--json")
    assert fetched.exit_code == 0, fetched.stderr
    checked = pod.ops("validate", "--deep", str(dest / "remote-1"))
    assert checked.exit_code == 0, checked.stdout
    assert (dest / "remote-1" / "stdout.log").read_bytes() == \
        (pod.runs / "remote-1" / "stdout.log").read_bytes()


def test_tail_follow_survives_a_dropped_connection(pod: Project, ssh_alias: SshAlias,
                                                   tmp_path: Path) -> None:
    """The connection is dropped twice while the run waits at a gate (so it is mid-run, seen
    from the laptop), and each gate opens only after its drop: no timing involved."""
    loaded = load_config(pod.config_path)
    target = open_target(loaded, "pod")
    gates = [tmp_path / f"gate-{k}" for k in range(2)]
    try:
        done = submit.submit(loaded, target, "gated", [], run_id="drop-tail")
        received: list[bytes] = []
        drops = []

        def write(data: bytes) -> None:
            received.append(data)
            seen = b"".join(received)
            for k, gate in enumerate(gates):
                if f"waiting at gate {k}".encode() in seen and not gate.exists():
                    drops.append(ssh_alias.sshd.drop(target.host))  # type: ignore[arg-type]
                    gate.touch()

        final = runs.tail(target, done.run_id, write, follow=True, poll_s=0.2)
    finally:
        target.close()
    assert final == "completed"
    assert len(drops) == 2 and all(killed >= 1 for killed in drops), drops
    lines = b"".join(received).decode().splitlines()
    iters = [line for line in lines if line.startswith("iter ")]
    assert iters == [line for line in (pod.runs / "drop-tail" / "stdout.log").read_text()
                     .splitlines() if line.startswith("iter ")]
    assert len(iters) == 30 and len(set(iters)) == 30


def test_fetch_resumes_after_a_dropped_connection(pod: Project, ssh_alias: SshAlias,
                                                  tmp_path: Path) -> None:
    assert pod.ops("run", "submit", "-p", "toy", "--run-id", "drop-fetch", "-f").exit_code == 0
    big = pod.runs / "drop-fetch" / "out" / "big.bin"
    big.write_bytes(os.urandom(48 * 2**20))
    loaded = load_config(pod.config_path)
    target = open_target(loaded, "pod")
    dest = tmp_path / "art"
    try:
        seen = [0]

        def progress(_total: int, _files: int):  # type: ignore[no-untyped-def]
            def advance(n: int) -> None:
                seen[0] += n
                if seen[0] > 8 * 2**20 and seen[0] - n <= 8 * 2**20:
                    ssh_alias.sshd.drop_connection()  # the shared master's too
            return advance

        with pytest.raises(HostError) as dropped:
            fetch.fetch(target, "drop-fetch", dest, progress=progress)
        assert not dropped.value.message.rstrip().endswith(":")  # a reason, never empty
        partial = dest / "drop-fetch" / "out" / "big.bin"
        assert not partial.exists()  # nothing truncated that looks complete
        assert not (dest / "drop-fetch" / ".ops" / "partial").exists()
        result = fetch.fetch(target, "drop-fetch", dest)  # at once: the old link is dead
    finally:
        target.close()
    assert "out/big.bin" in result.files_fetched
    assert (dest / "drop-fetch" / "out" / "big.bin").read_bytes() == big.read_bytes()
    assert not (dest / "drop-fetch" / ".ops" / "partial").exists()


def test_fetch_over_ssh_sends_no_link_out_of_the_run_dir(pod: Project, tmp_path: Path) -> None:
    assert pod.ops("run", "submit", "-p", "toy", "--run-id", "links", "-f").exit_code == 0
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the laptop\n")
    out = pod.runs / "links" / "out"
    os.link(secret, out / "hard.txt")
    (out / "soft.txt").symlink_to(secret)
    os.mkfifo(out / "pipe")
    (out / "twin.txt").write_text("twin\n")
    os.link(out / "twin.txt", out / "twin2.txt")
    dest = tmp_path / "art"
    fetched = pod.ops("run", "fetch", "links", "--to", str(dest), "--json", timeout=60)
    assert fetched.exit_code == 0, fetched.stderr
    got = {p.relative_to(dest / "links").as_posix() for p in (dest / "links").rglob("*")
           if p.is_file() or p.is_symlink()}
    assert {"out/twin.txt", "out/twin2.txt", "stdout.log"} <= got
    assert not {"out/hard.txt", "out/soft.txt", "out/pipe"} & got
    assert not (dest / "links" / ".ops" / "partial").exists()


def test_no_secret_reaches_the_pod_through_argv_or_env(pod: Project, tmp_path: Path) -> None:
    release = tmp_path / "release"
    doc = json.loads(pod.config_path.read_text())
    doc["presets"]["leaky"] = {"kind": "command",
                               "command": ["{python}", str(Path(__file__).parent / "workloads" /
                                                           "leaky.py"), "/dev/null", str(release)],
                               "secrets_env": ["OPS_TEST_TOKEN"]}
    pod.write_config(doc)
    canary = f"canary-over-ssh-{secrets.token_hex(6)}"  # no other run of the suite has it
    result = pod.ops("run", "submit", "-p", "leaky", "--run-id", "leak-ssh", "--json",
                     "--allow-dirty", env={"OPS_TEST_TOKEN": canary})
    assert result.exit_code == 0, result.stderr
    run_dir = pod.runs / "leak-ssh"
    pod.wait_for(lambda: b"lingering" in (run_dir / "stdout.log").read_bytes()
                 if (run_dir / "stdout.log").exists() else False)
    workload = workload_holding(release)
    assert canary in json.dumps(workload.environ())  # the scan can see what it looks for
    assert leaks(workload, [canary]) == []  # sshd, its shells, tmux, the wrapper: none has it
    release.touch()
    pod.wait_for((run_dir / "summary.json").exists)
    for path in [p for p in run_dir.rglob("*") if p.is_file()]:
        assert canary.encode() not in path.read_bytes(), path
    assert "token from env: [REDACTED]" in (run_dir / "stdout.log").read_text()


def test_unknown_host_key_is_refused(project: Project, sshd, hermetic_home: Path) -> None:  # type: ignore[no-untyped-def]
    from .sshd_fixture import write_alias

    alias = write_alias(sshd, hermetic_home, name="stranger", trust=False)
    doc = base_config(project.runs, project.socket)
    doc["hosts"] = {"pod": {"address": alias.name}}
    project.write_config(doc)
    result = project.ops("run", "status", "--host", "pod")
    assert result.exit_code == 5
    assert "--accept-new" in result.stderr


def test_a_remembered_runner_that_vanished_is_reinstalled(pod: Project, tmp_path: Path) -> None:
    assert pod.ops("run", "status").exit_code == 0  # checks the pod, remembers the runner
    seen = json.loads((pod.root / ".ops" / "runners.json").read_text())
    assert len(seen) == 1
    import shutil

    shutil.rmtree(tmp_path / "pod-home" / "runner")  # the pod lost it (wiped, rebuilt)
    again = pod.ops("run", "status", "--json")
    assert again.exit_code == 0, again.stderr
    assert (tmp_path / "pod-home" / "runner").is_dir()
