"""Long documents as passages, on the engine: the one place that splits a text with the model's own
tokenizer (``service.chunking``), embeds the passages in calls of at most ``max_inputs`` and, for
gRPC's Upsert / UpsertStream ``chunking`` option (and ``zembed ingest --chunk``), stores them as rows.
The HTTP API's documents (``service.http.documents``) split and embed through the same two functions.

A chunked document is one row per passage: the first under the document's id, passage n > 0 under
``<id>\\x1f<n>``. Every row carries the document's metadata (so filters apply to each passage) plus
its passage under the reserved key :data:`convert.PASSAGE_KEY` (document id, index, offsets, text;
the first row also the passage count), which answers hide from metadata and return as
``Hit.passage``. Upserting the document again stores the new passages first and then deletes the old
surplus ones (the document is never absent).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from zembed.service import chunking
from zembed.service.batcher import Latency
from zembed.service.convert import PASSAGE_KEY, Docs
from zembed.service.engine import Engine, usage_bytes
from zembed.service.errors import InvalidArgument
from zembed.store import Collection
from zembed.v1 import zembed_pb2 as pb

F32 = npt.NDArray[np.float32]
SEP = "\x1f"
PASSAGE_TOKENS = 512  # default passage size: at most min(this, the model's window) tokens
MAX_CHUNKED_ID_BYTES = 240  # room for the passage suffix within the store's 256-byte ids
MAX_DOCUMENT_CHARS = 4_000_000


def budget(
    engine: Engine, max_tokens: int = 0, overlap_tokens: int = 0, field: str = "chunking"
) -> tuple[int, int]:
    """(tokens per passage, overlap) from a request's values (0: the defaults), checked."""
    window = engine.model.manifest.max_length
    size = max_tokens or min(PASSAGE_TOKENS, window)
    if not 16 <= size <= window:
        raise InvalidArgument(
            f"{field}.max_tokens",
            f"must be in [16, {window}] (the model's window; 0 means {min(PASSAGE_TOKENS, window)}); "
            f"given {max_tokens}",
        )
    overlap = overlap_tokens or size // 8
    if not 0 <= overlap < size:
        raise InvalidArgument(
            f"{field}.overlap_tokens",
            f"must be in [0, {size}) (less than max_tokens); given {overlap_tokens}",
        )
    return size, overlap


def split(
    engine: Engine, text: str | None, pages: Sequence[str] | None, size: int, overlap: int
) -> chunking.Chunked:
    """Passages of a text (or of pages) counted with the model's tokenizer, prompt included.
    Blocking (tokenizes): call it off the event loop."""
    tok = engine.model.text

    def count(texts: Sequence[str]) -> list[int]:
        return tok.count(texts, "document")

    return chunking.chunk_document(text, pages, count, size, overlap)


async def embed(engine: Engine, texts: Sequence[str], *, wait: bool, field: str) -> tuple[F32, int]:
    """Native document embeddings of any number of texts (calls of at most max_inputs), and tokens."""
    step = engine.settings.max_inputs
    vecs: list[F32] = []
    tokens = 0
    for s in range(0, len(texts), step):
        lane = Latency.SLOW if wait else Latency.FAST  # bulk (waiting) writes: the SLOW lane
        emb = await engine.embed(
            list(texts[s : s + step]), "document", 0, wait=wait, field=field, latency=lane
        )
        vecs.append(emb.vectors)
        tokens += emb.total_tokens
    return np.concatenate(vecs), tokens


def row_id(doc_id: str, index: int) -> str:
    return doc_id if index == 0 else f"{doc_id}{SEP}{index}"


