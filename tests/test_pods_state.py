"""`.ops/pods.json` and the provider tables, without any pod: fast."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from ops.errors import UsageError
from ops.pods.providers import LIUM, RUNPOD, VAST, ProviderCLI
from ops.pods.state import PodRecord, PodStore


def _add_many(root: str, prefix: str) -> None:
    store = PodStore(Path(root))
    for i in range(15):
        store.add(PodRecord(name=f"{prefix}{i}", provider="vast", label=f"l-{prefix}{i}"))
        store.update(f"{prefix}{i}", state="provisioning", instance_id=str(i))


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_many, args=(str(tmp_path), p)) for p in ("a", "b")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    doc = json.loads((tmp_path / ".ops" / "pods.json").read_text())
    assert doc["schema"] == "ops.pods/1"
    assert len(doc["pods"]) == 30
    assert {p["state"] for p in doc["pods"].values()} == {"provisioning"}


def test_state_changes_follow_the_machine_and_are_kept_in_history(tmp_path: Path) -> None:
    store = PodStore(tmp_path)
    store.add(PodRecord(name="p", provider="runpod", label="l"))
    with pytest.raises(UsageError, match="requested -> ready"):
        store.update("p", state="ready")
    for state in ("provisioning", "booting", "ssh_ready", "bootstrapped", "ready", "gone"):
        store.update("p", state=state)
    record = store.get("p")
    assert [h["to"] for h in record.history][-1] == "gone"
    with pytest.raises(UsageError, match="gone -> booting"):
        store.update("p", state="booting")


def test_a_damaged_pods_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "configs" / "ops").mkdir(parents=True)
    config = tmp_path / "configs" / "ops" / "project.json"
    config.write_text(json.dumps({"project": {"name": "p"}}))
    (tmp_path / ".ops").mkdir()
    (tmp_path / ".ops" / "pods.json").write_text('{"schema": "ops.pods/1", "pods": {"x": 3')
    result = subprocess.run([sys.executable, "-m", "ops", "--project-config", str(config),
                             "pod", "list"], cwd=tmp_path, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 2
    assert "pods.json" in result.stderr and "Traceback" not in result.stderr


def test_a_missing_provider_cli_is_a_usage_error_and_records_nothing(tmp_path: Path) -> None:
    (tmp_path / "configs" / "ops").mkdir(parents=True)
    config = tmp_path / "configs" / "ops" / "project.json"
    config.write_text(json.dumps({"project": {"name": "p"}}))
    result = subprocess.run([sys.executable, "-m", "ops", "--project-config", str(config),
                             "pod", "up", "gpu1", "--provider", "runpod"], cwd=tmp_path,
                            capture_output=True, text=True, check=False,
                            env={"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)})
    assert result.returncode == 2, result.stderr
    assert "runpodctl is not installed" in result.stderr and "pods-runpod.md" in result.stderr
    assert not (tmp_path / ".ops" / "pods.json").exists()


def _endpoint(table: object, doc: dict[str, object]) -> tuple[str | None, int | None]:
    return ProviderCLI(table)._endpoint(doc)  # type: ignore[arg-type]


def test_endpoints_are_found_where_each_provider_puts_them() -> None:
    mapped = {"public_ipaddr": "1.2.3.4", "ports": {"22/tcp": [{"HostPort": "40022"}]},
              "ssh_host": "ssh5.vast.ai", "ssh_port": 12345}
    assert _endpoint(VAST, mapped) == ("1.2.3.4", 40022)
    proxy_only = {**mapped, "ports": {}}  # no direct port: the proxy endpoint
    assert _endpoint(VAST, proxy_only) == ("ssh5.vast.ai", 12345)
    assert _endpoint(RUNPOD, {"ssh": {"error": "pod not ready"}}) == (None, None)
    assert _endpoint(RUNPOD, {"ssh": {"ip": "5.6.7.8", "port": 22011}}) == ("5.6.7.8", 22011)
    assert _endpoint(LIUM, {"ssh_connect_cmd": "ssh root@9.9.9.9 -p 30022"}) == ("9.9.9.9",
                                                                                  30022)
    assert _endpoint(LIUM, {"ssh_connect_cmd": None}) == (None, None)
