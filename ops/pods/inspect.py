"""`ops pod list` and `ops pod status`: what ops recorded, and what the pod says now."""

from __future__ import annotations

import json
import os
import shlex
from collections import Counter
from typing import Any

from ops.config.loader import LoadedConfig
from ops.errors import OpsError
from ops.hosts.base import call_runner
from ops.pods.providers import ProviderCLI, table
from ops.pods.state import PodRecord, PodStore
from ops.services.target import open_pod_host, ready_runner

# one round trip: memory, load, disk at the outputs root, GPUs through nvidia-smi if present
_PROBE = r"""
import json, os, shutil, subprocess, sys
out = {"load": os.getloadavg()}
try:
    mem = dict(l.split(":", 1) for l in open("/proc/meminfo"))
    out["ram_total_mb"] = int(mem["MemTotal"].split()[0]) // 1024
    out["ram_available_mb"] = int(mem["MemAvailable"].split()[0]) // 1024
except (OSError, KeyError, ValueError):
    pass
root = sys.argv[1]
while root and not os.path.exists(root):
    root = os.path.dirname(root)
st = os.statvfs(root or "/")
out["disk_free_gb"] = round(st.f_bavail * st.f_frsize / 2**30, 2)
out["gpus"] = []
if shutil.which("nvidia-smi"):
    q = "name,memory.total,memory.used,utilization.gpu"
    r = subprocess.run(["nvidia-smi", "--query-gpu=" + q, "--format=csv,noheader,nounits"],
                       capture_output=True, text=True)
    for line in r.stdout.splitlines():
        f = [x.strip() for x in line.split(",")]
        if len(f) == 4:
            out["gpus"].append({"name": f[0], "memory_total_mb": f[1],
                                "memory_used_mb": f[2], "util_pct": f[3]})
print(json.dumps(out))
"""


def list_rows(loaded: LoadedConfig) -> list[dict[str, Any]]:
    return [row(p) for p in sorted(PodStore(loaded.repo_root).all(), key=lambda p: p.name)]


def row(pod: PodRecord) -> dict[str, Any]:
    return {"name": pod.name, "provider": pod.provider, "state": pod.state,
            "gpu": f"{pod.gpu_count}x {pod.gpu}" if pod.gpu else None,
            "price_per_hour": pod.price_per_hour, "cost_so_far": pod.cost_so_far(),
            "age_s": round(pod.age_s()), "ttl_left_s": _round(pod.ttl_left_s()),
            "address": pod.address, "instance_id": pod.instance_id, "label": pod.label,
            "message": pod.message}


def _round(value: float | None) -> int | None:
    return None if value is None else round(value)


def pod_status(loaded: LoadedConfig, name: str) -> dict[str, Any]:
    store = PodStore(loaded.repo_root)
    pod = store.get(name)
    doc: dict[str, Any] = {"schema": "ops.pod_status/1", **row(pod)}
    if pod.provider != "ssh" and pod.instance_id and pod.state != "gone":
        try:
            seen = ProviderCLI(table(pod.provider)).describe(pod.instance_id)
            doc["provider_state"] = {"phase": seen.phase, "raw": seen.raw_state}
        except OpsError as exc:
            doc["provider_state"] = {"error": exc.message}
    doc["reachable"] = False
    if pod.address is None or pod.state == "gone":
        return doc
    try:
        host = open_pod_host(store.known_hosts(name), pod, accept_new=False, retry_for=5.0)
    except OpsError as exc:
        doc["error"] = exc.message
        return doc
    try:
        outputs = host.expand(pod.outputs_dir or loaded.config.project.outputs_dir())
        probe = host.exec([pod.python, "-c", _PROBE, outputs], timeout=60)
        doc["reachable"] = True
        doc["machine"] = json.loads(probe.stdout.strip().splitlines()[-1])
        doc["runs"] = _run_counts(loaded, host, pod, outputs)
    except (OpsError, ValueError, IndexError) as exc:
        doc["error"] = getattr(exc, "message", str(exc))
    finally:
        host.close()
    return doc


def _run_counts(loaded: LoadedConfig, host: Any, pod: PodRecord,
                outputs: str) -> dict[str, int]:
    ops_home = host.expand(pod.ops_home or loaded.config.project.ops_home)
    ready_runner(loaded, host, pod.name, ops_home, pod.python)
    answer = call_runner(host, ["status", outputs])
    return dict(Counter(str(r.get("status")) for r in answer.get("runs") or []
                        if isinstance(r, dict)))


def ssh_argv(loaded: LoadedConfig, name: str, command: tuple[str, ...]) -> list[str]:
    """The system ssh on a pod, with the pod's own known_hosts (never the user's config)."""
    store = PodStore(loaded.repo_root)
    pod = store.get(name)
    if pod.address is None:
        raise OpsError(f"pod {name!r} has no SSH address (state {pod.state})")
    argv = ["ssh", "-F", "/dev/null", "-p", str(pod.port),
            "-o", f"UserKnownHostsFile={store.known_hosts(name)}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes"]
    if pod.identity_file:
        argv += ["-i", pod.identity_file, "-o", "IdentitiesOnly=yes"]
    argv.append(f"{pod.user}@{pod.host}")
    if command:
        argv += ["--", shlex.join(command)]
    return argv


def exec_ssh(argv: list[str]) -> None:
    os.execvp(argv[0], argv)  # noqa: S606 - the user's own ssh, argv built above
