"""One way to serve a WSGI app of the local stack: a threaded werkzeug server in a daemon thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

WsgiApp = Callable[..., Iterable[bytes]]


class ServerHandle:
    """A running threaded werkzeug server (daemon thread)."""

    def __init__(self, server: BaseWSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.host = str(server.host)
        self.port = int(server.server_port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_wsgi(
    app: WsgiApp | Any, host: str, port: int, *, request_handler: type[WSGIRequestHandler], name: str
) -> ServerHandle:
    """Serve ``app`` (``port=0`` picks a free port); request threads never keep the process alive."""
    server = make_server(host, port, app, threaded=True, request_handler=request_handler)
    server.daemon_threads = True  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},  # quick shutdown
        name=f"{name}-{server.server_port}",
        daemon=True,
    )
    thread.start()
    return ServerHandle(server, thread)
