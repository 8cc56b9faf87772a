"""Transports: every piece of host work goes through a Host (LocalHost now, SSHHost next)."""

from ops.hosts.base import ExecResult, Host, HostCommandError
from ops.hosts.local import LocalHost

__all__ = ["ExecResult", "Host", "HostCommandError", "LocalHost"]
