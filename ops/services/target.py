"""One place that turns a host name into a Target: where commands run and where runs live.

A name is, in this order: `local` (this machine); a host from project.json `hosts`; a pod
from `.ops/pods.json` (reached with its own known_hosts file, trusted on first use by
`ops pod up`); else an ~/.ssh/config alias or `user@host[:port]`. `ops/hosts/` only moves
bytes; this module decides which host, which paths and which host keys; which outputs root
each host has is ops.services.outputs_root's rule.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ops.config.loader import LoadedConfig
from ops.config.settings import DEFAULT_PYTHON
from ops.errors import UsageError
from ops.hosts.base import Host
from ops.hosts.local import LocalHost
from ops.services.outputs_root import earlier_runs_note, ensure_local_outputs_root, remote_default
from ops.services.runs import Target
from ops.services.spec import HostPaths
from runner import contract

if TYPE_CHECKING:
    from ops.hosts.ssh import SSHHost
    from ops.pods.state import PodRecord
    from ops.services.sync import SyncHost

LOCAL_NAMES = ("local",)
RUNNERS_SEEN = ".ops/runners.json"  # per host and build: the runner command that last worked


class Resolved(NamedTuple):
    """What a name means before anything is connected."""

    name: str
    kind: str  # local, host, pod, ssh
    python: str = "python3"
    ops_home: str | None = None
    outputs_dir: str | None = None
    retry_for: float = 60.0
    pod: PodRecord | None = None


class _Address(NamedTuple):
    """A project.json host as ssh_config.resolve_target reads it (HasAddress)."""

    address: str


def host_name(loaded: LoadedConfig, host: str | None) -> str:
    return host or loaded.setting("project", "default_host") or "local"


def resolve(loaded: LoadedConfig, host: str | None) -> Resolved:
    name = host_name(loaded, host)
    if name in LOCAL_NAMES:
        return Resolved(name, "local")
    config = loaded.setting("hosts").get(name)
    if config is not None:  # read from the config's dump: finding a host builds no models
        return Resolved(name, "host", config["python"], config["ops_home"],
                        config["outputs_dir"], config["connect_retry_sec"])
    from ops.pods.state import PodStore  # a host of project.json needs no pod record

    pod = PodStore(loaded.repo_root).find(name)
    if pod is not None:
        if pod.address is None or pod.state in ("failed", "gone"):
            raise UsageError(f"pod {name!r} is {pod.state} and has no SSH address",
                             hint="`ops pod status` says more; `ops pod up` makes a new one")
        return Resolved(name, "pod", pod.python, pod.ops_home, pod.outputs_dir, 30.0, pod)
    return Resolved(name, "ssh", DEFAULT_PYTHON)


def open_target(loaded: LoadedConfig, host: str | None = None, *,
                accept_new: bool = False, need_runner: bool = True) -> Target:
    where = resolve(loaded, host)
    if where.kind == "local":
        home = os.path.expanduser(loaded.setting("project", "ops_home"))
        return Target(LocalHost(), HostPaths(str(ensure_local_outputs_root(loaded)), home))
    ssh = _open_ssh(loaded, where, accept_new)
    try:
        ops_home = ssh.expand(where.ops_home or loaded.setting("project", "ops_home"))
        outputs = ssh.expand(where.outputs_dir or remote_default(loaded))
        if need_runner:
            ready_runner(loaded, ssh, where.name, ops_home, where.python)
    except BaseException:
        ssh.close()
        raise
    return Target(ssh, HostPaths(outputs, ops_home))


def outputs_note(loaded: LoadedConfig, target: Target) -> str | None:
    """A line for the user about where the target's runs are: on host `local`, where earlier
    runs of this project went under the old rule, when that place holds some; else None."""
    return earlier_runs_note(loaded) if isinstance(target.host, LocalHost) else None


def _open_ssh(loaded: LoadedConfig, where: Resolved, accept_new: bool) -> SSHHost:
    # paramiko is imported only when a remote host is used
    from ops.hosts.ssh import open_host

    if where.pod is not None:
        from ops.pods.state import PodStore

        return open_pod_host(PodStore(loaded.repo_root).known_hosts(where.name), where.pod,
                             accept_new=False, retry_for=where.retry_for)
    hosts = {name: _Address(host["address"]) for name, host in loaded.setting("hosts").items()}
    return open_host(where.name, repo_root=loaded.repo_root, hosts=hosts,
                     accept_new=accept_new, python=where.python, retry_for=where.retry_for)


def open_pod_host(known_hosts: Path, pod: PodRecord, *, accept_new: bool,
                  retry_for: float) -> SSHHost:
    """A pod's SSH host: its own known_hosts file (trust on first use only when `ops pod up`
    says so), its key, no ~/.ssh/config in the way."""
    from ops.hosts.known_hosts import KnownHosts
    from ops.hosts.ssh import ConnectPolicy, SSHHost
    from ops.hosts.ssh_config import SSHTarget

    if pod.host is None or pod.port is None:
        raise UsageError(f"pod {pod.name!r} has no SSH address yet")
    ssh_target = SSHTarget(name=pod.name, hostname=pod.host, port=pod.port, user=pod.user,
                           identity_files=(pod.identity_file,) if pod.identity_file else (),
                           identities_only=bool(pod.identity_file))
    known = KnownHosts(known_hosts, accept_new=accept_new, user_files=())
    return SSHHost(ssh_target, known, connect=ConnectPolicy(retry_for=retry_for),
                   python=pod.python, name=pod.name)


def file_host(host: Host) -> SyncHost:
    """The target's host, as a host files can be uploaded to (LocalHost and SSHHost are)."""
    from ops.services.sync import SyncHost

    if not isinstance(host, SyncHost):
        raise UsageError(f"host {host.name} cannot receive files")
    return host


def ready_runner(loaded: LoadedConfig, ssh: SSHHost, name: str, ops_home: str,
                  python: str) -> None:
    """Point the host at its runner. A host where this exact build (a content hash, renamed
    into place only when complete) was already checked is trusted without a probe; if that
    runner turns out to be gone, the first runner call checks the host fully and retries."""
    from ops.services.bootstrap import ensure_runner, local_build

    build = local_build()
    key = f"{name}|{ops_home}|{build.build_id}"
    seen_path = loaded.repo_root / RUNNERS_SEEN
    seen = contract.read_json_or_none(seen_path) or {}

    def full_check() -> None:
        info = ensure_runner(ssh, ops_home, python=python, build=build)
        remember_runner(loaded.repo_root, key, list(info.argv))

    if isinstance(seen.get(key), list):
        ssh.runner_command = tuple(seen[key])
        ssh.runner_recheck = full_check
    else:
        full_check()


def remember_runner(repo_root: Path, key: str, argv: list[str]) -> None:
    seen_path = repo_root / RUNNERS_SEEN
    latest = contract.read_json_or_none(seen_path) or {}
    latest[key] = argv
    seen_path.parent.mkdir(parents=True, exist_ok=True)
    contract.atomic_write_json(seen_path, latest)


def forget_runner(repo_root: Path, name: str) -> None:
    """Drop what was remembered about a host's runner and code trees (a destroyed pod's name
    may return)."""
    from ops.services import synced

    synced.forget(repo_root, name)
    seen_path = repo_root / RUNNERS_SEEN
    seen = contract.read_json_or_none(seen_path)
    if seen:
        kept = {k: v for k, v in seen.items() if not k.startswith(f"{name}|")}
        contract.atomic_write_json(seen_path, kept)
