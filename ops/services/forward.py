"""`ops run open RUN`: reach a service run's port from the laptop.

On the local host the server is already reachable: the URL is printed. On an SSH host a
listening socket on 127.0.0.1 of the laptop forwards each connection through the host's own
SSH transport (a paramiko ``direct-tcpip`` channel to 127.0.0.1:PORT on the host), so the port
never has to be open to the network, until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ops.errors import HostError, UsageError
from ops.hosts.local import LocalHost
from ops.services import runs
from runner import contract

CHUNK = 1 << 16
OPENABLE = ("starting", "serving", "unhealthy")


@dataclass(frozen=True)
class Service:
    run_id: str
    port: int
    health: str
    status: str


def service_of(target: runs.Target, run_id: str) -> Service:
    """The service a run serves; a usage error for a run that is not a live service."""
    spec = runs.show(target, run_id, contract.SPEC)
    block = spec.get("service")
    block = block if isinstance(block, dict) else {}
    port = block.get("port")
    if spec.get("kind") != "service" or not isinstance(port, int) or isinstance(port, bool) \
            or not 1 <= port <= 65535:
        raise UsageError(f"run {run_id!r} is not a service (kind {spec.get('kind')!r})",
                         hint="only runs of a preset of kind service have a port to open")
    status = str(runs.run_status(target, run_id).get("status"))
    if status not in OPENABLE:
        raise UsageError(f"run {run_id!r} is {status}, not serving")
    health = block.get("health") if isinstance(block.get("health"), str) else "/"
    return Service(run_id, port, str(health), status)


def open_service(target: runs.Target, run_id: str, local_port: int | None,
                 say: Callable[[str], None]) -> None:
    """Print the URL of the service; over SSH, forward until interrupted."""
    service = service_of(target, run_id)
    if service.status != "serving":
        say(f"note: {run_id} is {service.status}")
    if isinstance(target.host, LocalHost):
        say(f"http://127.0.0.1:{service.port}/")
        return
    transport = getattr(target.host, "transport", None)
    if transport is None:
        raise HostError(f"host {target.host.name!r} has no SSH transport to forward through")
    with Forwarder(lambda: target.host.transport, service.port,  # type: ignore[attr-defined]
                   local_port or 0) as fwd:
        say(f"http://127.0.0.1:{fwd.local_port}/  ->  {target.host.name}:{service.port} "
            "(Ctrl-C to stop)")
        with contextlib.suppress(KeyboardInterrupt):
            fwd.serve_forever()


class Forwarder:
    """127.0.0.1:local_port on this machine -> 127.0.0.1:remote_port on the SSH host."""

    def __init__(self, transport: Callable[[], Any], remote_port: int, local_port: int = 0):
        self.transport = transport
        self.remote_port = remote_port
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.server.bind(("127.0.0.1", local_port))
        except OSError as exc:
            self.server.close()
            raise UsageError(f"cannot listen on 127.0.0.1:{local_port}: {exc.strerror or exc}",
                             hint="choose another --local-port, or 0 for any free one") from exc
        self.server.listen(16)
        self.local_port: int = self.server.getsockname()[1]
        self._closed = threading.Event()

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        self.server.close()

    def serve_forever(self) -> None:
        while not self._closed.is_set():
            try:
                client, peer = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client, peer), daemon=True).start()

    def _handle(self, client: socket.socket, peer: tuple[str, int]) -> None:
        try:
            channel = self.transport().open_channel(
                "direct-tcpip", ("127.0.0.1", self.remote_port), peer, timeout=15)
        except Exception:  # noqa: BLE001 - one failed connection must not end the forward
            client.close()
            return
        try:
            pump(client, channel)
        finally:
            channel.close()
            client.close()


def pump(client: socket.socket, channel: Any) -> None:
    """Copy bytes both ways until either side closes."""
    while True:
        readable, _, _ = select.select([client, channel], [], [], 1.0)
        for source, sink in ((client, channel), (channel, client)):
            if source in readable:
                try:
                    data = source.recv(CHUNK)
                except OSError:
                    return
                if not data:
                    return
                sink.sendall(data)