async def upsert(
    engine: Engine,
    collection: str,
    batch: Docs,
    chunking_opt: pb.Chunking,
    *,
    wait: bool,
    labels: Sequence[int] | None = None,
) -> tuple[int, int, int, int]:
    """Upserts ``batch`` with its text documents chunked; returns (documents, tokens, bytes, rows).
    Documents with vectors are stored as given (one row each)."""
    coll = engine.store.collection(collection)
    cfg = coll.config
    size, overlap = budget(engine, chunking_opt.max_tokens, chunking_opt.overlap_tokens)
    n = len(batch.ids)

    def name(i: int) -> str:
        return f"documents[{labels[i] if labels is not None else i}]"

    text_idx = [i for i, t in enumerate(batch.texts) if t is not None]
    if not text_idx:
        written, _, _ = await engine.upsert(
            collection, batch.ids, batch.texts, batch.code, batch.rescore, batch.metadata, wait=wait
        )
        return written, 0, 0, written
    for i in text_idx:
        doc_id = batch.ids[i]
        nbytes = len(doc_id.encode("utf-8", errors="surrogatepass"))
        if nbytes > MAX_CHUNKED_ID_BYTES:
            raise InvalidArgument(
                f"{name(i)}.id",
                f"must be at most {MAX_CHUNKED_ID_BYTES} UTF-8 bytes with chunking (passage ids add a "
                f"suffix); given {nbytes}",
            )
        length = len(batch.texts[i] or "")
        if length > MAX_DOCUMENT_CHARS:
            raise InvalidArgument(
                f"{name(i)}.text", f"must be at most {MAX_DOCUMENT_CHARS} characters; given {length}"
            )
    texts = [batch.texts[i] or "" for i in text_idx]

    def split_all() -> list[chunking.Chunked]:
        return [split(engine, t, None, size, overlap) for t in texts]

    chunked = await asyncio.to_thread(split_all)
    flat = [p.text for c in chunked for p in c.passages]
    native, tokens = await embed(engine, flat, wait=wait, field="documents.text")
    pcode, presc = engine.vectors_from_embedding(cfg, native, "documents.text")
    same = cfg.rescore_dims == cfg.code_bits
    rows = list(batch.code)  # text documents here, so one row per document (never the bulk matrix)
    ids: list[str] = []
    code: list[F32 | None] = []
    resc: list[F32 | None] = []
    meta: list[dict[str, Any]] = []
    grown: dict[str, int] = {}
    at = 0
    k = 0
    for i in range(n):
        if k < len(text_idx) and text_idx[k] == i:
            doc_id, c = batch.ids[i], chunked[k]
            k += 1
            grown[doc_id] = len(c.passages)
            for j, p in enumerate(c.passages):
                ids.append(row_id(doc_id, j))
                code.append(pcode[at])
                resc.append(None if same else presc[at])
                at += 1
                d: dict[str, Any] = {"doc": doc_id, "i": j, "s": p.start, "e": p.end, "t": p.text}
                if j == 0:
                    d["n"] = len(c.passages)
                meta.append({**batch.metadata[i], PASSAGE_KEY: d})
        else:
            ids.append(batch.ids[i])
            code.append(rows[i])
            resc.append(batch.rescore[i])
            meta.append(batch.metadata[i])
    old = await asyncio.to_thread(coll.get, list(grown))
    written, _, _ = await engine.upsert(collection, ids, [None] * len(ids), code, resc, meta, wait=wait)
    stale: list[str] = []
    for (doc_id, now), rec in zip(grown.items(), old, strict=True):
        before = (rec.metadata or {}).get(PASSAGE_KEY, {}).get("n", 1) if rec is not None else 0
        stale.extend(row_id(doc_id, j) for j in range(now, int(before)))
    if stale:
        await asyncio.to_thread(coll.delete, stale)
    return n, tokens, usage_bytes(texts), written


def delete_documents(coll: Collection, ids: Sequence[str]) -> int:
    """Delete documents by id, a chunked one with every passage row it has (the first row's passage
    record counts them); the number of documents deleted."""
    recs = coll.get(list(ids))
    rows = list(ids)
    for doc_id, rec in zip(ids, recs, strict=True):
        head = rec.metadata.get(PASSAGE_KEY) if rec is not None else None
        if isinstance(head, dict) and head.get("i") == 0:
            rows.extend(row_id(doc_id, j) for j in range(1, int(head.get("n", 1))))
    coll.delete(rows)
    return len({doc_id for doc_id, rec in zip(ids, recs, strict=True) if rec is not None})
