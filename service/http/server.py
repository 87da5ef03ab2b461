"""Running the HTTP app with uvicorn inside the server's own event loop (no second loop, no thread).

The socket is bound by :func:`bind` before the model loads (like the gRPC port), so a port in use is a
start-up error; until the engine is attached every ``/v1`` call is 503. uvicorn's own signal handling
is turned off: the server's SIGTERM path drains both protocols (health 503 at once, then new calls
503 and in-flight ones get the grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Generator

import uvicorn

from zembed.service.config import Settings
from zembed.service.engine import Engine
from zembed.service.errors import StartupError
from zembed.service.http.app import State, build_app
from zembed.service.metrics import Metrics

log = logging.getLogger("zembed.http")


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the zembed server owns SIGTERM/SIGINT


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen for HTTP on {host}:{port}: {exc} (is the port in use?)") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class HttpServer:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.state = State(settings, metrics)
        self.sock = bind(settings.host, settings.http_port)
        self.port: int = self.sock.getsockname()[1]
        tls: dict[str, object] = {}
        if settings.tls_cert and settings.tls_key:
            tls = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
            if settings.tls_client_ca:
                tls |= {"ssl_ca_certs": str(settings.tls_client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        config = uvicorn.Config(
            build_app(self.state),
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=int(max(1, settings.grace_s)),
            timeout_keep_alive=30,
            **tls,  # type: ignore[arg-type]
        )
        self.server = _Uvicorn(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        for _ in range(500):
            if self.server.started or self.task.done():
                break
            await asyncio.sleep(0.01)
        if self.task.done():
            self.task.result()
            raise StartupError(f"the HTTP server on port {self.port} stopped at start")
        log.info("HTTP listening on %s:%d", self.settings.host, self.port)

    def attach(self, engine: Engine) -> None:
        self.state.attach(engine)

    def not_serving(self) -> None:
        """Draining: /health answers 503 (calls are still served until :meth:`stop`)."""
        self.state.draining = True

    async def stop(self, grace_s: float) -> None:
        """New calls refused, in-flight calls get ``grace_s`` to finish, then connections close."""
        self.state.draining = self.state.refusing = True
        self.server.should_exit = True
        if self.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.task), grace_s + 5)
            except TimeoutError:
                self.server.force_exit = True
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.task, 5)
        self.sock.close()
