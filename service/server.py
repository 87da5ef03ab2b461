"""Building and running the gRPC server: health, reflection, auth, TLS, metrics, graceful drain.

Life cycle: health NOT_SERVING -> model opened and warmed, store opened -> SERVING. On SIGTERM (or
SIGINT): health NOT_SERVING for ``drain_delay_s`` (calls still served, so load balancers move away),
then new calls are refused and in-flight calls get ``grace_s`` to finish; then the batcher stops and
the store closes.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from service.config import Settings
from service.engine import Engine
from service.metrics import Metrics
from service.runtime.model import EmbeddingModel
from service.servicers import EmbeddingServicer, SearchServicer
from store import Store
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

Ctx: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
log = logging.getLogger("zembed.server")
SERVICES = tuple(pb.DESCRIPTOR.services_by_name[n].full_name for n in ("EmbeddingService", "SearchService"))
OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


class BearerAuth(grpc.aio.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` (constant-time compare); health and reflection open."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        if details.method.startswith(OPEN_METHODS) or handler is None:
            return handler
        given = dict(details.invocation_metadata or ()).get("authorization")
        if given is None:
            return _deny(handler, "authorization metadata is missing: send `authorization: Bearer <token>`")
        if not hmac.compare_digest(str(given).encode(), self._expected):
            return _deny(handler, "authorization token is not valid")
        return handler


def _deny(handler: Handler, message: str) -> Handler:
    """A handler of the same shape as ``handler`` that fails with UNAUTHENTICATED."""

    async def abort(request: Any, context: Ctx) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort, **kw)
    return grpc.unary_unary_rpc_method_handler(abort, **kw)


@dataclass
class Running:
    server: grpc.aio.Server
    port: int
    engine: Engine
    health: HealthServicer
    metrics: Metrics

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
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        await self.server.stop(grace_s)
        self.engine.batcher.stop()
        self.engine.store.close()


async def start(
    settings: Settings, *, metrics: Metrics | None = None, announce: Callable[[int], None] | None = None
) -> Running:
    """Open everything, bind, and start serving (health SERVING once warm)."""
    metrics = metrics or Metrics()
    interceptors = [BearerAuth(settings.token)] if settings.token else []
    max_bytes = settings.max_message_mb * 1024 * 1024
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", max_bytes)],
    )
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ("", *SERVICES):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    address = f"{settings.host}:{settings.port}"
    if settings.tls_cert is not None and settings.tls_key is not None:
        creds = grpc.ssl_server_credentials(
            [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
            root_certificates=settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None,
            require_client_auth=settings.tls_client_ca is not None,
        )
        port = server.add_secure_port(address, creds)
    else:
        port = server.add_insecure_port(address)
    reflection.enable_server_reflection((*SERVICES, reflection.SERVICE_NAME, "grpc.health.v1.Health"), server)
    embedding, search = EmbeddingServicer(None, metrics), SearchServicer(None, metrics)
    pb_grpc.add_EmbeddingServiceServicer_to_server(embedding, server)
    pb_grpc.add_SearchServiceServicer_to_server(search, server)
    await server.start()  # health answers NOT_SERVING, the services UNAVAILABLE, while the model loads
    if announce is not None:
        announce(port)
    log.info(
        "listening on %s:%d (TLS %s, auth %s)",
        settings.host,
        port,
        "on" if settings.tls_cert else "off",
        "on" if settings.token else "off",
    )
    model = await asyncio.to_thread(
        EmbeddingModel,
        settings.model,
        providers=settings.providers or None,
        intra_op_threads=settings.intra_op_threads,
    )
    store = await asyncio.to_thread(Store, settings.data)
    engine = Engine(settings, model, store, on_search=metrics.store_seconds.observe)
    engine.batcher._on_batch = metrics.on_batch
    engine.batcher.start()
    metrics.watch(
        lambda: engine.batcher.depth,
        lambda: {c.name: c.count for c in store.list_collections()},
        lambda: dict(engine.searcher.paths),
    )
    if settings.default_collection and settings.default_collection not in {
        c.name for c in store.list_collections()
    }:
        store.create_collection(settings.default_collection, engine.default_config())
    if settings.prefetch:
        for info in store.list_collections():
            await asyncio.to_thread(store.collection(info.name).prefetch)
    await asyncio.to_thread(model.warmup)
    embedding.attach(engine)
    search.attach(engine)
    running = Running(server, port, engine, health, metrics)
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


async def serve(settings: Settings) -> None:
    metrics = Metrics()
    if settings.metrics_port:
        metrics.serve(settings.metrics_port, settings.host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = await start(
        settings, metrics=metrics, announce=lambda p: print(f"zembed: listening on port {p}", flush=True)
    )
    print(f"zembed: serving on port {running.port}", flush=True)
    await stop.wait()
    log.info("draining (grace %.1f s)", settings.grace_s)
    await running.drain(settings.grace_s, settings.drain_delay_s)
    log.info("stopped")
