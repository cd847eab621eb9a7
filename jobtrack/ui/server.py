"""Serving the dashboard with uvicorn: a bound socket first (so port 0 gives a known free port), then the server.

``BackgroundServer`` runs it in a thread for tests, benchmarks and the screenshot script (#16).
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

from jobtrack.errors import InvalidArgument


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port).

    Raises:
        InvalidArgument: the port is out of range or cannot be bound.
    """
    if not 0 <= port <= 65535:
        raise InvalidArgument(f"--port must be 0 to 65535, not {port}.")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # connections wait from now on, so the URL printed next works at once
    except OSError as exc:
        sock.close()
        raise InvalidArgument(f"Cannot listen on {host}:{port} ({exc.strerror}); "
                              "choose another --port (0 picks a free one).") from exc
    return sock


def base_url(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


def _server(app: Any) -> Any:
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))


def serve(app: Any, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until Ctrl-C."""
    _server(app).run(sockets=[sock])


class BackgroundServer:
    """``with BackgroundServer(app) as url:`` the app served on 127.0.0.1 in a thread, stopped on exit."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = bind(host, port)
        self.url = base_url(self.sock)
        self._server = _server(app)
        self._server.install_signal_handlers = lambda: None  # a thread cannot take signals (older uvicorn)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the dashboard server did not start within 10 s")
            time.sleep(0.01)
        return self.url

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self.sock.close()
