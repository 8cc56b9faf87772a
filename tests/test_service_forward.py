"""The port forward of `ops run open` over a real sshd: it ends its connections when it stops.

A forwarded connection is pumped by a thread; one left running at interpreter exit can be
stopped while it holds a lock of paramiko that the exiting interpreter then waits on for ever
(`ops run open` that did not exit after Ctrl-C on a loaded machine). Stopping the forward ends
every connection it carries, at once, and waits for the threads, paramiko's reader included.
"""

from __future__ import annotations

import os
import signal
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from ops.hosts.ssh import SSHHost
from ops.services.forward import Forwarder

pytestmark = pytest.mark.ssh


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(1024):
            self.request.sendall(data)


@pytest.fixture
def echo_port() -> Iterator[int]:
    """An echo server on 127.0.0.1 of the 'pod' (this machine, reached through sshd)."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _connect(port: int) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(b"ping")
    assert client.recv(16) == b"ping"  # through the forward, sshd and back
    return client


def test_stopping_the_forward_ends_its_connections_and_threads(ssh_host: SSHHost,
                                                              echo_port: int) -> None:
    fwd = Forwarder(lambda: ssh_host.transport, echo_port)
    serving = threading.Thread(target=fwd.serve_forever, daemon=True)
    serving.start()
    clients = [_connect(fwd.local_port) for _ in range(2)]
    started = time.monotonic()
    fwd.close()
    assert time.monotonic() - started < 3.0
    for client in clients:  # each connection ended at once, not left pumping
        client.settimeout(3.0)
        assert client.recv(16) == b""
        client.close()
    assert fwd.live_connections() == 0
    serving.join(2.0)
    assert not serving.is_alive()
    transport = ssh_host.transport
    ssh_host.close()
    fwd.join()
    assert not transport.is_alive()  # paramiko's reader thread is gone before we return


def test_a_closed_forward_refuses_new_connections(ssh_host: SSHHost, echo_port: int) -> None:
    fwd = Forwarder(lambda: ssh_host.transport, echo_port)
    serving = threading.Thread(target=fwd.serve_forever, daemon=True)
    serving.start()
    _connect(fwd.local_port).close()
    fwd.close()
    serving.join(2.0)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", fwd.local_port), timeout=3)


def test_ctrl_c_mid_connection_is_seen_even_when_another_thread_takes_it(
        ssh_host: SSHHost, echo_port: int) -> None:
    """The kernel may hand a process's SIGINT to any thread that does not block it; Python
    then only sets a flag, and a main thread blocked in accept() would never see it."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("Python runs signal handlers in the main thread only")
    fwd = Forwarder(lambda: ssh_host.transport, echo_port)
    held: list[socket.socket] = []

    def interrupt() -> None:  # the one thread that takes SIGINT
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        held.append(_connect(fwd.local_port))  # a connection being forwarded at Ctrl-C
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        helper = threading.Thread(target=interrupt, daemon=True)
        helper.start()
        with pytest.raises(KeyboardInterrupt):
            fwd.serve_forever()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGINT, previous)
        fwd.close()
    held[0].settimeout(3.0)
    assert held[0].recv(16) == b""  # the forwarded connection ended with the forward
    held[0].close()
    assert fwd.live_connections() == 0
