"""`python -m runner preflight --json`: can this host run the preset? pass / warn / fail.

Each check answers with a status, what was found and a one-line hint. The answer also names
the compute profile the hardware suggests (cpu, gpu_low, gpu_high). Standard library only,
plus NVML through runner.gpu when it is there.
"""

from __future__ import annotations

import argparse
import importlib.util
import netrc
import os
import shutil
from pathlib import Path
from typing import Any

from runner import gpu

GIB = 2**30
SCHEMA = "ops.preflight/1"
GPU_HIGH_BYTES = 40 * GIB


def add_verb(sub: Any) -> None:
    p = sub.add_parser("preflight", help="checks before a launch: GPU, RAM, disk, deps, data")
    p.add_argument("--json", action="store_true", help="accepted for symmetry; output is JSON")
    p.add_argument("--outputs-root", type=Path, required=True)
    p.add_argument("--module", dest="modules", action="append", default=[],
                   help="a Python package the workload needs (repeatable)")
    p.add_argument("--dataset", type=Path, default=None)
    p.add_argument("--wandb", action="store_true", help="W&B logging is on: need credentials")
    p.add_argument("--min-disk-gb", type=float, default=1.0)
    p.add_argument("--launcher", choices=("tmux", "slurm"), default="tmux",
                   help="what starts runs here: tmux is then required, or sbatch")


def answer(args: argparse.Namespace) -> dict[str, Any]:
    devices = _gpu_devices()
    checks = [_gpu_check(devices), *_gpu_free(devices), _ram(), _cpus(),
              _disk(args.outputs_root, args.min_disk_gb), _swap(), _environment(),
              *_launcher(args.launcher),
              _tool("git", "warn", "without git, code is sent as an archive (slower)"),
              *(_module(m) for m in args.modules)]
    if args.dataset is not None:
        checks.append(_dataset(args.dataset))
    if args.wandb:
        checks.append(_wandb())
    worst = "fail" if any(c["status"] == "fail" for c in checks) else \
        "warn" if any(c["status"] == "warn" for c in checks) else "pass"
    return {"schema": SCHEMA, "status": worst, "profile": _profile(devices),
            "gpu_model": devices[0]["name"] if devices else "cpu", "checks": checks}


def _check(name: str, status: str, detail: str, hint: str | None = None) -> dict[str, Any]:
    return {"name": name, "status": status, "detail": detail, "hint": hint}


def _gpu_devices() -> list[dict[str, Any]]:
    found = gpu.devices()
    nvml = gpu._nvml()  # the same lazily loaded module
    if nvml is None:
        return found
    for dev in found:
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(dev["index"])
            dev["memory_free_bytes"] = int(nvml.nvmlDeviceGetMemoryInfo(handle).free)
        except Exception:  # noqa: BLE001 - free memory unknown on this driver
            dev["memory_free_bytes"] = None
    return found


def _gpu_check(devices: list[dict[str, Any]]) -> dict[str, Any]:
    if not devices:
        why = gpu.unavailable_reason()  # e.g. nvidia-ml-py missing: say what that costs
        return _check("gpu", "warn", "no GPU visible through NVML"
                      + (f" ({why}; gpu_mem_limit_mb cannot be enforced)" if why else ""),
                      "the run uses the CPU; rent a GPU pod (`ops pod up`) for real training")
    names = ", ".join(sorted({d["name"] for d in devices}))
    return _check("gpu", "pass", f"{len(devices)}x {names}, driver {gpu.driver_version()}")


