"""Making a pod ready (idempotent) and scrubbing it before it is destroyed.

Bootstrap: ops home and outputs root, the runner (ops.services.bootstrap), and W&B
credentials from the local netrc into the pod's netrc over SFTP: the file is created 0600
before its first byte, and the key is never on a command line or in an environment.
Scrub: the W&B entry leaves the pod's netrc (the file goes when nothing else is in it) and
the secret store under the ops home is removed.
"""

from __future__ import annotations

import netrc
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ops.config.loader import LoadedConfig
from ops.errors import HostError, NotFoundError, OpsError, UsageError
from ops.pods.providers import table
from ops.pods.state import PodRecord
from ops.services.bootstrap import (
    REQUIREMENTS,
    RunnerBuild,
    RunnerInfo,
    ensure_runner,
    local_build,
)
from ops.services.target import remember_runner

if TYPE_CHECKING:  # paramiko is imported only when a pod is reached
    from ops.hosts.ssh import SSHHost

WANDB_MACHINE = "api.wandb.ai"
# A pod also gets NVML's bindings, without which gpu_mem_limit_mb is never enforced there. Not
# installable (a pod without a package index) is a warning, not a failed bootstrap.
NVML_REQUIREMENT = {"pynvml": "nvidia-ml-py>=12.535"}


@dataclass(frozen=True)
class Bootstrapped:
    ops_home: str
    outputs_dir: str
    actions: list[str]


def bootstrap(loaded: LoadedConfig, host: SSHHost, record: PodRecord) -> Bootstrapped:
    ops_home = host.expand(record.ops_home or loaded.config.project.ops_home)
    outputs = host.expand(record.outputs_dir or loaded.config.project.outputs_dir())
    host.makedirs(ops_home)
    host.makedirs(outputs)
    actions = [f"dirs {ops_home} {outputs}"]
    build = local_build()
    info, nvml_warning = _runner_with_nvml(host, ops_home, record.python, build)
    remember_runner(loaded.repo_root, f"{record.name}|{ops_home}|{build.build_id}",
                    list(info.argv))
    actions.append(f"runner {info.build_id}" + (" (venv)" if info.venv else ""))
    actions += [a for a in info.actions if a.startswith("installed")]
    if nvml_warning:
        actions.append(nvml_warning)
    storage = loaded.config.storage
    for cache in (storage.hf_home, storage.datasets_root):
        if cache:
            host.makedirs(host.expand(cache), mode=0o755)
            actions.append(f"cache {cache}")
    timer = _start_ttl_timer(host, record)
    if timer:
        actions.append(timer)
    creds = local_wandb_entry() or creds_from_script(loaded)
    if creds is not None:
        _write_netrc(host, record.netrc_path, creds)
        actions.append(f"W&B credentials in {record.netrc_path} (0600)")
    return Bootstrapped(ops_home, outputs, actions)


def _runner_with_nvml(host: SSHHost, ops_home: str, python: str,
                      build: RunnerBuild) -> tuple[RunnerInfo, str | None]:
    """The runner with nvidia-ml-py beside it; without it (and a warning) when pip fails."""
    try:
        return ensure_runner(host, ops_home, python=python, build=build,
                             requirements={**REQUIREMENTS, **NVML_REQUIREMENT}), None
    except HostError as exc:
        info = ensure_runner(host, ops_home, python=python, build=build)  # else: fatal
        return info, (f"no nvidia-ml-py ({exc.message}): gpu_mem_limit_mb cannot be enforced "
                      "on this pod")


def _start_ttl_timer(host: SSHHost, record: PodRecord) -> str | None:
    """A pod-side timer for a provider without a TTL of its own; started once per pod."""
    spec = table(record.provider)
    if record.ttl_s is None or spec.ttl_timer is None:
        return None
    left = max(1, int(record.ttl_s - record.age_s()))
    marker = f"{host.expand(record.ops_home or '~/.pod-ops').rstrip('/')}/ttl-timer"
    line = spec.ttl_timer.format(ttl_s=left)
    script = (f"[ -e {shlex.quote(marker)} ] && exit 0; echo {left} > {shlex.quote(marker)}; "
              f"nohup sh -c {shlex.quote(line)} >/dev/null 2>&1 </dev/null &")
    host.exec(["sh", "-c", script], timeout=30)
    return f"self-destruct timer in {left} s"


def local_wandb_entry(path: Path | None = None) -> tuple[str, str] | None:
    """(login, password) of api.wandb.ai in the local netrc, or None."""
    path = path or Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    if not path.is_file():
        return None
    try:
        found = netrc.netrc(str(path)).authenticators(WANDB_MACHINE)
    except (OSError, netrc.NetrcParseError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    if not found or not found[2]:
        return None
    return found[0] or "user", found[2]


def creds_from_script(loaded: LoadedConfig) -> tuple[str, str] | None:
    """The W&B key printed by storage.wandb.ensure_creds_script (run here, no shell)."""
    script = loaded.config.storage.wandb.ensure_creds_script
    if not script:
        return None
    argv = shlex.split(script)
    try:
        done = subprocess.run(argv, cwd=loaded.repo_root, capture_output=True, text=True,
                              timeout=120, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"storage.wandb.ensure_creds_script failed to run: {exc}") from exc
    key = done.stdout.strip().splitlines()[-1].strip() if done.stdout.strip() else ""
    if done.returncode != 0 or not key or any(c.isspace() for c in key):
        raise UsageError("storage.wandb.ensure_creds_script did not print a W&B key",
                         details=[f"exit code {done.returncode}"])  # never its output
    return "user", key


def _remote_entries(host: SSHHost, path: str) -> dict[str, tuple[str, str]]:
    try:
        data = host.read_file(path)
    except NotFoundError:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "netrc"
        fd = os.open(local, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            parsed = netrc.netrc(str(local))
        except netrc.NetrcParseError as exc:
            raise OpsError(f"the pod's {path} cannot be parsed: {exc.msg}") from exc
    return {m: (a[0] or "", a[2] or "") for m, a in parsed.hosts.items()}


def _render(entries: dict[str, tuple[str, str]]) -> bytes:
    lines = [f"machine {m}\n  login {login}\n  password {pw}\n"
             for m, (login, pw) in sorted(entries.items())]
    return "".join(lines).encode()


def _write_netrc(host: SSHHost, path: str, creds: tuple[str, str]) -> None:
    entries = _remote_entries(host, path)
    entries[WANDB_MACHINE] = creds
    host.write_file(path, _render(entries), mode=0o600)


def scrub(host: SSHHost, record: PodRecord) -> None:
    path = host.expand(record.netrc_path)
    entries = _remote_entries(host, path)
    if WANDB_MACHINE in entries:
        del entries[WANDB_MACHINE]
        if entries:
            host.write_file(path, _render(entries), mode=0o600)
        else:
            host.exec(["rm", "-f", "--", path])
    if record.ops_home:
        host.exec(["rm", "-rf", "--", f"{host.expand(record.ops_home).rstrip('/')}/secrets"])
