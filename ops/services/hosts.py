"""From a host name to a ready Target: local by default, or SSH with the runner in place."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ops.config.loader import LoadedConfig
from ops.config.models import HostConfig

if TYPE_CHECKING:
    from ops.hosts.ssh import SSHHost
from ops.hosts.local import LocalHost
from ops.services.runs import Target
from ops.services.spec import HostPaths, local_outputs_root
from runner import contract

LOCAL_NAMES = ("local",)


def host_name(loaded: LoadedConfig, host: str | None) -> str:
    return host or loaded.config.project.default_host or "local"


def open_target(loaded: LoadedConfig, host: str | None = None, *,
                accept_new: bool = False, need_runner: bool = True) -> Target:
    name = host_name(loaded, host)
    if name in LOCAL_NAMES:
        home = os.path.expanduser(loaded.config.project.ops_home)
        return Target(LocalHost(), HostPaths(str(local_outputs_root(loaded)), home))
    return _ssh_target(loaded, name, accept_new, need_runner)


def _ssh_target(loaded: LoadedConfig, name: str, accept_new: bool,
                need_runner: bool) -> Target:
    # paramiko is imported only when a remote host is used
    from ops.hosts.ssh import open_host

    config = loaded.config.hosts.get(name) or HostConfig(address=name)
    ssh = open_host(name, repo_root=loaded.repo_root, hosts=loaded.config.hosts,
                    accept_new=accept_new, python=config.python,
                    retry_for=config.connect_retry_sec)
    try:
        ops_home = ssh.expand(config.ops_home or loaded.config.project.ops_home)
        outputs = ssh.expand(config.outputs_dir or loaded.config.project.outputs_dir())
        if need_runner:
            _ready_runner(loaded, ssh, name, ops_home, config.python)
    except BaseException:
        ssh.close()
        raise
    return Target(ssh, HostPaths(outputs, ops_home))


RUNNERS_SEEN = ".ops/runners.json"  # per host and build: the runner command that last worked


def _ready_runner(loaded: LoadedConfig, ssh: SSHHost, name: str, ops_home: str,
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
        latest = contract.read_json_or_none(seen_path) or {}
        latest[key] = list(info.argv)
        seen_path.parent.mkdir(parents=True, exist_ok=True)
        contract.atomic_write_json(seen_path, latest)

    if isinstance(seen.get(key), list):
        ssh.runner_command = tuple(seen[key])
        ssh.runner_recheck = full_check
    else:
        full_check()
