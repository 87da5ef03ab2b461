"""Building and running the gRPC server: health, reflection, auth, TLS, metrics, graceful drain.

Life cycle: health NOT_SERVING -> model opened and warmed, store opened -> SERVING. On SIGTERM (or
SIGINT): health NOT_SERVING for ``drain_delay_s`` (calls still served, so load balancers move away),
then new calls are refused and in-flight calls get ``grace_s`` to finish; then the batcher stops and
the store closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import lmdb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from zembed.service.config import Settings
from zembed.service.edge import Edge
from zembed.service.engine import Embedder, Engine
from zembed.service.errors import StartupError
from zembed.service.metrics import LaneFigures, Metrics
from zembed.service.servicers import EmbeddingServicer, SearchServicer
from zembed.store import Store

if TYPE_CHECKING:
    from zembed.service.http.server import HttpServer
from zembed.store.errors import StoreError
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

log = logging.getLogger("zembed.server")
SERVICES = tuple(pb.DESCRIPTOR.services_by_name[n].full_name for n in ("EmbeddingService", "SearchService"))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


@dataclass
class Running:
    server: grpc.aio.Server
    port: int
    engine: Engine
    health: HealthServicer
    metrics: Metrics
    http: HttpServer | None = None  # the HTTP/JSON API (--http-port), when on

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICES):
            await self.health.set(name, status)

    async def drain(self, grace_s: float, delay_s: float = 0.0) -> None:
        """NOT_SERVING first (and ``delay_s`` for probes and load balancers to notice), then stop
        accepting calls and give in-flight ones ``grace_s`` to finish."""
        await self.set_serving(False)
        if self.http is not None:
            self.http.not_serving()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        if self.http is not None:
            await asyncio.gather(self.server.stop(grace_s), self.http.stop(grace_s))
        else:
            await self.server.stop(grace_s)
        self.engine.batcher.stop()
        await self.engine.stop_background()
        self.engine.store.close()


async def listen(
    server: grpc.aio.Server, settings: Settings, tls: tuple[bytes, bytes, bytes | None] | None
) -> tuple[HealthServicer, int]:
    """The port (TLS when given), the health service answering NOT_SERVING until the caller says
    otherwise, and reflection: what a server and a router set up alike before they start."""
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ("", *SERVICES):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    address = f"{settings.host}:{settings.port}"
    try:
        if tls is not None:
            key, cert, ca = tls
            creds = grpc.ssl_server_credentials(
                [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
            )
            port = server.add_secure_port(address, creds)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise StartupError(f"cannot listen on {address}: {exc} (is the port in use?)") from None
    reflection.enable_server_reflection((*SERVICES, reflection.SERVICE_NAME, "grpc.health.v1.Health"), server)
    return health, port


# Keepalive and connection limits: a client that vanished (no FIN: a pulled cable, a frozen VM) is
# found by pings within ~keepalive_time + keepalive_timeout and its calls are cancelled, which ends
# its streams; clients may ping at most every 10 s; idle connections are closed after 30 min.
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 2),
    ("grpc.max_connection_idle_ms", 30 * 60_000),
)


def check_tls(settings: Settings) -> tuple[bytes, bytes, bytes | None] | None:
    """The TLS files, read and checked to belong together before anything binds (gRPC would only say
    "Failed to bind to address")."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    try:
        key, cert = settings.tls_key.read_bytes(), settings.tls_cert.read_bytes()
        ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    except OSError as exc:
        raise StartupError(f"cannot read a TLS file: {exc}") from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    except ssl.SSLError as exc:
        why = "the key does not match the certificate" if "MISMATCH" in str(exc) else str(exc)
        raise StartupError(
            f"--tls-cert {settings.tls_cert} and --tls-key {settings.tls_key} cannot be used: {why}"
        ) from None
    if ca is not None:
        try:
            ssl.create_default_context(cadata=ca.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as exc:
            raise StartupError(
                f"--tls-client-ca {settings.tls_client_ca} is not a PEM CA bundle: {exc}"
            ) from None
    return key, cert, ca


def open_store(settings: Settings) -> Store:
    """The store, opened before anything listens: a locked, damaged, unreadable or read-only data
    directory is a :class:`StartupError` with one clear line."""
    try:
        return Store(settings.data)
    except StoreError as exc:
        raise StartupError(f"cannot open the store in {settings.data}: {exc}") from None
    except (OSError, lmdb.Error) as exc:
        raise StartupError(
            f"cannot open the store in {settings.data}: {type(exc).__name__}: {exc} "
            "(is the directory readable and writable by this user?)"
        ) from None


async def start(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    announce: Callable[[int], None] | None = None,
    model: Embedder | None = None,
    store: Store | None = None,
) -> Running:
    """Open everything, bind, and start serving (health SERVING once warm).

    ``model`` and ``store`` are injection points (tests pass a fake embedder, or an open store);
    by default the export folder ``settings.model`` is loaded and ``settings.data`` opened. The store
    and the TLS files are checked BEFORE the port is bound, so a bad data directory or key never
    leaves a half-started server; the model loads after binding (health says NOT_SERVING meanwhile).
    """
    if settings.shards or settings.shards_file is not None:  # the sharded router: no store of its own
        from zembed.service.router import start_router

        return await start_router(settings, metrics=metrics, announce=announce, model=model)
    metrics = metrics or Metrics()
    tls = check_tls(settings)
    if store is None:
        store = await asyncio.to_thread(open_store, settings)
    max_bytes = settings.max_message_mb * 1024 * 1024
    server = grpc.aio.server(
        interceptors=[Edge(settings.token)],
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
            *SERVER_OPTIONS,
        ],
    )
    http: HttpServer | None = None
    try:
        if settings.http_port >= 0:  # bound before the model loads, like the gRPC port
            from zembed.service.http.server import HttpServer

            http = HttpServer(settings, metrics)
        running = await _start(settings, server, store, metrics, announce, model, tls, max_bytes, http)
    except BaseException:
        await server.stop(None)
        if http is not None:
            await http.stop(0)
        store.close()
        raise
    return running


