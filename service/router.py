"""The sharded router: ``zembed serve --shards ADDR,ADDR,...`` (or ``--shards-file``).

A collection is split into N shards, each an ordinary ``zembed serve`` with its own store; the
router holds the model and no store. It serves the same two services with the same messages:

- **Search** (and SearchStream): a text query is embedded ONCE here (and projected to the
  collection's code and rescore dims, read from the shards and cached), then sent as vectors to every
  shard in parallel with the caller's deadline (less a margin, so a shard that does not answer is
  reported before the caller's deadline passes); the shards' top_k lists merge by score descending,
  then id ascending (:mod:`service.fanout`). A shard that is down, overloaded or too slow makes the
  call UNAVAILABLE naming it; with ``allow_partial`` the other shards' merge is returned, marked
  ``partial`` with ``missing_shards``. Never a silent short list.
- **Upsert, UpsertStream, DeleteDocuments, GetDocuments** route each id to ``shard_of(id, N)``
  (:mod:`zembed.store.sharding`, the rule ``zembed index`` writes shard stores by). A write is
  checked here first (every bad input is refused before any shard writes), then is atomic per shard,
  not across shards: a shard failing mid-write is answered with an error saying which shards wrote.
- **Collection admin** (Create, Get, List, Update, Delete, Calibrate, Snapshot) goes to every shard;
  Get and List merge (counts summed).
- **EmbeddingService** is served by the router's own model, as by any server.

Replicas: each shard address is a gRPC target; ``host:port`` becomes ``dns:///host:port`` and the
channel uses the ``round_robin`` policy, so a DNS name resolving to several pods (a headless
Service) spreads calls over every replica and follows pods as they come and go; reads (Search, Get,
GetCollection, ListCollections) are retried once more on UNAVAILABLE (another replica). Calls to
shards carry the router's own ``--token``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import grpc
import numpy as np

from zembed.service import convert, streams
from zembed.service.config import Settings
from zembed.service.edge import Edge
from zembed.service.engine import F32, Embedder, Engine, usage_bytes
from zembed.service.errors import InvalidArgument, TooLarge, Unavailable
from zembed.service.fanout import (
    Failure,
    ShardError,
    channel_target,
    failure_error,
    ip_target,
    merge_collections,
    merge_hits,
    merge_list_pages,
    replica_hosts,
    route,
    search_failure,
    shard_timeout,
    written_note,
)
from zembed.service.metrics import Metrics
from zembed.service.server import SERVER_OPTIONS, Running, check_tls, listen
from zembed.service.servicers import MAX_UPSERT, Ctx, EmbeddingServicer, guarded, item_status
from zembed.store import Store, validate
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

log = logging.getLogger("zembed.router")
REPLICA_TTL_S = 5.0  # a shard name's replica addresses, cached for writes
CONFIG_TTL_S = 30.0  # a collection's code/rescore dims, cached for text queries and upsert checks
READS = ("Search", "GetDocuments", "GetCollection", "ListCollections")
T = TypeVar("T")


def service_config() -> str:
    """round_robin over every address a shard's name resolves to; reads retried on UNAVAILABLE (the
    retry goes to the next replica)."""
    return json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            "methodConfig": [
                {
                    "name": [{"service": "zembed.v1.SearchService", "method": m} for m in READS],
                    "retryPolicy": {
                        "maxAttempts": 2,
                        "initialBackoff": "0.02s",
                        "maxBackoff": "0.2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ],
        }
    )


class ShardSet:
    """One balanced channel per shard (reads: its replicas round-robin inside it) and, for writes and
    admin calls, one channel per replica (every replica must apply them: replicas hold copies)."""

    def __init__(self, addresses: tuple[str, ...], settings: Settings) -> None:
        self.addresses = addresses
        max_bytes = settings.max_message_mb * 1024 * 1024
        self._options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ]
        self._creds = None
        if settings.shard_tls_ca is not None:
            self._creds = grpc.ssl_channel_credentials(settings.shard_tls_ca.read_bytes())
        self._balanced: list[tuple[str, Any]] = [
            ("grpc.service_config", service_config()),
            ("grpc.enable_retries", 1),
            ("grpc.dns_min_time_between_resolutions_ms", 5_000),
        ]
        self.channels = [self._channel(channel_target(a), self._balanced) for a in addresses]
        self.stubs = [pb_grpc.SearchServiceStub(ch) for ch in self.channels]
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {settings.token}"),) if settings.token else ()
        )
        self._replica_stubs: dict[tuple[str, str], Any] = {}
        self._replica_channels: list[grpc.aio.Channel] = []
        self._resolved: dict[int, tuple[float, list[str]]] = {}
        self._seen: dict[int, list[str]] = {}  # the replica set each balanced channel last saw
        self._retired: set[asyncio.Task[None]] = set()
        # host, port, type= -> [(family, type, proto, canonname, sockaddr)]; tests put a fake here
        self.getaddrinfo: Callable[..., Awaitable[list[tuple[Any, ...]]]] = (
            asyncio.get_running_loop().getaddrinfo
        )

    def _channel(self, target: str, extra: list[tuple[str, Any]], server_name: str = "") -> grpc.aio.Channel:
        options = [*self._options, *extra]
        if self._creds is None:
            return grpc.aio.insecure_channel(target, options=options)
        if server_name:  # a replica reached by its IP still presents the shard name's certificate
            options.append(("grpc.ssl_target_name_override", server_name))
        return grpc.aio.secure_channel(target, self._creds, options=options)

    def __len__(self) -> int:
        return len(self.addresses)

    async def call(self, shard: int, method: str, request: Any, timeout: float) -> Any:
        """The shard's answer (through its balanced channel), or a :class:`Failure` (never raises for a
        gRPC error)."""
        try:
            return await getattr(self.stubs[shard], method)(request, timeout=timeout, metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            return Failure(shard, self.addresses[shard], exc.code(), exc.details() or "")

    async def replicas(self, shard: int) -> list[str]:
        """Every replica's own target now: the shard name resolved (cached for a few seconds)."""
        hit = self._resolved.get(shard)
        if hit is not None and time.monotonic() - hit[0] < REPLICA_TTL_S:
            return hit[1]
        where = replica_hosts(self.addresses[shard])
        if isinstance(where, list):
            targets = where
        else:
            host, port = where
            infos = await self.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            targets = sorted({ip_target(str(info[4][0]), port) for info in infos})
        self._resolved[shard] = (time.monotonic(), targets)
        seen = self._seen.setdefault(shard, targets)
        if targets != seen:
            self._renew(shard, targets)
        return targets

    def _renew(self, shard: int, targets: list[str]) -> None:
        """A new balanced channel for a shard whose replica set changed: gRPC's DNS resolver only
        re-resolves when a connection fails, so a replica added by a scale-up would get no reads
        until then. The old channel is closed after in-flight calls had time to finish."""
        log.info("shard %d (%s): replicas now %s", shard, self.addresses[shard], targets)
        self._seen[shard] = targets
        old = self.channels[shard]
        self.channels[shard] = self._channel(channel_target(self.addresses[shard]), self._balanced)
        self.stubs[shard] = pb_grpc.SearchServiceStub(self.channels[shard])

        async def retire() -> None:
            await asyncio.sleep(60)
            await old.close()

        task = asyncio.ensure_future(retire())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def refresh(self) -> None:
        """Resolve every shard named by DNS again (replicas added or gone)."""
        for shard, address in enumerate(self.addresses):
            if isinstance(replica_hosts(address), list):
                continue
            self._resolved.pop(shard, None)
            try:
                await self.replicas(shard)
            except OSError as exc:
                log.warning("shard %d (%s): cannot resolve: %s", shard, address, exc)

    async def watch(self, every_s: float = REPLICA_TTL_S) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.refresh()

    def _replica_stub(self, shard: int, target: str) -> Any:
        key = (self.addresses[shard], target)
        if key not in self._replica_stubs:
            where = replica_hosts(self.addresses[shard])
            name = "" if isinstance(where, list) else where[0]
            channel = self._channel(target, [], name)
            self._replica_channels.append(channel)
            self._replica_stubs[key] = pb_grpc.SearchServiceStub(channel)
        return self._replica_stubs[key]

    async def call_replicas(self, shard: int, method: str, request: Any, timeout: float) -> Any:
        """``request`` to every replica of the shard: the first replica's answer when all of them
        succeeded, else a :class:`Failure` naming the replica (a shard with no replica resolved is
        UNAVAILABLE)."""
        try:
            targets = await self.replicas(shard)
        except OSError as exc:
            return Failure(
                shard, self.addresses[shard], grpc.StatusCode.UNAVAILABLE, f"cannot resolve: {exc}"
            )
        if not targets:
            return Failure(shard, self.addresses[shard], grpc.StatusCode.UNAVAILABLE, "no replica resolved")

        async def one(target: str) -> Any:
            try:
                return await getattr(self._replica_stub(shard, target), method)(
                    request, timeout=timeout, metadata=self.metadata
                )
            except grpc.aio.AioRpcError as exc:
                self._resolved.pop(shard, None)  # a replica gone: resolve again next time
                where = "" if target == self.addresses[shard] else f"replica {target}: "
                return Failure(shard, self.addresses[shard], exc.code(), where + (exc.details() or ""))

        answers = await asyncio.gather(*(one(t) for t in targets))
        failed = [a for a in answers if isinstance(a, Failure)]
        return failed[0] if failed else answers[0]

    async def each(
        self, method: str, requests: dict[int, Any], timeout: float, *, write: bool = False
    ) -> dict[int, Any]:
        """``requests[shard]`` to each of those shards in parallel (``write``: to every replica of
        each): answers and failures by shard."""
        shards = sorted(requests)
        call = self.call_replicas if write else self.call
        out = await asyncio.gather(*(call(s, method, requests[s], timeout) for s in shards))
        return dict(zip(shards, out, strict=True))

    async def all(self, method: str, request: Any, timeout: float, *, write: bool = False) -> dict[int, Any]:
        return await self.each(method, dict.fromkeys(range(len(self)), request), timeout, write=write)

    async def close(self) -> None:
        for task in list(self._retired):
            task.cancel()
        await asyncio.gather(*(ch.close() for ch in [*self.channels, *self._replica_channels]))


