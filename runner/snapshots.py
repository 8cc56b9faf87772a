"""What the run ran on: the environment snapshot and the dataset manifest.

Both are taken at start, in a thread beside the running workload: neither may delay it, and
torch is probed in a child interpreter so that the wrapper never carries torch's memory, and
only for a CUDA or ROCm build: a CPU build's answer is read from torch/version.py (importing torch
costs seconds of CPU, half a minute on a loaded machine, which every short run would wait for).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil

from runner import contract, gpu

HASH_BUDGET_BYTES = 4 * 2**30  # files past this running total are listed with sha256 null
_TORCH_PROBE = (
    "import json, torch\n"
    "cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None\n"
    "print(json.dumps({'version': torch.__version__, 'cuda': torch.version.cuda,"
    " 'cudnn': cudnn, 'cuda_available': torch.cuda.is_available()}))\n"
)


def env_kind() -> str:
    if os.environ.get("CI") or os.environ.get("GITHUB_ACTIONS"):
        return "ci"
    if Path("/.dockerenv").exists() or Path("/run/.containerenv").exists():
        return "docker"
    if any(os.environ.get(k) for k in ("RUNPOD_POD_ID", "VAST_CONTAINERLABEL", "LIUM_POD_ID")):
        return "cloud"
    return "local"


def packages() -> dict[str, Any]:
    names = sorted(
        {f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()
         if d.metadata["Name"]},
        key=str.lower,
    )
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()
    return {"list": names, "sha256": digest}


_BUILD_LINE = re.compile(r"^(__version__|cuda|hip)\s*(?::[^=]*)?=\s*(.+)$")


def cpu_torch_info(version_file: Path) -> dict[str, Any] | None:
    """What the probe would say of a CPU build of torch, from its version.py (literals its
    build writes); None for a CUDA or ROCm build, or a file that does not read as expected."""
    try:
        text = version_file.read_text()[:8192]
    except (OSError, UnicodeDecodeError):
        return None
    values: dict[str, Any] = {}
    for line in text.splitlines():
        match = _BUILD_LINE.match(line.strip())
        if match:
            try:
                values[match[1]] = ast.literal_eval(match[2].strip())
            except (ValueError, SyntaxError):
                return None
    if not isinstance(values.get("__version__"), str) or "cuda" not in values:
        return None
    if values["cuda"] is not None or values.get("hip") is not None:
        return None
    return {"version": values["__version__"], "cuda": None, "cudnn": None,
            "cuda_available": False}


def torch_info(python: str = sys.executable) -> dict[str, Any] | None:
    spec = importlib.util.find_spec("torch")
    if spec is None:
        return None
    for location in spec.submodule_search_locations or []:
        if python == sys.executable and (found := cpu_torch_info(Path(location) / "version.py")):
            return found
    try:
        out = subprocess.run([python, "-c", _TORCH_PROBE], capture_output=True, text=True,
                             timeout=120, check=True, env={"PATH": os.environ.get("PATH", "")})
        info: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return info
    except (subprocess.SubprocessError, ValueError, IndexError, OSError) as exc:
        return {"error": str(exc)[:200]}


def env_snapshot(run_id: str, env_names: Iterable[str]) -> dict[str, Any]:
    return {
        "schema": contract.schema_tag("env_snapshot"),
        "run_id": run_id,
        "captured_at": contract.iso(),
        "python": {"version": platform.python_version(), "executable": sys.executable,
                   "implementation": platform.python_implementation()},
        "platform": {"system": platform.system(), "release": platform.release(),
                     "machine": platform.machine()},
        "env_kind": env_kind(),
        "cpu_count": os.cpu_count(),
        "memory_total_bytes": psutil.virtual_memory().total,
        "packages": packages(),
        "torch": torch_info(),
        "driver": gpu.driver_version(),
        "gpus": gpu.devices(),
        "env_names": sorted(env_names),
    }


def dataset_manifest(run_id: str, name: str, root: Path,
                     budget: int = HASH_BUDGET_BYTES) -> dict[str, Any]:
    files: list[dict[str, Any]] = []
    hashed_bytes = 0
    total = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest = None
        if hashed_bytes + stat.st_size <= budget:
            digest = contract.sha256_file(path)
            hashed_bytes += stat.st_size
        total += stat.st_size
        files.append({"path": path.relative_to(root).as_posix(), "size": stat.st_size,
                      "mtime": contract.iso(stat.st_mtime), "sha256": digest})
    return {
        "schema": contract.schema_tag("dataset_manifest"),
        "run_id": run_id,
        "name": name,
        "root": str(root),
        "created_at": contract.iso(),
        "hash_algorithm": "sha256",
        "files": files,
        "totals": {"files": len(files), "bytes": total,
                   "hashed": sum(1 for f in files if f["sha256"])},
    }
