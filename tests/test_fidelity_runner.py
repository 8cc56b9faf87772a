"""Issue 15 on the runner side: usage errors as JSON, and the GPU memory limit with a
stand-in for NVML (pynvml is an external library a test cannot otherwise drive)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from runner import gpu
from runner.heartbeat import Breach, Heartbeat, Limits

from .conftest import REPO, Project, base_config


@pytest.mark.parametrize(("argv", "words"), [
    (["status"], "the following arguments are required: root"),
    (["tail", "/nowhere", "--offset", "abc"], "argument --offset: invalid int value: 'abc'"),
    (["no-such-verb"], "invalid choice: 'no-such-verb'"),
])
def test_usage_errors_are_the_json_error_document(argv: list[str], words: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "runner", *argv], cwd=REPO, capture_output=True,
                          text=True, check=False, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == ""
    error = json.loads(proc.stdout)["error"]
    assert error["kind"] == "usage" and words in error["message"]


# -- the GPU memory limit, with a stand-in for NVML -------------------------------------------

MIB = 2**20


class FakeNVML(types.ModuleType):
    """Just what runner.gpu calls of pynvml: one device, a driver, per-process memory."""

    def __init__(self, processes: list[tuple[int, int | None]], *, init_error: bool = False):
        super().__init__("pynvml")
        self.processes = processes
        self.init_error = init_error

    def nvmlInit(self) -> None:  # pynvml's names, hence the camel case
        if self.init_error:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"handle{index}"

    def nvmlDeviceGetName(self, handle: str) -> bytes:
        return b"Fake H100"

    def nvmlDeviceGetUUID(self, handle: str) -> str:
        return "GPU-fake-0"

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> SimpleNamespace:
        return SimpleNamespace(total=80 * 1024 * MIB, free=79 * 1024 * MIB)

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return b"550.54.15"

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.processes]


@pytest.fixture
def workload() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "30"])
    yield proc
    proc.kill()
    proc.wait()


def _with_nvml(monkeypatch: pytest.MonkeyPatch, module: types.ModuleType | None) -> None:
    """The import seam: `import pynvml` in runner.gpu finds this (None: not installed)."""
    monkeypatch.setitem(sys.modules, "pynvml", module)
    monkeypatch.setattr(gpu, "_state", {})


def _beat(tmp_path: Path, pid: int, limit_mb: int) -> tuple[list[Breach], dict[str, Any]]:
    breaches: list[Breach] = []
    beat = Heartbeat(tmp_path, "gpu-run", interval=1.0, workload_pid=pid,
                     limits=Limits(gpu_mem_limit_bytes=limit_mb * MIB),
                     on_limit=breaches.append)
    beat.beat()
    return breaches, json.loads((tmp_path / "heartbeat.json").read_text())


def test_gpu_memory_over_the_limit_aborts_counting_only_the_runs_processes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        workload: subprocess.Popen[bytes]) -> None:
    # the run's workload uses 600 MiB; another process on the GPU uses 10 GiB (not ours)
    _with_nvml(monkeypatch, FakeNVML([(workload.pid, 600 * MIB), (1, 10 * 1024 * MIB)]))
    breaches, heartbeat = _beat(tmp_path, workload.pid, 512)
    assert heartbeat["gpu_memory_bytes"] == 600 * MIB
    assert breaches == [Breach("aborted", "memory",
                               "GPU memory 600 MiB over the limit of 512 MiB")]
    assert _beat(tmp_path, workload.pid, 700)[0] == []
    assert gpu.limit_warning(512 * MIB) is None


def test_gpu_facts_through_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_nvml(monkeypatch, FakeNVML([(4242, None), (4243, 3 * MIB)]))
    assert gpu.devices() == [{"index": 0, "name": "Fake H100",
                              "memory_total_bytes": 80 * 1024 * MIB, "uuid": "GPU-fake-0"}]
    assert gpu.driver_version() == "550.54.15"
    assert gpu.process_memory([4242, 4243]) == 3 * MIB  # "not available" counts as nothing
    assert gpu.process_memory([99]) == 0


@pytest.mark.parametrize(("module", "why"), [
    (None, "nvidia-ml-py (pynvml) is not installed"),
    (FakeNVML([], init_error=True), "NVML did not start (RuntimeError: NVML Shared Library"),
])
def test_a_limit_that_cannot_be_enforced_says_so(
        module: types.ModuleType | None, why: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, workload: subprocess.Popen[bytes]) -> None:
    _with_nvml(monkeypatch, module)
    breaches, heartbeat = _beat(tmp_path, workload.pid, 512)
    assert breaches == [] and heartbeat["gpu_memory_bytes"] is None
    warning = gpu.limit_warning(512 * MIB)
    assert warning is not None
    assert warning.startswith("gpu_mem_limit_mb (512 MiB) cannot be enforced on this host: ")
    assert why in warning
    assert gpu.limit_warning(None) is None  # no limit, nothing to say


def test_a_run_whose_gpu_limit_cannot_be_enforced_says_so_in_its_events(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = base_config(project.runs, project.socket)
    doc["presets"]["gpu_capped"] = {"kind": "command", "command": ["{python}", "-c", "pass"],
                                    "limits": {"grace_sec": 1, "gpu_mem_limit_mb": 512}}
    project.write_config(doc)
    result = project.ops("run", "submit", "-p", "gpu_capped", "--run-id", "capped", "-f")
    assert result.exit_code == 0, result.stderr
    events = [json.loads(line) for line in
              (project.run_dir("capped") / "events.jsonl").read_text().splitlines()]
    warnings = [e["message"] for e in events if e["type"] == "warning"]
    monkeypatch.setattr(gpu, "_state", {})  # NVML looked up afresh, as the run's python did
    why = gpu.unavailable_reason()
    if why is None:  # a machine with a GPU and nvidia-ml-py: the limit is enforced
        assert warnings == []
    else:
        assert warnings == [f"gpu_mem_limit_mb (512 MiB) cannot be enforced on this host: {why}"]
