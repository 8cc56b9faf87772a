"""NVML, imported lazily: a pod without nvidia-ml-py or without a GPU gets None, not an error.

`pynvml` is looked up at call time (the import seam: tests put a stand-in in sys.modules), once
per process. Why NVML is not there is kept (`unavailable_reason`), because a run with
`gpu_mem_limit_mb` then cannot have its limit enforced and must say so (`limit_warning`)
instead of never triggering in silence.
"""

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
        except ImportError:
            _state["why"] = "nvidia-ml-py (pynvml) is not installed in the runner's python"
        else:
            try:
                pynvml.nvmlInit()
                mod = pynvml
            except Exception as exc:  # noqa: BLE001 - no driver, no device: both mean "no GPU"
                _state["why"] = f"NVML did not start ({type(exc).__name__}: {exc})"
        _state["mod"] = mod
        return mod


def unavailable_reason() -> str | None:
    """None when NVML answers, else why it does not."""
    if _nvml() is not None:
        return None
    return str(_state.get("why") or "NVML is not available")


def limit_warning(limit_bytes: int | None) -> str | None:
    """The warning a run with a GPU memory limit gets when this host cannot measure it."""
    if not limit_bytes:
        return None
    why = unavailable_reason()
    if why is None:
        return None
    return (f"gpu_mem_limit_mb ({limit_bytes / 2**20:.0f} MiB) cannot be enforced on this host: "
            f"{why}")


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