def _gpu_free(devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for dev in devices:
        free, total = dev.get("memory_free_bytes"), dev["memory_total_bytes"]
        if free is None:
            continue
        status = "pass" if free >= 0.8 * total else "warn" if free >= 0.2 * total else "fail"
        out.append(_check(f"gpu{dev['index']}_memory", status,
                          f"{free / GIB:.1f} of {total / GIB:.1f} GiB free",
                          None if status == "pass" else
                          "another process holds GPU memory: `nvidia-smi` shows which"))
    return out


def _cgroup_value(*paths: str) -> str | None:
    for path in paths:
        try:
            return Path(path).read_text().strip()
        except OSError:
            continue
    return None


def _meminfo() -> dict[str, int]:
    info: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            if rest.split():
                info[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return info


def _ram() -> dict[str, Any]:
    total = _meminfo().get("MemTotal", 0)
    limit = _cgroup_value("/sys/fs/cgroup/memory.max",
                          "/sys/fs/cgroup/memory/memory.limit_in_bytes")
    if limit and limit.isdigit() and 0 < int(limit) < total:
        total, where = int(limit), "cgroup limit"
    else:
        where = "machine"
    status = "pass" if total >= 8 * GIB else "warn"
    return _check("ram", status, f"{total / GIB:.1f} GiB ({where})",
                  None if status == "pass" else "small RAM: lower batch size or workers")


def _cpus() -> dict[str, Any]:
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cgroup_value("/sys/fs/cgroup/cpu.max")
    if quota and quota.split()[0].isdigit():
        limit, period = quota.split()[:2]
        count = min(count or 1, max(1, int(int(limit) / int(period))))
    status = "pass" if (count or 1) >= 4 else "warn"
    return _check("cpus", status, f"{count} usable",
                  None if status == "pass" else "few CPUs: data loading may be the bottleneck")


def _disk(root: Path, min_gb: float) -> dict[str, Any]:
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = os.statvfs(probe)
    free = st.f_bavail * st.f_frsize
    status = "fail" if free < min_gb * GIB else "warn" if free < 10 * min_gb * GIB else "pass"
    return _check("disk", status, f"{free / GIB:.2f} GiB free at {probe}",
                  None if status == "pass" else
                  f"free space at the outputs root (need {min_gb:g} GiB): delete old runs or "
                  "checkpoints, or rent a bigger disk")


def _swap() -> dict[str, Any]:
    info = _meminfo()
    used = info.get("SwapTotal", 0) - info.get("SwapFree", 0)
    status = "warn" if used > 256 * 2**20 else "pass"
    return _check("swap", status, f"{used / 2**20:.0f} MiB in use",
                  None if status == "pass" else "the host is swapping: training will crawl")


def environment_kind() -> str:
    env = os.environ
    if env.get("SLURM_JOB_ID"):
        return "slurm"
    if env.get("CI") or env.get("GITHUB_ACTIONS"):
        return "ci"
    if env.get("RUNPOD_POD_ID") or env.get("VAST_CONTAINERLABEL") or env.get("LIUM_POD_ID"):
        return "cloud"
    if Path("/.dockerenv").exists() or "docker" in (_cgroup_value("/proc/1/cgroup") or ""):
        return "docker"
    return "local"


def _environment() -> dict[str, Any]:
    return _check("environment", "pass", environment_kind())


def _tool(name: str, missing: str, hint: str) -> dict[str, Any]:
    path = shutil.which(name)
    return _check(name, "pass", path) if path else _check(name, missing, "not found", hint)


def _launcher(launcher: str) -> list[dict[str, Any]]:
    if launcher == "slurm":
        return [_tool("sbatch", "fail", "this host's runs go through SLURM: sbatch must be on "
                                        "PATH (load the slurm module in your shell profile)")]
    return [_tool("tmux", "fail", "install tmux: runs are launched in a tmux session")]


def _module(name: str) -> dict[str, Any]:
    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        found = False
    return _check(f"module:{name}", "pass" if found else "fail",
                  "importable" if found else "not installed",
                  None if found else f"pip install {name} (in the host's runner venv)")


def _dataset(path: Path) -> dict[str, Any]:
    if path.is_dir() and any(path.iterdir()):
        return _check("dataset", "pass", str(path))
    return _check("dataset", "fail", f"{path} is missing or empty",
                  "put the data there first (`ops data ...`, or copy it to the pod's volume)")


def _wandb() -> dict[str, Any]:
    if os.environ.get("WANDB_API_KEY"):
        return _check("wandb", "pass", "WANDB_API_KEY is set")
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        found = netrc.netrc(str(path)).authenticators("api.wandb.ai") if path.is_file() else None
    except (OSError, netrc.NetrcParseError):
        found = None
    if found:
        return _check("wandb", "pass", f"credentials in {path}")
    return _check("wandb", "fail", "no W&B credentials",
                  "`ops pod up` copies them from your netrc; or `wandb login` on the host")


def _profile(devices: list[dict[str, Any]]) -> str:
    if not devices:
        return "cpu"
    return "gpu_high" if max(d["memory_total_bytes"] for d in devices) >= GPU_HIGH_BYTES \
        else "gpu_low"
