"""Waiting for a pod: the provider says running with an SSH endpoint, then sshd answers with
its banner, then one command runs (the way SkyPilot waits). Backoff between tries, one
overall deadline."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from ops.errors import HostError
from ops.pods.providers import Observed, ProviderCLI


@dataclass(frozen=True)
class Backoff:
    first_s: float = 0.25
    max_s: float = 10.0
    factor: float = 1.6
    timeout_s: float = 900.0

    def delays(self) -> Callable[[], float]:
        state = {"next": self.first_s}

        def step() -> float:
            delay = state["next"]
            state["next"] = min(self.max_s, delay * self.factor)
            return delay

        return step


class BootFailed(HostError):
    """The provider reports the instance failed or gone while we waited."""


def wait_endpoint(cli: ProviderCLI, instance_id: str, backoff: Backoff,
                  seen: Callable[[Observed], None]) -> Observed:
    """Describe until the instance runs and has an SSH endpoint (the mapping may come late)."""
    deadline = time.monotonic() + backoff.timeout_s
    delay = backoff.delays()
    last: Observed | None = None
    while True:
        last = cli.describe(instance_id)
        seen(last)
        if last.phase in ("failed", "gone"):
            raise BootFailed(f"instance {instance_id} is {last.phase} "
                             f"(provider state {last.raw_state})",
                             details=[last.message] if last.message else ())
        if last.phase == "running" and last.host and last.port:
            return last
        if time.monotonic() >= deadline:
            raise HostError(f"instance {instance_id} not running with an SSH port after "
                            f"{backoff.timeout_s:.0f} s (state {last.raw_state})")
        time.sleep(delay())


def wait_banner(host: str, port: int, backoff: Backoff) -> str:
    """Until sshd on host:port sends its `SSH-` banner; returns it."""
    deadline = time.monotonic() + backoff.timeout_s
    delay = backoff.delays()
    error = ""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=5.0) as sock:
                sock.settimeout(5.0)
                banner = sock.recv(256)
                if banner.startswith(b"SSH-"):
                    return banner.split(b"\r\n")[0].decode(errors="replace")
                error = f"not an SSH banner: {banner[:40]!r}"
        except OSError as exc:
            error = str(exc) or type(exc).__name__
        time.sleep(delay())
    raise HostError(f"no SSH banner from {host}:{port} within {backoff.timeout_s:.0f} s",
                    details=[error] if error else ())
