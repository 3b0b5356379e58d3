"""A stack that just stopped leaves its ports free at once for the next ``make run``."""

from __future__ import annotations

import socket

import pytest

from local.aws import PortInUse, ensure_port_free


def _listener() -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the stack's servers bind
    server.bind(("127.0.0.1", 0))
    server.listen()
    return server


def test_a_listening_port_is_in_use() -> None:
    with _listener() as server:
        port = server.getsockname()[1]
        with pytest.raises(PortInUse) as raised:
            ensure_port_free("127.0.0.1", port, "API gateway")
        assert (raised.value.port, raised.value.what) == (port, "API gateway")


def test_a_port_whose_last_connection_lingers_in_time_wait_is_free() -> None:
    server = _listener()
    port = server.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port)) as client:
        accepted, _ = server.accept()
        accepted.close()  # the server closes first, as an HTTP server does: its side is in TIME_WAIT
        client.recv(1)
    server.close()
    ensure_port_free("127.0.0.1", port, "API gateway")  # no PortInUse for about a minute
