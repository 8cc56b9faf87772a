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
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ops.errors import HostError, UsageError
from ops.hosts.local import LocalHost
from ops.services import runs
from runner import contract

CHUNK = 1 << 16
ACCEPT_POLL_S = 0.5
PUMP_POLL_S = 0.5
JOIN_S = 3.0
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
    if not hasattr(type(target.host), "transport"):
        raise HostError(f"host {target.host.name!r} has no SSH transport to forward through")
    host: Any = target.host
    host.transport  # noqa: B018 - connect now: a host that cannot be reached fails before the URL
    fwd = Forwarder(lambda: host.transport, service.port, local_port or 0)
    try:
        say(f"http://127.0.0.1:{fwd.local_port}/  ->  {target.host.name}:{service.port} "
            "(Ctrl-C to stop)")
        with contextlib.suppress(KeyboardInterrupt):
            fwd.serve_forever()
    finally:  # also on a second Ctrl-C: no thread of ours may outlive the interpreter
        fwd.close(wait_s=0)
        target.close()  # wakes a thread still waiting on paramiko (a channel being opened)
        fwd.join()


class Forwarder:
    """127.0.0.1:local_port on this machine -> 127.0.0.1:remote_port on the SSH host.

    Each connection is pumped by a thread of its own. `close` ends them all and waits for
    them: a thread left running at interpreter exit can be stopped while it holds one of
    paramiko's locks, which the exiting interpreter may then wait on for ever (the hang after
    Ctrl-C under load). `join_transports`, after the connection is closed, waits for paramiko's
    reader thread the same way."""

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
        # accept wakes up now and then: the main thread sees Ctrl-C even when the kernel
        # hands the signal to another thread (which cannot interrupt a blocking accept)
        self.server.settimeout(ACCEPT_POLL_S)
        self.local_port: int = self.server.getsockname()[1]
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._live: dict[threading.Thread, socket.socket] = {}
        self._transports: list[Any] = []

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self, wait_s: float = JOIN_S) -> None:
        """Stop accepting, end every forwarded connection, wait (bounded) for their threads."""
        self._closed.set()
        self.server.close()
        with self._lock:
            clients = list(self._live.values())
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)  # wakes the pump's select
        self.join(wait_s, transports=False)

    def join(self, wait_s: float = JOIN_S, *, transports: bool = True) -> None:
        """Wait, at most wait_s in all, for the connections' threads and, once the SSH
        connection is closed, for paramiko's reader thread of each connection used."""
        deadline = time.monotonic() + wait_s
        with self._lock:
            threads: list[Any] = list(self._live)
        if transports:
            threads += [t for t in self._transports if isinstance(t, threading.Thread)]
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def live_connections(self) -> int:
        with self._lock:
            return sum(thread.is_alive() for thread in self._live)

    def serve_forever(self) -> None:
        while not self._closed.is_set():
            try:
                client, peer = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            thread = threading.Thread(target=self._handle, args=(client, peer), daemon=True)
            with self._lock:
                if self._closed.is_set():
                    client.close()
                    return
                self._live[thread] = client
            thread.start()

    def _open_channel(self, peer: tuple[str, int]) -> Any:
        with self._lock:  # one connect at a time: two threads never reconnect at once
            transport = self.transport()
            if transport not in self._transports:
                self._transports.append(transport)
        return transport.open_channel("direct-tcpip", ("127.0.0.1", self.remote_port), peer,
                                      timeout=15)

    def _handle(self, client: socket.socket, peer: tuple[str, int]) -> None:
        try:
            channel = self._open_channel(peer)
        except Exception:  # noqa: BLE001 - one failed connection must not end the forward
            self._forget(client)
            return
        try:
            pump(client, channel, self._closed)
        finally:
            with contextlib.suppress(Exception):  # a channel of a closed connection
                channel.close()
            self._forget(client)

    def _forget(self, client: socket.socket) -> None:
        client.close()
        with self._lock:
            self._live.pop(threading.current_thread(), None)


def pump(client: socket.socket, channel: Any, stop: threading.Event | None = None) -> None:
    """Copy bytes both ways until either side closes (or `stop` is set)."""
    while stop is None or not stop.is_set():
        readable, _, _ = select.select([client, channel], [], [], PUMP_POLL_S)
        for source, sink in ((client, channel), (channel, client)):
            if source in readable:
                try:
                    data = source.recv(CHUNK)
                    if not data:
                        return
                    sink.sendall(data)
                except OSError:
                    return
