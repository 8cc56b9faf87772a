"""From a host name to a ready Target: local by default, or SSH with the runner in place."""

from __future__ import annotations

import os

from ops.config.loader import LoadedConfig
from ops.config.models import HostConfig
from ops.hosts.local import LocalHost
from ops.services.runs import Target
from ops.services.spec import HostPaths, local_outputs_root

LOCAL_NAMES = ("local", "localhost-direct")


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
    from ops.services.bootstrap import ensure_runner

    config = loaded.config.hosts.get(name) or HostConfig(address=name)
    ssh = open_host(name, repo_root=loaded.repo_root, hosts=loaded.config.hosts,
                    accept_new=accept_new, python=config.python,
                    retry_for=config.connect_retry_sec)
    try:
        ops_home = ssh.expand(config.ops_home or loaded.config.project.ops_home)
        outputs = ssh.expand(config.outputs_dir or loaded.config.project.outputs_dir())
        if need_runner:
            ensure_runner(ssh, ops_home, python=config.python)
    except BaseException:
        ssh.close()
        raise
    return Target(ssh, HostPaths(outputs, ops_home))