async def _start(
    settings: Settings,
    server: grpc.aio.Server,
    store: Store,
    metrics: Metrics,
    announce: Callable[[int], None] | None,
    model: Embedder | None,
    tls: tuple[bytes, bytes, bytes | None] | None,
    max_bytes: int,
    http: HttpServer | None = None,
) -> Running:
    # a format-1 data directory (an earlier release) is served read-only until `zembed migrate`
    read_only: str | None = getattr(store, "needs_migration", None)
    if read_only:
        log.warning("serving the store READ-ONLY (writes answer FAILED_PRECONDITION): %s", read_only)
    health, port = await listen(server, settings, tls)
    embedding, search = EmbeddingServicer(None, metrics), SearchServicer(None, metrics)
    pb_grpc.add_EmbeddingServiceServicer_to_server(embedding, server)
    pb_grpc.add_SearchServiceServicer_to_server(search, server)
    await server.start()  # health answers NOT_SERVING, the services UNAVAILABLE, while the model loads
    if http is not None:
        await http.start()  # /v1 answers 503 while the model loads
    if announce is not None:
        announce(port)
    log.info(
        "listening on %s:%d (TLS %s, auth %s)",
        settings.host,
        port,
        "on" if settings.tls_cert else "off",
        "on" if settings.token else "off",
    )
    if model is None:
        from zembed.service.runtime.model import EmbeddingModel

        loaded: Embedder = await asyncio.to_thread(
            EmbeddingModel,
            settings.model,
            providers=settings.providers or None,
            intra_op_threads=settings.intra_op_threads,
            accept_parity_failure=settings.accept_parity_failure,
        )
        model = loaded
    engine = Engine(settings, model, store, on_search=metrics.store_seconds.observe)
    engine.batcher._on_batch = metrics.on_batch
    engine.batcher.start()
    metrics.watch(
        lambda: engine.batcher.depth,
        lambda: {c.name: c.count for c in store.list_collections()},
        lambda: dict(engine.searcher.paths),
        free_bytes=lambda: _free_bytes(store),
        queued_seconds=engine.batcher.estimated_wait_s,
        lanes=lambda: LaneFigures(**engine.batcher.lane_figures()),
    )
    if settings.default_collection and not read_only:  # read-only: neither created nor changed
        name, fields = settings.default_collection, list(settings.default_filterable)
        if name not in {c.name for c in store.list_collections()}:
            store.create_collection(name, engine.default_config(filterable=tuple(fields)))
        elif fields:
            await asyncio.to_thread(store.add_filterable, name, fields)
    if settings.prefetch:
        for info in store.list_collections():
            await asyncio.to_thread(store.collection(info.name).prefetch)
    await asyncio.to_thread(model.warmup)
    await asyncio.to_thread(engine.calibrate)
    embedding.attach(engine)
    search.attach(engine)
    if http is not None:
        http.attach(engine)
    running = Running(server, port, engine, health, metrics, http)
    await running.set_serving(True)
    log.info(
        "serving model %s (%s, %s) from %s; store %s",
        model.manifest.model_id,
        model.manifest.dtype,
        model.provider,
        settings.model,
        settings.data,
    )
    return running


def _free_bytes(store: Store) -> int:
    free = getattr(store, "free_bytes", None)
    if callable(free):
        return int(free())
    return shutil.disk_usage(store.path).free


async def serve(settings: Settings) -> None:
    metrics = Metrics()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = await start(
        settings, metrics=metrics, announce=lambda p: print(f"zembed: listening on port {p}", flush=True)
    )
    if settings.metrics_port:
        if settings.metrics_host not in ("127.0.0.1", "::1", "localhost") and not settings.token:
            log.warning(
                "/metrics listens on %s without a token: anyone who reaches it reads every collection's "
                "name and size (set --token, or keep --metrics-host 127.0.0.1)",
                settings.metrics_host,
            )
        try:
            tls = (settings.tls_cert, settings.tls_key) if settings.tls_cert and settings.tls_key else None
            metrics.serve(settings.metrics_port, settings.metrics_host, settings.token, tls)
        except OSError as exc:
            await running.drain(0)
            raise StartupError(
                f"cannot serve /metrics on {settings.metrics_host}:{settings.metrics_port}: {exc}"
            ) from None
    print(f"zembed: serving on port {running.port}", flush=True)
    if running.http is not None:
        print(f"zembed: HTTP API on port {running.http.port}", flush=True)
    await stop.wait()
    log.info("draining (grace %.1f s)", settings.grace_s)
    await running.drain(settings.grace_s, settings.drain_delay_s)
    log.info("stopped")