def split(answers: dict[int, Any]) -> tuple[dict[int, Any], list[Failure]]:
    ok = {s: a for s, a in answers.items() if not isinstance(a, Failure)}
    return ok, [a for a in answers.values() if isinstance(a, Failure)]


class _NoStore:
    """The router's engine embeds only; it has no store (a bug if anything asks it for one)."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"the router has no store (asked for Store.{name})")


@dataclass
class RouterSearch(pb_grpc.SearchServiceServicer):
    engine: Engine | None
    shards: ShardSet
    metrics: Metrics
    _configs: dict[str, tuple[float, pb.CollectionConfig]] = field(default_factory=dict)

    def attach(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def eng(self) -> Engine:
        if self.engine is None:
            raise Unavailable("the router is starting (model loading); retry shortly")
        return self.engine

    @property
    def settings(self) -> Settings:
        return self.eng.settings

    def timeout(self, context: Ctx) -> float:
        return shard_timeout(context.time_remaining(), self.settings.shard_timeout_s)

    # ------------------------------------------------------------------ helpers
    async def config(self, name: str, timeout: float) -> pb.CollectionConfig:
        """The collection's config (code and rescore dims), from the first shard that answers."""
        hit = self._configs.get(name)
        if hit is not None and time.monotonic() - hit[0] < CONFIG_TTL_S:
            return hit[1]
        # the first shard to answer is enough (every shard has the same config): a hung shard must
        # not cost a write to the other shards, or a partial search, the caller's whole deadline
        request = pb.GetCollectionRequest(name=name)
        calls = [
            asyncio.ensure_future(self.shards.call(s, "GetCollection", request, timeout))
            for s in range(len(self.shards))
        ]
        failures: list[Failure] = []
        try:
            for done in asyncio.as_completed(calls):
                answer = await done
                if isinstance(answer, Failure):
                    failures.append(answer)
                    continue
                cfg: pb.CollectionConfig = answer.collection.config
                self._configs[name] = (time.monotonic(), cfg)
                return cfg
        finally:
            for call in calls:
                call.cancel()
        raise failure_error(sorted(failures, key=lambda f: f.shard), len(self.shards))

    def forget(self, name: str) -> None:
        self._configs.pop(name, None)

    def project(self, cfg: pb.CollectionConfig, emb: F32, field: str) -> tuple[F32, F32]:
        model = self.eng.model
        for dim, what in ((cfg.code_bits, "code_bits"), (cfg.rescore_dims, "rescore_dims")):
            if dim not in model.dims:
                raise InvalidArgument(
                    field,
                    f"cannot be embedded server-side: the collection's {what} {dim} is not one of the "
                    f"model's dims {model.dims}; send precomputed vectors",
                )
        return model.project(emb, cfg.code_bits), model.project(emb, cfg.rescore_dims)

    async def _admin(self, method: str, request: Any, context: Ctx, *, write: bool = True) -> dict[int, Any]:
        """``request`` to every shard (``write``: to every replica of each); every shard must answer
        (else the error names them)."""
        ok, failures = split(await self.shards.all(method, request, self.timeout(context), write=write))
        if failures:
            done = f"shards {sorted(ok)} did {method}" if ok else ""
            raise failure_error(failures, len(self.shards), what=done)
        return ok

    # ------------------------------------------------------------------ search
    async def _search(self, request: pb.SearchRequest, timeout: float) -> pb.SearchResponse:
        """``timeout``: seconds for the whole call (embedding included) before the shards must have
        answered."""
        until = time.monotonic() + timeout
        kind = request.WhichOneof("query")
        if kind is None:
            raise InvalidArgument("query", "must be text or vectors")
        if kind == "text" and not request.text:
            raise InvalidArgument("text", "must not be empty")
        params = convert.search_params(request, self.settings.max_top_k)  # checked once, here
        sub = pb.SearchRequest()
        sub.CopyFrom(request)
        sub.allow_partial = False
        tokens = nbytes = 0
        if kind == "text":
            cfg = await self.config(request.collection, timeout)
            emb = await self.eng.embed(  # bounded by the caller's deadline (the edge sets it)
                [request.text], "query", 0, convert.overflow(request.truncation), field="text", names=["text"]
            )
            code, rescore = self.project(cfg, emb.vectors, "text")
            sub.vectors.CopyFrom(
                pb.Vectors(
                    code_f32le=np.asarray(code[0], dtype="<f4").tobytes(),
                    rescore_f32le=np.asarray(rescore[0], dtype="<f4").tobytes(),
                )
            )  # replaces the text (one of)
            tokens, nbytes = emb.total_tokens, usage_bytes([request.text])
        left = max(0.001, until - time.monotonic())  # what the embedding left of the time
        ok, failures = split(await self.shards.all("Search", sub, left))
        error = search_failure(failures, len(self.shards), request.allow_partial)
        if error is not None:
            if kind == "text":
                self.forget(request.collection)  # a recreated collection: re-read its dims
            raise error
        hits = merge_hits([ok[s].hits for s in sorted(ok)], params.top_k)
        return pb.SearchResponse(
            hits=hits,
            usage=pb.Usage(
                total_tokens=tokens + sum(a.usage.total_tokens for a in ok.values()),
                total_bytes=nbytes + sum(a.usage.total_bytes for a in ok.values()),
            ),
            partial=bool(failures),
            missing_shards=[f.to_proto() for f in sorted(failures, key=lambda f: f.shard)],
        )

    @guarded
    async def Search(self, request: pb.SearchRequest, context: Ctx) -> pb.SearchResponse:
        return await self._search(request, self.timeout(context))

    async def SearchStream(
        self, request_iterator: AsyncIterator[pb.SearchStreamRequest], context: Ctx
    ) -> AsyncIterator[pb.SearchStreamResponse]:
        async def handle(req: pb.SearchStreamRequest) -> pb.SearchStreamResponse:
            try:
                timeout = shard_timeout(None, self.settings.shard_timeout_s)
                if context.time_remaining() is not None:
                    timeout = self.timeout(context)
                res = await self._search(req.search, timeout)
                return pb.SearchStreamResponse(
                    id=req.id,
                    status=convert.status(),
                    hits=res.hits,
                    partial=res.partial,
                    missing_shards=res.missing_shards,
                )
            except Exception as exc:
                return pb.SearchStreamResponse(id=req.id, status=item_status(exc))

        settings = self.settings
        async for res in streams.concurrent(
            request_iterator, settings.stream_in_flight, handle, settings.stream_idle_s
        ):
            yield res

    # ------------------------------------------------------------------ writes
    async def check_documents(
        self, collection: str, docs: list[pb.Document], timeout: float, first: int = 0
    ) -> None:
        """Everything a shard would refuse in the documents' shape, refused here before any shard
        writes (writes are atomic per shard only)."""
        if not docs:
            raise InvalidArgument("documents", "must not be empty")
        if len(docs) > 10_000:
            raise InvalidArgument("documents", f"must hold at most 10000 documents; given {len(docs)}")
        cfg = await self.config(collection, timeout)
        settings = self.settings
        for i, d in enumerate(docs, start=first):  # i: the position named in errors
            kind = d.WhichOneof("content")
            if kind is None:
                raise InvalidArgument(f"documents[{i}]", "must have text or vectors")
            validate.text(d.id, f"documents[{i}].id", validate.MAX_ID_BYTES)
            if kind == "text":
                if not d.text:
                    raise InvalidArgument(f"documents[{i}].text", "must not be empty")
                if len(d.text) > settings.max_chars:
                    raise InvalidArgument(
                        f"documents[{i}].text",
                        f"must be at most {settings.max_chars} characters; given {len(d.text)}",
                    )
                for dim, what in ((cfg.code_bits, "code_bits"), (cfg.rescore_dims, "rescore_dims")):
                    if dim not in self.eng.model.dims:
                        raise InvalidArgument(
                            "documents.text",
                            f"cannot be embedded server-side: the collection's {what} {dim} is not one "
                            f"of the model's dims {self.eng.model.dims}; send precomputed vectors",
                        )
            else:
                v = d.vectors
                code = convert.vector(v.code, f"documents[{i}].vectors.code", v.code_f32le)
                rescore = convert.vector(v.rescore, f"documents[{i}].vectors.rescore", v.rescore_f32le)
                if len(code) != cfg.code_bits:
                    raise InvalidArgument(
                        f"documents[{i}].vectors.code", f"must have length {cfg.code_bits}; given {len(code)}"
                    )
                if len(rescore) != cfg.rescore_dims and not (
                    len(rescore) == 0 and cfg.rescore_dims == cfg.code_bits
                ):
                    raise InvalidArgument(
                        f"documents[{i}].vectors.rescore",
                        f"must have length {cfg.rescore_dims}; given {len(rescore)}",
                    )
            convert.metadata_to_dict(d.metadata, f"documents[{i}].metadata")

    async def _write(
        self, collection: str, docs: list[pb.Document], chunking: pb.Chunking, timeout: float
    ) -> tuple[dict[int, Any], list[Failure], dict[int, list[int]]]:
        """Routes the documents: answers and failures by shard, and each shard's positions."""
        where = route([d.id for d in docs], len(self.shards))
        requests = {
            s: pb.UpsertRequest(collection=collection, documents=[docs[i] for i in pos], chunking=chunking)
            for s, pos in where.items()
        }
        ok, failures = split(await self.shards.each("Upsert", requests, timeout, write=True))
        return ok, failures, where

    @guarded
    async def Upsert(self, request: pb.UpsertRequest, context: Ctx) -> pb.UpsertResponse:
        timeout = self.timeout(context)
        docs = list(request.documents)
        await self.check_documents(request.collection, docs, timeout)
        ok, failures, _ = await self._write(request.collection, docs, request.chunking, timeout)
        if failures:
            self.forget(request.collection)
            raise failure_error(
                failures, len(self.shards), what=written_note(ok, (f.shard for f in failures))
            )
        return pb.UpsertResponse(
            upserted=sum(a.upserted for a in ok.values()),
            passages=sum(a.passages for a in ok.values()),
            usage=pb.Usage(
                total_tokens=sum(a.usage.total_tokens for a in ok.values()),
                total_bytes=sum(a.usage.total_bytes for a in ok.values()),
            ),
        )

    async def UpsertStream(
        self, request_iterator: AsyncIterator[pb.UpsertStreamRequest], context: Ctx
    ) -> AsyncIterator[pb.UpsertStreamResponse]:
        """One message at a time, acknowledged in order once every shard holding its documents
        stored them (send many documents per message: they go to their shards in parallel). A
        shard's refusal is narrowed to its bad documents by writing them one by one."""

        async def handle(req: pb.UpsertStreamRequest) -> pb.UpsertStreamResponse:
            single = req.HasField("document")
            docs = [req.document] if single else list(req.documents)
            if not docs:
                return pb.UpsertStreamResponse(
                    status=item_status(InvalidArgument("documents", "must not be empty (or set `document`)"))
                )
            refused: InvalidArgument | None = None  # refused whole, as a single server does
            if single and req.documents:
                single, docs = False, list(req.documents)
                refused = InvalidArgument("document", "and `documents` are both set; send one or the other")
            elif len(docs) > MAX_UPSERT:
                refused = InvalidArgument(
                    "documents", f"must hold at most {MAX_UPSERT} documents; given {len(docs)}"
                )
            if refused is not None:
                statuses = [item_status(refused)] * len(docs)
            else:
                statuses = await self._stream_message(req.collection, docs, req.chunking, single, context)
            if single:
                stored = int(statuses[0].code == 0)
                return pb.UpsertStreamResponse(id=req.document.id, status=statuses[0], stored=stored)
            bad = [s for s in statuses if s.code != 0]
            head = convert.status()
            if bad:
                head = convert.status(
                    bad[0].code, f"{len(bad)} of {len(docs)} documents refused: {bad[0].message}"
                )
            return pb.UpsertStreamResponse(status=head, statuses=statuses, stored=len(docs) - len(bad))

        settings = self.settings
        async for ack in streams.concurrent(request_iterator, 1, handle, settings.stream_idle_s):
            yield ack

    async def _stream_message(
        self, collection: str, docs: list[pb.Document], chunking: pb.Chunking, single: bool, context: Ctx
    ) -> list[pb.Status]:
        timeout = shard_timeout(None, self.settings.shard_timeout_s)
        if context.time_remaining() is not None:
            timeout = self.timeout(context)
        out = [convert.status()] * len(docs)
        at = list(range(len(docs)))  # the documents to write, by position in the message
        try:
            await self.check_documents(collection, docs, timeout)
        except Exception:  # some document is refused: each gets its own status, the rest are written
            try:
                await self.config(collection, timeout)
            except Exception as exc:  # the collection itself (missing, or no shard answers)
                return [item_status(exc)] * len(docs)
            at = []
            for i, d in enumerate(docs):  # checked here, one at a time (the config is cached now)
                try:
                    await self.check_documents(collection, [d], timeout, first=i)
                    at.append(i)
                except Exception as exc:
                    out[i] = item_status(exc)
            if not at:
                return out
        _, failures, where = await self._write(collection, [docs[i] for i in at], chunking, timeout)
        for f in failures:
            if f.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
                for j in where[f.shard]:
                    out[at[j]] = await self._one(collection, docs[at[j]], chunking, timeout, at[j])
            else:
                st = convert.status(f.code.value[0], f.describe())
                for j in where[f.shard]:
                    out[at[j]] = st
        return out

    async def _one(
        self, collection: str, doc: pb.Document, chunking: pb.Chunking, timeout: float, at: int = 0
    ) -> pb.Status:
        try:
            await self.check_documents(collection, [doc], timeout, first=at)
            _, failures, _ = await self._write(collection, [doc], chunking, timeout)
            if failures:
                raise failure_error(failures, 1)
            return convert.status()
        except Exception as exc:
            return item_status(exc)

    @guarded
    async def DeleteDocuments(
        self, request: pb.DeleteDocumentsRequest, context: Ctx
    ) -> pb.DeleteDocumentsResponse:
        validate.count(len(request.ids), "ids", validate.MAX_DELETE_IDS, "ids")
        ids = validate.ids(list(request.ids), "ids", unique=False)  # as the store checks them
        where = route(ids, len(self.shards))
        requests = {
            s: pb.DeleteDocumentsRequest(collection=request.collection, ids=[ids[i] for i in pos])
            for s, pos in where.items()
        }
        answers = await self.shards.each("DeleteDocuments", requests, self.timeout(context), write=True)
        ok, failures = split(answers)
        if failures:
            note = written_note(ok, (f.shard for f in failures)).replace("written", "deleted")
            raise failure_error(failures, len(self.shards), what=note)
        return pb.DeleteDocumentsResponse(deleted=sum(a.deleted for a in ok.values()))

    @guarded
    async def GetDocuments(self, request: pb.GetDocumentsRequest, context: Ctx) -> pb.GetDocumentsResponse:
        validate.count(len(request.ids), "ids", validate.MAX_GET_IDS, "ids (page larger requests)")
        ids = validate.ids(list(request.ids), "ids", unique=False)  # as the store checks them
        where = route(ids, len(self.shards))
        requests = {
            s: pb.GetDocumentsRequest(
                collection=request.collection,
                ids=[ids[i] for i in pos],
                include_vectors=request.include_vectors,
            )
            for s, pos in where.items()
        }
        ok, failures = split(await self.shards.each("GetDocuments", requests, self.timeout(context)))
        if failures:
            raise failure_error(failures, len(self.shards))
        out: list[pb.StoredDocument | None] = [None] * len(ids)
        room = self.settings.max_message_mb * 1024 * 1024 - 1024
        for s, pos in where.items():
            for i, doc in zip(pos, ok[s].documents, strict=True):
                out[i] = doc
                room -= doc.ByteSize() + 8
        if room < 0:
            raise TooLarge(
                f"the {len(ids)} documents asked for exceed the {self.settings.max_message_mb} MiB message "
                "limit; ask for fewer ids per call"
            )
        return pb.GetDocumentsResponse(documents=[d for d in out if d is not None])

    # ------------------------------------------------------------------ collections
    @guarded
    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: Ctx
    ) -> pb.CreateCollectionResponse:
        """A retry finishes a partial create: shards that already hold the collection with the same
        config count as done (not when every shard had it: ALREADY_EXISTS, as from one server)."""
        self.forget(request.name)
        timeout = self.timeout(context)
        ok, failures = split(await self.shards.all("CreateCollection", request, timeout, write=True))
        had = [f for f in failures if f.code == grpc.StatusCode.ALREADY_EXISTS]
        rest = [f for f in failures if f.code != grpc.StatusCode.ALREADY_EXISTS]
        where = f"shards {sorted(ok)} created it" if ok else ""
        if had:
            where += f"{'; ' if where else ''}shards {[f.shard for f in had]} already had it"
        if rest:
            raise failure_error(rest, len(self.shards), what=where)
        if not ok:
            raise failure_error(had, len(self.shards))
        if had:  # the shards that had it must hold what was asked for
            want = ok[min(ok)].collection.config
            got, down = split(
                await self.shards.each(
                    "GetCollection",
                    {f.shard: pb.GetCollectionRequest(name=request.name) for f in had},
                    timeout,
                )
            )
            if down:
                raise failure_error(down, len(self.shards), what=where)
            for s in sorted(got):
                if got[s].collection.config != want:
                    raise ShardError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"shard {s} ({self.shards.addresses[s]}) already holds collection {request.name!r} "
                        f"with another config ({got[s].collection.config}); {where}",
                    )
            ok.update(got)
        return pb.CreateCollectionResponse(
            collection=merge_collections([ok[s].collection for s in sorted(ok)])
        )

    @guarded
    async def GetCollection(self, request: pb.GetCollectionRequest, context: Ctx) -> pb.GetCollectionResponse:
        ok = await self._admin("GetCollection", request, context, write=False)
        return pb.GetCollectionResponse(collection=merge_collections([ok[s].collection for s in sorted(ok)]))

    @guarded
    async def UpdateCollection(
        self, request: pb.UpdateCollectionRequest, context: Ctx
    ) -> pb.UpdateCollectionResponse:
        ok = await self._admin("UpdateCollection", request, context)
        return pb.UpdateCollectionResponse(
            collection=merge_collections([ok[s].collection for s in sorted(ok)])
        )

    @guarded
    async def Calibrate(self, request: pb.CalibrateRequest, context: Ctx) -> pb.CalibrateResponse:
        ok = await self._admin("Calibrate", request, context)
        return pb.CalibrateResponse(collection=merge_collections([ok[s].collection for s in sorted(ok)]))

    @guarded
    async def DeleteCollection(
        self, request: pb.DeleteCollectionRequest, context: Ctx
    ) -> pb.DeleteCollectionResponse:
        """Idempotent across shards: after a partial failure, deleting again finishes the job (a shard
        that no longer has the collection counts as done, unless no shard had it)."""
        self.forget(request.name)
        answers = await self.shards.all("DeleteCollection", request, self.timeout(context), write=True)
        ok, failures = split(answers)
        gone = [f for f in failures if f.code == grpc.StatusCode.NOT_FOUND]
        rest = [f for f in failures if f.code != grpc.StatusCode.NOT_FOUND]
        if rest:
            raise failure_error(rest, len(self.shards), what=f"shards {sorted(ok)} deleted it" if ok else "")
        if not ok:
            raise failure_error(gone, len(self.shards))
        return pb.DeleteCollectionResponse()

    @guarded
    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: Ctx
    ) -> pb.ListCollectionsResponse:
        size = request.page_size or 100
        if not 1 <= size <= 1000:
            raise InvalidArgument(
                "page_size", f"must be in [1, 1000] (0 means 100); given {request.page_size}"
            )
        ok = await self._admin("ListCollections", request, context, write=False)
        page, token = merge_list_pages([ok[s] for s in sorted(ok)], size)
        return pb.ListCollectionsResponse(collections=page, next_page_token=token)

    @guarded
    async def Snapshot(self, request: pb.SnapshotRequest, context: Ctx) -> pb.SnapshotResponse:
        """Every replica of every shard snapshots under the same name (a timestamp chosen here when
        empty), each on its own volume; ``path`` lists the first replica's of each shard as
        ``shard i (address): path``, one per line."""
        name = request.name or time.strftime("snapshot-%Y%m%d-%H%M%S", time.gmtime())
        ok = await self._admin("Snapshot", pb.SnapshotRequest(name=name), context)
        return pb.SnapshotResponse(
            path="\n".join(f"shard {s} ({self.shards.addresses[s]}): {ok[s].path}" for s in sorted(ok)),
            size_bytes=sum(a.size_bytes for a in ok.values()),
            seconds=max(a.seconds for a in ok.values()),
        )


