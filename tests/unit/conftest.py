"""The unit tier: rules against in-memory fakes, with sockets blocked (a test that reaches the network,
moto server or the local stack fails here and belongs in ``tests/integration`` or ``tests/e2e``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pytest_socket


@pytest.fixture(autouse=True)
def _no_sockets() -> Iterator[None]:
    pytest_socket.disable_socket(allow_unix_socket=True)
    yield
    pytest_socket.enable_socket()
