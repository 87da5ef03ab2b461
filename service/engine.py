"""The service's domain layer: embedding through the batcher, and the store, behind plain methods.

No gRPC here: servicers convert protos to these calls and back. Blocking store work (synced commits,
scans) runs in worker threads so the event loop keeps serving; searches are scheduled by
``service.searcher`` (event loop when idle, threads, batches under load).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import numpy.typing as npt

from zembed.service.batcher import Batcher, Latency, call_deadline
from zembed.service.config import Settings
from zembed.service.errors import InvalidArgument, Unavailable
from zembed.service.reservoir import QueryReservoir
from zembed.service.runtime.manifest import Manifest
from zembed.service.runtime.text import Overflow, TooLong
from zembed.service.searcher import SearchScheduler
from zembed.store import Collection, CollectionConfig, CollectionInfo, Hit, RescoreDtype, Store
from zembed.store.calibrate import SAMPLE_QUERIES, MeasureStopped
from zembed.store.config import Calibration
from zembed.store.errors import WouldBlock
from zembed.store.params import DEFAULT_TOP_K, SearchParams

F32 = npt.NDArray[np.float32]
HOSTED_BYTES_PER_INPUT = 150  # the hosted zembed API's byte count: 150 + UTF-8 length per input
INLINE_TOKENIZE_CHARS = 4096  # calls up to this many characters tokenize on the loop (< ~0.2 ms)

log = logging.getLogger(__name__)


class Tokenizer(Protocol):
    def encode_counted(
        self, texts: Sequence[str], input_type: str | None, overflow: Overflow = ...
    ) -> tuple[list[list[int]], list[int]]: ...

    def count(self, texts: Sequence[str], input_type: str | None) -> list[int]: ...


class Embedder(Protocol):
    """What the service needs of a model: ``service.runtime.model.EmbeddingModel``, or a fake in tests."""

    manifest: Manifest
    provider: str

    @property
    def text(self) -> Tokenizer: ...

    @property
    def dims(self) -> list[int]: ...

    def run(self, ids: Sequence[Sequence[int]]) -> F32: ...

    def project(self, emb: F32, dim: int) -> F32: ...

    def warmup(self) -> None: ...


@dataclass(frozen=True)
class Embedded:
    vectors: F32  # [n, dim], unit length
    tokens: list[int]
    truncated: list[bool]
    dim: int

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)


@dataclass
class SearchSizes:
    """Searches run and the sizes they were planned with (Hamming shortlist, float reads), summed;
    ``high_recall`` counts those with ``SearchParams.high_recall`` (latency_mode high)."""

    searches: int = 0
    high_recall: int = 0
    shortlist: int = 0
    float_reads: int = 0


def _noop(seconds: float) -> None:
    pass


def usage_bytes(texts: Sequence[str]) -> int:
    return sum(HOSTED_BYTES_PER_INPUT + len(t.encode("utf-8")) for t in texts)


class Engine:
    def __init__(
        self,
        settings: Settings,
        model: Embedder,
        store: Store,
        on_search: Callable[[float], None] = _noop,
    ) -> None:
        self.searcher = SearchScheduler(
            settings.inline_search_rows, max_batch=settings.search_batch, on_search=on_search
        )
        self.settings = settings
        self.model = model
        self.store = store
        self.batcher = Batcher(
            model.run,
            max_batch=settings.max_batch,
            max_tokens=settings.max_batch_tokens,
            max_wait_s=settings.max_wait_ms / 1000.0,
            capacity=settings.queue_items,
            max_pad_ratio=settings.max_pad_ratio,
            max_queue_s=settings.max_queue_s,
            on_idle=self.release_memory,
        )
        self.search_sizes = SearchSizes()
        self._measuring: dict[str, asyncio.Task[None]] = {}  # background re-measurements by collection
        # the query vectors searched since each collection was last measured (memory only): the
        # background re-measurement measures on them (service/reservoir.py)
        self.recent_queries = QueryReservoir()
        self._stopping = threading.Event()  # set at shutdown: measurements stop at their next setting

    def release_memory(self) -> None:
        """Called by the inference thread once idle after a burst. ONNX Runtime keeps its CPU arena at
        the size of the largest batch it ran (hundreds of MB for long inputs); one tiny run with arena
        shrinkage hands the arena's free regions back (the batcher then calls malloc_trim)."""
        session = getattr(self.model, "session", None)
        if session is None:
            return
        import onnxruntime as ort

        opts = ort.RunOptions()
        opts.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        one = np.ones((1, 1), dtype=np.int64)
        session.run(None, {t.name: one for t in self.model.manifest.inputs}, opts)

    def calibrate(self, rows: int = 16, length: int = 128) -> float:
        """Time one padded batch (after warm-up) to seed the batcher's inference rate, so the work
        bound holds from the first call. Returns tokens per second."""
        length = max(1, min(length, self.model.manifest.max_length))
        ids = [[1] * length for _ in range(rows)]
        t = time.perf_counter()
        self.model.run(ids)
        rate = rows * length / max(time.perf_counter() - t, 1e-6)
        self.batcher.rate = rate
        return rate

    def estimate_tokens(self, texts: Sequence[str]) -> int:
        """Tokens a call will take, before tokenizing (admission): about one token per two
        characters plus prompt and suffix, at most ``max_length`` each; corrected after tokenizing."""
        cap = self.model.manifest.max_length
        return sum(min(cap, len(t) // 2 + 8) for t in texts)

    async def count_tokens(self, texts: Sequence[str], input_type: str | None) -> list[int]:
        self.check_texts(texts)
        it = self.input_type(input_type)
        if sum(len(t) for t in texts) <= INLINE_TOKENIZE_CHARS:
            return self.model.text.count(texts, it)
        return await asyncio.to_thread(self.model.text.count, texts, it)

    # ------------------------------------------------------------------ embedding
    def check_texts(
        self, texts: Sequence[str], field: str = "inputs", names: Sequence[str] | None = None
    ) -> None:
        """``names`` are the per-text field names (default ``inputs[i]``)."""
        if not texts:
            raise InvalidArgument(field, "must not be empty")
        if len(texts) > self.settings.max_inputs:
            raise InvalidArgument(
                field, f"must hold at most {self.settings.max_inputs} inputs; given {len(texts)}"
            )
        for i, t in enumerate(texts):
            name = names[i] if names is not None else f"{field}[{i}]"
            if not t:
                raise InvalidArgument(name, "must not be empty")
            if len(t) > self.settings.max_chars:
                raise InvalidArgument(
                    name, f"must be at most {self.settings.max_chars} characters; given {len(t)}"
                )

    def check_dim(self, dim: int, field: str = "dimensions") -> int:
        if dim == 0:
            return self.model.manifest.hidden_size
        if dim not in self.model.dims:
            raise InvalidArgument(field, f"must be one of {self.model.dims} (or 0 for native); given {dim}")
        return dim

    def input_type(self, name: str | None) -> str | None:
        return name if name is not None else self.model.manifest.default_prompt

    async def embed(
        self,
        texts: Sequence[str],
        input_type: str | None,
        dim: int,
        overflow: Overflow = Overflow.TRUNCATE,
        *,
        wait: bool = False,
        field: str = "inputs",
        names: Sequence[str] | None = None,
        latency: Latency = Latency.FAST,
    ) -> Embedded:
        """``latency``: the batcher lane; SLOW calls wait for room (as with ``wait``)."""
        self.check_texts(texts, field, names)
        dim = self.check_dim(dim)
        it = self.input_type(input_type)
        deadline = call_deadline.get()
        # admission first (microseconds, no await when refused), then tokenize off the event loop
        room = await self.batcher.reserve(
            len(texts),
            self.estimate_tokens(texts),
            wait=wait or latency is Latency.SLOW,
            deadline=deadline,
            lane=latency,
        )
        try:
            if sum(len(t) for t in texts) <= INLINE_TOKENIZE_CHARS:
                ids, full = self.model.text.encode_counted(texts, it, overflow)  # one tokenization
            else:
                ids, full = await asyncio.to_thread(self.model.text.encode_counted, texts, it, overflow)
        except TooLong as exc:
            room.release()
            raise InvalidArgument(
                names[exc.index] if names is not None else f"{field}[{exc.index}]",
                f"must be at most {exc.limit} tokens with prompt and suffix (truncation=STRICT); "
                f"given {exc.tokens}",
            ) from None
        except BaseException:
            room.release()
            raise
        emb = await self.batcher.submit(ids, reservation=room, deadline=deadline)
        vectors = self.model.project(emb, dim)
        return Embedded(
            vectors, [len(x) for x in ids], [len(x) < n for x, n in zip(ids, full, strict=True)], dim
        )

    # ------------------------------------------------------------------ collections
    def default_config(self, code_bits: int = 0, rescore_dims: int = 0, **kw: Any) -> CollectionConfig:
        """Model-aware defaults: 640-bit codes when the model offers 640 dims, else native; rescore native."""
        m = self.model.manifest
        if code_bits == 0:
            code_bits = 640 if 640 in m.dims else m.hidden_size
        if rescore_dims == 0:
            rescore_dims = m.hidden_size
        if kw.get("rescore_dtype") in (None, ""):
            kw["rescore_dtype"] = RescoreDtype.FLOAT16
        if kw.get("calibration") in (None, ""):
            kw["calibration"] = Calibration.AUTO
        if not kw.get("calibration_sample"):
            kw.pop("calibration_sample", None)
        return CollectionConfig(code_bits=code_bits, rescore_dims=rescore_dims, model=m.model_id, **kw)

    def vectors_from_embedding(self, cfg: CollectionConfig, emb: F32, field: str) -> tuple[F32, F32]:
        """The code-dims and rescore-dims vectors of native embeddings, for a collection's config."""
        for dim, what in ((cfg.code_bits, "code_bits"), (cfg.rescore_dims, "rescore_dims")):
            if dim not in self.model.dims:
                raise InvalidArgument(
                    field,
                    f"cannot be embedded server-side: the collection's {what} {dim} is not one of the "
                    f"model's dims {self.model.dims}; send precomputed vectors",
                )
        return self.model.project(emb, cfg.code_bits), self.model.project(emb, cfg.rescore_dims)

    async def upsert(
        self,
        name: str,
        ids: list[str],
        texts: list[str | None],
        code: list[F32 | None] | F32,
        rescore: list[F32 | None] | F32,
        metadata: Sequence[Mapping[str, Any]],
        *,
        wait: bool = False,
    ) -> tuple[int, int, int]:
        """Returns (written, tokens, bytes). Texts are embedded as documents; all-or-nothing. ``code``
        may be one matrix (every document with vectors of one length: the bulk path, not copied)."""
        coll = self.store.collection(name)
        cfg = coll.config
        n = len(ids)
        if isinstance(code, np.ndarray):
            if code.shape[1] != cfg.code_bits:
                raise InvalidArgument(
                    "documents[0].vectors.code", f"must have length {cfg.code_bits}; given {code.shape[1]}"
                )
            if isinstance(rescore, np.ndarray):  # the columnar form's matrix
                resc: F32 | None = rescore
            elif cfg.rescore_dims == cfg.code_bits:
                resc = None
            else:
                resc = _stack(rescore, cfg.rescore_dims, "documents[{i}].vectors.rescore")
            written = await asyncio.to_thread(coll.upsert, ids, code, resc, metadata)
            self.remeasure_if_due(name, coll)
            return written, 0, 0
        code_rows: list[F32 | None] = list(code)
        resc_rows: list[F32 | None] = list(rescore)
        text_idx = [i for i, t in enumerate(texts) if t is not None]
        tokens = 0
        nbytes = 0
        if text_idx:
            batch_texts = [texts[i] or "" for i in text_idx]
            emb = await self.embed(
                batch_texts,
                "document",
                0,
                wait=wait,
                field="documents",
                names=[f"documents[{i}].text" for i in text_idx],
                # bulk writes (streams: they wait for room) batch in the SLOW lane, so queries overtake them
                latency=Latency.SLOW if wait else Latency.FAST,
            )
            cv, rv = self.vectors_from_embedding(cfg, emb.vectors, "documents.text")
            for j, i in enumerate(text_idx):
                code_rows[i], resc_rows[i] = cv[j], rv[j]
            tokens, nbytes = emb.total_tokens, usage_bytes(batch_texts)
        for i in range(n):
            if code_rows[i] is None:
                raise InvalidArgument(f"documents[{i}]", "must have text or vectors")
        code_m = _stack(code_rows, cfg.code_bits, "documents[{i}].vectors.code")
        same = cfg.rescore_dims == cfg.code_bits and all(r is None or len(r) == 0 for r in resc_rows)
        resc_m = None if same else _stack(resc_rows, cfg.rescore_dims, "documents[{i}].vectors.rescore")
        written = await asyncio.to_thread(coll.upsert, ids, code_m, resc_m, metadata)
        self.remeasure_if_due(name, coll)
        return written, tokens, nbytes

    async def stop_background(self) -> None:
        """At shutdown, before the store closes: measurements stop at their next setting and are
        awaited (their worker threads read the store)."""
        self._stopping.set()
        tasks = [t for t in self._measuring.values() if t is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks)

    def remeasure_if_due(self, name: str, coll: Collection) -> asyncio.Task[None] | None:
        """Start measuring the collection's recall table again in the background when it has grown
        ``--remeasure-growth`` times past the size it was measured at (one at a time per collection;
        writers are not blocked; a failure is logged and retried at the next write)."""
        if name in self._measuring or not coll.measure_due(self.settings.remeasure_growth):
            return None
        cfg = coll.config
        queries = self.recent_queries.take(name, cfg.code_bits, cfg.rescore_dims)
        if queries is None and cfg.rescore_dims != cfg.code_bits:
            return None  # stored rows cannot be queries here: wait for enough real ones

        async def run() -> None:
            try:
                code, rescore = queries if queries is not None else (None, None)
                info = await asyncio.to_thread(coll.measure, code, rescore, stop=self._stopping.is_set)
                log.info(
                    "collection %s: recall table measured again at %d documents on %s "
                    "(defaults: recall@10 %s)",
                    name,
                    info.measured_at,
                    f"{len(code)} recent queries" if code is not None else "stored rows (leave-one-out)",
                    info.measured_recall,
                )
            except MeasureStopped:
                log.info("collection %s: measuring its recall table stopped (shutting down)", name)
            except Exception as exc:  # a drop, a recalibration or a close meanwhile: next write retries
                log.warning("collection %s: measuring its recall table again failed: %s", name, exc)
                if isinstance(exc, WouldBlock) and queries is not None:  # gave way: retried with them
                    self.recent_queries.give_back(name, *queries)
            finally:
                self._measuring.pop(name, None)

        task = asyncio.get_running_loop().create_task(run())
        self._measuring[name] = task
        return task

    async def search(
        self,
        name: str,
        text: str | None,
        code: F32 | None,
        rescore: F32 | None,
        params: SearchParams | None = None,
        *,
        top_k: int = DEFAULT_TOP_K,
        oversampling: int | None = None,
        rescore_on: bool = True,
        flt: Mapping[str, Any] | None = None,
        include_metadata: bool = True,
        overflow: Overflow = Overflow.TRUNCATE,
        wait: bool = False,
        latency: Latency = Latency.FAST,
    ) -> tuple[list[Hit], int, int]:
        """``params`` as built at the edge; or the keyword form (built and checked here).
        ``latency`` is the query embedding's lane (the sizes are the params' ``high_recall``)."""
        coll = self.store.collection(name)
        if params is None:
            params = SearchParams.create(
                top_k=top_k,
                max_top_k=self.settings.max_top_k,
                oversampling=oversampling,
                rescore=rescore_on,
                filter=flt,
                include_metadata=include_metadata,
            )
        tokens = nbytes = 0
        if text is not None:
            emb = await self.embed(
                [text], "query", 0, overflow, wait=wait, field="text", names=["text"], latency=latency
            )
            cv, rv = self.vectors_from_embedding(coll.config, emb.vectors, "text")
            code, rescore = cv[0], rv[0]
            tokens, nbytes = emb.total_tokens, usage_bytes([text])
        if code is None:
            raise InvalidArgument("query", "must be text or vectors")
        if rescore is not None and len(rescore) == 0:
            rescore = None
        plan = coll.plan(params)
        sizes = self.search_sizes
        sizes.searches += 1
        sizes.high_recall += params.high_recall
        sizes.shortlist += plan.shortlist
        sizes.float_reads += plan.float_reads
        hits = await self.searcher.search(
            coll,
            code,
            rescore,
            params,
        )
        # sampled once the store took the query (a refused one must not replace or poison the sample)
        self.recent_queries.add(name, code, rescore, coll.config.rescore_dims)
        return hits, tokens, nbytes

    async def calibrate_collection(
        self,
        name: str,
        texts: Sequence[str],
        code: F32 | None,
        rescore: F32 | None,
        measure_only: bool,
    ) -> CollectionInfo:
        """Calibrate a collection still collecting, or measure its recall table again (final ones,
        and ``measure_only``), with workload sample queries when given (texts embedded as queries,
        or vectors; not both)."""
        coll = self.store.collection(name)
        given = len(texts) or (0 if code is None else len(code))
        if given > SAMPLE_QUERIES:
            field = "sample_texts" if texts else "sample_vectors"
            raise InvalidArgument(field, f"at most {SAMPLE_QUERIES} sample queries; given {given}")
        if texts:
            if code is not None:
                raise InvalidArgument("sample_vectors", "give sample_texts or sample_vectors, not both")
            names = [f"sample_texts[{i}]" for i in range(len(texts))]
            emb = await self.embed(
                texts, "query", 0, wait=True, field="sample_texts", names=names, latency=Latency.SLOW
            )
            code, rescore = self.vectors_from_embedding(coll.config, emb.vectors, "sample_texts")
        # one measurement at a time per collection: a background one in flight finishes first (else
        # it would write its stored-row table over this call's when it ends), none starts meanwhile
        while (busy := self._measuring.get(name)) is not None:
            await asyncio.wait([busy])
        me = cast("asyncio.Task[None]", asyncio.current_task())
        self._measuring[name] = me
        try:
            if measure_only or coll.info().calibration_final:
                return await asyncio.to_thread(coll.measure, code, rescore, stop=self._stopping.is_set)
            await asyncio.to_thread(coll.calibrate, code)
            return coll.info()
        except WouldBlock as exc:  # recalibrated while it was measured: a retry measures again
            raise Unavailable(str(exc)) from None
        finally:
            if self._measuring.get(name) is me:
                del self._measuring[name]


def _stack(rows: Sequence[F32 | None], dims: int, field: str) -> F32:
    out = np.empty((len(rows), dims), dtype=np.float32)
    for i, r in enumerate(rows):
        if r is None or len(r) != dims:
            got = 0 if r is None else len(r)
            raise InvalidArgument(field.format(i=i), f"must have length {dims}; given {got}")
        out[i] = r
    return out
