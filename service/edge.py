"""The gRPC edge: what happens to a call before (and around) the servicers.

One interceptor, :class:`Edge`, for every method of ``zembed.v1`` (health and reflection stay open):

1. **Authentication from metadata alone, before the body is read.** With a token set, a call needs
   exactly one ``authorization: Bearer <token>`` header (constant-time compare; two headers are
   refused). A refused call is answered by a handler that never reads the request, so an
   unauthenticated 60 MB Upsert is not parsed (not even deserialized).
2. **Undecodable messages are INVALID_ARGUMENT naming the message type**, never UNKNOWN with a
   traceback: every request deserializer is wrapped so that bytes which are not a valid message
   become an :class:`~service.errors.Undecodable` value; a unary call answers it at once, a stream
   raises it from its request iterator, which ends the stream (see :mod:`service.streams`).
3. **The caller's deadline** is put in :data:`service.batcher.call_deadline` for the engine.
4. **Streams' errors** (a failure that ends a stream) map through the one table in
   :mod:`service.status`; unary methods do the same in the servicers' ``guarded``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from zembed.service.auth import bearer_matches, expected_token
from zembed.service.batcher import call_deadline
from zembed.service.errors import Undecodable
from zembed.service.status import RateLimitedLog, status_of
from zembed.v1 import zembed_pb2 as pb

Ctx: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
log = logging.getLogger("zembed.edge")
denied = RateLimitedLog(logging.getLogger("zembed.auth"))


def request_types() -> dict[str, str]:
    """``/zembed.v1.Service/Method`` -> the full name of its request message."""
    out = {}
    for svc in pb.DESCRIPTOR.services_by_name.values():
        for m in svc.methods:
            out[f"/{svc.full_name}/{m.name}"] = m.input_type.full_name
    return out


def safe_deserializer(parse: Callable[[bytes], Any] | None, type_name: str) -> Callable[[bytes], Any]:
    """``parse``, except that bytes it cannot parse become an :class:`Undecodable` value (gRPC would
    otherwise answer UNKNOWN "Unexpected DecodeError" and log a traceback per call)."""

    def deserialize(data: bytes) -> Any:
        if parse is None:
            return data
        try:
            return parse(data)
        except Exception as exc:  # google.protobuf.message.DecodeError, UnicodeDecodeError, ...
            return Undecodable(type_name, str(exc) or type(exc).__name__, len(data))

    return deserialize


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for r in requests:
        if isinstance(r, Undecodable):
            raise r
        yield r


def _set_deadline(context: Ctx) -> None:
    left = context.time_remaining()
    call_deadline.set(None if left is None else time.monotonic() + left)


async def _abort(context: Ctx, exc: BaseException, method: str) -> None:
    code, message = status_of(exc, method)
    await context.abort(code, message)


def _guard(handler: Handler, type_name: str, method: str) -> Handler:
    """The same handler with a safe deserializer, the deadline set, and stream errors mapped."""
    kw: dict[str, Any] = {
        "request_deserializer": safe_deserializer(handler.request_deserializer, type_name),
        "response_serializer": handler.response_serializer,
    }
    if not handler.request_streaming:
        inner_u: Any = handler.unary_stream if handler.response_streaming else handler.unary_unary
        if handler.response_streaming:

            async def unary_stream(request: Any, context: Ctx) -> AsyncIterator[Any]:
                _set_deadline(context)
                try:
                    if isinstance(request, Undecodable):
                        raise request
                    async for r in inner_u(request, context):
                        yield r
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await _abort(context, exc, method)

            return grpc.unary_stream_rpc_method_handler(unary_stream, **kw)

        async def unary_unary(request: Any, context: Ctx) -> Any:
            _set_deadline(context)
            if isinstance(request, Undecodable):
                await _abort(context, request, method)
            return await inner_u(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **kw)

    if handler.response_streaming:
        inner_s: Any = handler.stream_stream

        async def stream_stream(requests: AsyncIterator[Any], context: Ctx) -> AsyncIterator[Any]:
            _set_deadline(context)
            try:
                async for r in inner_s(_checked(requests), context):
                    yield r
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await _abort(context, exc, method)

        return grpc.stream_stream_rpc_method_handler(stream_stream, **kw)

    inner_su: Any = handler.stream_unary

    async def stream_unary(requests: AsyncIterator[Any], context: Ctx) -> Any:
        _set_deadline(context)
        try:
            return await inner_su(_checked(requests), context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, method)

    return grpc.stream_unary_rpc_method_handler(stream_unary, **kw)


def _deny(handler: Handler, message: str) -> Handler:
    """A handler that answers UNAUTHENTICATED without reading the request: request-streaming shape
    whatever the method's, so gRPC does not receive and deserialize a message before it runs."""

    if handler.response_streaming:

        async def deny_stream(requests: Any, context: Ctx) -> None:  # aio: a coroutine may stream
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        return grpc.stream_stream_rpc_method_handler(deny_stream)

    async def deny(requests: Any, context: Ctx) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.stream_unary_rpc_method_handler(deny)


class Edge(grpc.aio.ServerInterceptor):
    """Authentication (when ``token`` is set), safe deserializers, deadlines and stream statuses for
    every ``zembed.v1`` method; other services (health, reflection) pass through untouched."""

    def __init__(self, token: str | None) -> None:
        self._expected = expected_token(token)
        self._types = request_types()

    def check(self, metadata: Any) -> str | None:
        """Why the call's metadata fails authentication, or None when it passes."""
        if self._expected is None:
            return None
        given = [v for k, v in (metadata or ()) if k == "authorization"]
        if not given:
            return "authorization metadata is missing: send `authorization: Bearer <token>`"
        if len(given) > 1:
            return f"authorization metadata must be sent once; given {len(given)} times"
        if not bearer_matches(given[0], self._expected):
            return "authorization token is not valid"
        return None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        method = details.method
        type_name = self._types.get(method)
        if handler is None or type_name is None:
            return handler
        problem = self.check(details.invocation_metadata)
        if problem is not None:
            denied.log(logging.INFO, "unauthenticated", f"{method} -> UNAUTHENTICATED: {problem}")
            return _deny(handler, problem)
        return _guard(handler, type_name, method.rsplit("/", 1)[-1])
