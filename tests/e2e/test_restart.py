"""``make run`` right after a stack stopped starts at once on the same ports (no "already in use")."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from local.launch import free_ports
from tests.e2e.conftest import SEED, SEED_USERS, running_stack

pytestmark = pytest.mark.e2e


def test_the_stack_restarts_on_the_same_ports_right_after_it_stopped(tmp_path: Path) -> None:
    api, auth0, aws = free_ports(3)
    admin = SEED_USERS["admin"]
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with running_stack(tmp_path / "first", SEED, SEED_USERS, ports=(api, auth0, aws)) as first:
        token = first.login(admin.email, admin.password)
        for port in (api, auth0):
            _request_until_the_server_closes(port)
        assert first.api("GET", "/me", token=token).status == 200
    # running_stack fails the test when the stack exits (port in use) or is not healthy in time
    with running_stack(tmp_path / "second", SEED, SEED_USERS, ports=(api, auth0, aws)) as second:
        assert second.api_url == first.api_url
        token = second.login(admin.email, admin.password)
        assert second.api("GET", "/me", token=token).status == 200


def _request_until_the_server_closes(port: int) -> None:
    """A request whose connection the server closes first, so the server's side lingers in TIME_WAIT."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"GET /_local/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        while connection.recv(65536):
            pass
