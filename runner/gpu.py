"""NVML, imported lazily: a pod without nvidia-ml-py or without a GPU gets None, not an error."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from typing import Any

_lock = threading.Lock()
_state: dict[str, Any] = {}


def _nvml() -> Any | None:
    with _lock:
        if "mod" in _state:
            return _state["mod"]
        mod: Any | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            mod = pynvml
        except Exception:  # noqa: BLE001 - no library, no driver, no device: all mean "no GPU"
            mod = None
        _state["mod"] = mod
        return mod


def devices() -> list[dict[str, Any]]:
    nvml = _nvml()
    if nvml is None:
        return []
    found = []
    with contextlib.suppress(Exception):
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            found.append({
                "index": index,
                "name": _text(nvml.nvmlDeviceGetName(handle)),
                "memory_total_bytes": int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                "uuid": _text(nvml.nvmlDeviceGetUUID(handle)),
            })
    return found


def driver_version() -> str | None:
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        return _text(nvml.nvmlSystemGetDriverVersion())
    except Exception:  # noqa: BLE001 - report an unknown driver rather than fail a snapshot
        return None


def process_memory(pids: Iterable[int]) -> int | None:
    """GPU memory used by these processes over all devices; None when NVML cannot tell."""
    nvml = _nvml()
    if nvml is None:
        return None
    wanted = set(pids)
    total = 0
    try:
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid in wanted and proc.usedGpuMemory is not None:
                    total += int(proc.usedGpuMemory)
    except Exception:  # noqa: BLE001 - per-process accounting is unsupported on some drivers
        return None
    return total


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