# ---------------------------------------------------------------------------------- life cycle
@dataclass
class RouterRunning(Running):
    router: RouterSearch | None = None
    watcher: asyncio.Task[None] | None = None

    async def drain(self, grace_s: float, delay_s: float = 0.0) -> None:
        if self.watcher is not None:
            self.watcher.cancel()
        await self.set_serving(False)
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        await self.server.stop(grace_s)
        self.engine.batcher.stop()
        if self.router is not None:
            await self.router.shards.close()


async def start_router(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    announce: Callable[[int], None] | None = None,
    model: Embedder | None = None,
) -> RouterRunning:
    """Bind, load the model, and serve as the router over ``settings.shard_addresses()``."""

    metrics = metrics or Metrics()
    tls = check_tls(settings)
    addresses = settings.shard_addresses()
    max_bytes = settings.max_message_mb * 1024 * 1024
    server = grpc.aio.server(
        interceptors=[Edge(settings.token)],
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
            *SERVER_OPTIONS,
        ],
    )
    shards = ShardSet(addresses, settings)
    try:
        health, port = await listen(server, settings, tls)
        embedding = EmbeddingServicer(None, metrics)
        search = RouterSearch(None, shards, metrics)
        pb_grpc.add_EmbeddingServiceServicer_to_server(embedding, server)
        pb_grpc.add_SearchServiceServicer_to_server(search, server)
        await server.start()
        if announce is not None:
            announce(port)
        log.info("router listening on %s:%d over %d shards: %s", settings.host, port, len(shards), addresses)
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
        engine = Engine(settings, model, cast(Store, _NoStore()))
        engine.batcher._on_batch = metrics.on_batch
        engine.batcher.start()
        metrics.watch(
            lambda: engine.batcher.depth,
            dict,
            dict,
            queued_seconds=engine.batcher.estimated_wait_s,
        )
        await asyncio.to_thread(model.warmup)
        await asyncio.to_thread(engine.calibrate)
        embedding.attach(engine)
        search.attach(engine)
    except BaseException:
        await server.stop(None)
        await shards.close()
        raise
    running = RouterRunning(server, port, engine, health, metrics, None, search)
    running.watcher = asyncio.ensure_future(shards.watch())  # replicas added or gone (DNS)
    await running.set_serving(True)
    log.info("routing: model %s from %s", model.manifest.model_id, settings.model)
    return running
