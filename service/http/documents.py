"""Hosted-API documents on the store: a document is one row per passage (``service.chunking``).

Row ids are ``path + "\\x1f" + passage number``; row 0 is the document's head and also carries the
user's metadata and the document's facts (id, creation time, size, passage count, page starts).
Every row carries the document's filter tokens (``service.http.filters``) and its passage (offsets,
page, text), so a search over passages can filter, and answer snippets, from the rows it finds. A
document's score is its best passage's.

Paths may not hold control characters (so row ids sort like paths and ``path_gt`` is a key range) and
take at most :data:`MAX_PATH_BYTES` UTF-8 bytes (the store's ids take 256). Writes to one collection
are serialized (409 checks, overwrite). Overwrite upserts the new passages over the old rows first and
then deletes the old document's surplus rows, so the document is never absent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from zembed.service import chunking
from zembed.service import passages as passages_engine
from zembed.service.batcher import Latency
from zembed.service.engine import Engine
from zembed.service.errors import InvalidArgument, clip
from zembed.service.http.filters import (
    MAX_METADATA_JSON,
    TOKEN_FIELDS,
    check_metadata,
    compile_filter,
    tokens,
)
from zembed.store import Collection, CollectionConfig, Hit
from zembed.store.layout import cid_prefix, id_key
from zembed.store.params import SearchParams
from zembed.store.validate import NAME_RE

F32 = npt.NDArray[np.float32]
SEP = "\x1f"
MAX_PATH_BYTES = 240
MAX_PAGES = 1024
MAX_DOCUMENT_CHARS = 4_000_000
PASSAGE_TOKENS = 512  # passages are at most min(this, the model's window) tokens
KIND = "documents"  # CollectionConfig.extra["api"] of collections made through the HTTP API


class NotDocuments(InvalidArgument):
    pass


@dataclass
class Row:
    path: str
    index: int
    start: int
    end: int
    page: int | None
    text: str


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def check_path(path: Any, field: str = "path") -> str:
    if not isinstance(path, str) or not path:
        raise InvalidArgument(field, f"must be a non-empty string; given {clip(path)}")
    if any(ord(c) < 0x20 for c in path):
        raise InvalidArgument(field, "must not contain control characters (U+0000..U+001F)")
    size = len(path.encode("utf-8", errors="surrogatepass"))
    if size > MAX_PATH_BYTES:
        raise InvalidArgument(
            field, f"must be at most {MAX_PATH_BYTES} UTF-8 bytes on this self-hosted server; given {size}"
        )
    return path


def check_name(name: Any, field: str = "collection_name") -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidArgument(
            field,
            f"must match {NAME_RE.pattern} on this self-hosted server (its store's collection names); "
            f"given {clip(name)}",
        )
    return name


def row_id(path: str, i: int) -> str:
    return f"{path}{SEP}{i}"


def split_row(rid: str) -> tuple[str, int]:
    path, _, i = rid.rpartition(SEP)
    return path, int(i)


class Documents:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._locks: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------------ collections
    def config(self) -> CollectionConfig:
        return self.engine.default_config(filterable=TOKEN_FIELDS, extra={"api": KIND})

    def collection(self, name: str) -> Collection:
        coll = self.engine.store.collection(check_name(name))
        if coll.config.extra.get("api") != KIND:
            raise NotDocuments(
                "collection_name",
                f"{clip(name)} was created over gRPC and holds vectors, not documents; use a collection "
                "made with /collections/add-collection",
            )
        return coll

    def lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    # ------------------------------------------------------------------ writing
    def passage_tokens(self) -> int:
        return min(PASSAGE_TOKENS, self.engine.model.manifest.max_length)

    def chunk(self, text: str | None, pages: Sequence[str] | None) -> chunking.Chunked:
        budget = self.passage_tokens()
        return passages_engine.split(self.engine, text, pages, budget, budget // 8)

    async def add(
        self,
        name: str,
        path: str,
        text: str | None,
        pages: Sequence[str] | None,
        metadata: Mapping[str, Any] | None,
        *,
        overwrite: bool,
        wait: bool = False,
        keep: Mapping[str, Any] | None = None,
    ) -> int:
        """Index a document; returns its number of passages. ``keep``: head facts to preserve
        (update-document re-indexes a document under its own id and creation time)."""
        coll = self.collection(name)
        check_path(path)
        meta = check_metadata(metadata)
        size_json = len(_json(meta))
        if size_json > MAX_METADATA_JSON:
            raise InvalidArgument(
                "metadata",
                f"must encode to at most {MAX_METADATA_JSON} bytes of JSON on this self-hosted server "
                f"(each value is indexed for filters in every passage); given {size_json}",
            )
        if pages is not None and len(pages) > MAX_PAGES:
            raise InvalidArgument("content.pages", f"must hold at most {MAX_PAGES} pages; given {len(pages)}")
        length = len(text or "") if pages is None else sum(len(p) + 1 for p in pages)
        if length > MAX_DOCUMENT_CHARS:
            raise InvalidArgument(
                "content", f"must be at most {MAX_DOCUMENT_CHARS} characters; given {length}"
            )
        if pages is None and not text:
            raise InvalidArgument("content.text", "must not be empty")
        chunked = await asyncio.to_thread(self.chunk, text, pages)
        passages = chunked.passages
        if not passages:
            raise InvalidArgument("content.pages", "must hold some text (every page is empty)")
        async with self.lock(name):
            old = await asyncio.to_thread(self._head, coll, path)
            if old is not None and not overwrite:
                raise Conflict(f"path {clip(path)} already exists in collection {clip(name)}; set overwrite")
            # embed in calls of at most max_inputs passages
            native, _ = await passages_engine.embed(
                self.engine, [p.text for p in passages], wait=wait, field="content"
            )
            code, resc = self.engine.vectors_from_embedding(coll.config, native, "content")
            toks = tokens(meta)
            head: dict[str, Any] = {
                "id": (keep or {}).get("id") or str(uuid.uuid4()),
                "created": (keep or {}).get("created") or now(),
                "n": len(passages),
                "size": len(chunked.text.encode("utf-8", errors="surrogatepass")),
                "len": len(chunked.text),
                "pages": chunked.page_starts,
            }
            rows_meta: list[dict[str, Any]] = []
            for i, p in enumerate(passages):
                m: dict[str, Any] = {f: toks for f in TOKEN_FIELDS}
                m["_d"] = {"s": p.start, "e": p.end, "pg": p.page, "t": p.text}
                if i == 0:
                    m["_m"] = meta
                    m["_h"] = head
                rows_meta.append(m)
            ids = [row_id(path, i) for i in range(len(passages))]
            same = coll.config.rescore_dims == coll.config.code_bits
            await asyncio.to_thread(coll.upsert, ids, code, None if same else resc, rows_meta)
            if old is not None and old["n"] > len(passages):
                stale = [row_id(path, i) for i in range(len(passages), old["n"])]
                await asyncio.to_thread(coll.delete, stale)
        return len(passages)

    async def update(self, name: str, path: str, metadata: Mapping[str, Any] | None) -> None:
        """New metadata replaces the old: the document is re-indexed from its stored passages' text
        (the filter tokens live in every passage row), under its own id and creation time."""
        coll = self.collection(name)
        check_path(path)
        head = await asyncio.to_thread(self._head, coll, path)
        if head is None:
            raise Missing(f"path {clip(path)} is not in collection {clip(name)}")
        if metadata is None:
            return
        text, pages = await asyncio.to_thread(self._content, coll, path, head)
        await self.add(name, path, text, pages, metadata, overwrite=True, keep=head, wait=True)

    async def delete(self, name: str, paths: Sequence[str]) -> list[str]:
        coll = self.collection(name)
        for i, p in enumerate(paths):
            check_path(p, f"path[{i}]")
        deleted: list[str] = []
        async with self.lock(name):
            for p in dict.fromkeys(paths):
                head = await asyncio.to_thread(self._head, coll, p)
                if head is None:
                    continue
                await asyncio.to_thread(coll.delete, [row_id(p, i) for i in range(head["n"])])
                deleted.append(p)
        if not deleted:
            raise Missing(f"no document with path(s) {clip(list(paths))} in collection {clip(name)}")
        return deleted

    # ------------------------------------------------------------------ reading
    def _head_record(self, coll: Collection, path: str) -> dict[str, Any] | None:
        rec = coll.get([row_id(path, 0)])[0]
        return None if rec is None else rec.metadata

    def _head(self, coll: Collection, path: str) -> dict[str, Any] | None:
        m = self._head_record(coll, path)
        return None if m is None else dict(m["_h"])

    def _content(
        self, coll: Collection, path: str, head: Mapping[str, Any]
    ) -> tuple[str | None, list[str] | None]:
        recs = coll.get([row_id(path, i) for i in range(head["n"])])
        rows = [r.metadata["_d"] for r in recs if r is not None]
        text = assemble(rows, head["len"])
        starts: list[int] | None = head.get("pages")
        if starts is None:
            return text, None
        ends = [*(s - 1 for s in starts[1:]), len(text)]
        return None, [text[s:e] for s, e in zip(starts, ends, strict=True)]

    def info(self, name: str, path: str, include_content: bool, base_url: str) -> dict[str, Any]:
        coll = self.collection(name)
        check_path(path)
        m = self._head_record(coll, path)
        if m is None:
            raise Missing(f"path {clip(path)} is not in collection {clip(name)}")
        doc = self._describe(name, path, m, base_url)
        doc["content"] = None
        if include_content:
            text, pages = self._content(coll, path, m["_h"])
            doc["content"] = text if pages is None else chunking.PAGE_SEPARATOR.join(pages)
        return doc

    def content(self, name: str, path: str) -> str:
        coll = self.collection(name)
        check_path(path)
        head = self._head(coll, path)
        if head is None:
            raise Missing(f"path {clip(path)} is not in collection {clip(name)}")
        text, pages = self._content(coll, path, head)
        return text or "" if pages is None else chunking.PAGE_SEPARATOR.join(pages)

    def page(self, name: str, path: str, index: int, include_content: bool) -> dict[str, Any]:
        coll = self.collection(name)
        check_path(path)
        head = self._head(coll, path)
        if head is None:
            raise Missing(f"path {clip(path)} is not in collection {clip(name)}")
        n_pages = len(head["pages"]) if head.get("pages") is not None else 1
        if not 0 <= index < n_pages:
            raise Missing(f"page_index {index} is not in {clip(path)} ({n_pages} pages)")
        content = None
        if include_content:
            text, pages = self._content(coll, path, head)
            content = text if pages is None else pages[index]
        return {
            "id": f"{head['id']}:{index}",
            "collection_name": name,
            "path": path,
            "page_index": index,
            "image_url": None,
            "content": content,
        }

    def _describe(self, name: str, path: str, m: Mapping[str, Any], base_url: str) -> dict[str, Any]:
        h = m["_h"]
        return {
            "id": h["id"],
            "collection_name": name,
            "path": path,
            "file_url": file_url(base_url, name, path),
            "index_status": "indexed",
            "metadata": m.get("_m", {}),
            "num_pages": len(h["pages"]) if h.get("pages") is not None else None,
            "size": h["size"],
            "created_at": h["created"],
        }

    def list_documents(
        self, name: str, limit: int, path_gt: str | None, path_prefix: str | None, base_url: str
    ) -> list[dict[str, Any]]:
        coll = self.collection(name)
        paths = list(self._paths(coll, path_gt, path_prefix, limit))
        recs = coll.get([row_id(p, 0) for p in paths]) if paths else []
        return [self._describe(name, p, r.metadata, base_url) for p, r in zip(paths, recs, strict=True) if r]

    def _paths(self, coll: Collection, path_gt: str | None, prefix: str | None, limit: int) -> Iterator[str]:
        """Document paths in order (head rows of the ids table), after ``path_gt``, under ``prefix``."""
        env = coll.env
        base = cid_prefix(coll.cid)
        start = id_key(coll.cid, prefix or "")
        if path_gt is not None:
            start = max(start, id_key(coll.cid, path_gt + SEP + "\x7f"))
        want = base + (prefix or "").encode("utf-8")
        n = 0
        with env.reader() as txn:
            cur = txn.cursor(db=env.dbs["ids"])
            if not cur.set_range(start):
                return
            for k in cur.iternext(values=False):
                key = bytes(k)
                if not key.startswith(want):
                    return
                rid = key[len(base) :].decode("utf-8")
                if not rid.endswith(SEP + "0"):
                    continue
                yield rid[: -len(SEP) - 1]
                n += 1
                if n >= limit:
                    return

    def status(self, name: str | None) -> dict[str, int]:
        names = (
            [name]
            if name
            else [c.name for c in self.engine.store.list_collections() if c.config.extra.get("api") == KIND]
        )
        docs = size = 0
        for n in names:
            coll = self.collection(n)
            paths = list(self._paths(coll, None, None, 1 << 62))
            for s in range(0, len(paths), 1000):
                for r in coll.get([row_id(p, 0) for p in paths[s : s + 1000]]):
                    if r is not None:
                        docs += 1
                        size += int(r.metadata["_h"]["size"])
        return {
            "num_documents": docs,
            "num_indexed_documents": docs,
            "num_indexing_documents": 0,
            "num_parsing_documents": 0,
            "num_failed_documents": 0,
            "num_indexed_bytes": size,
        }

    # ------------------------------------------------------------------ queries
    async def passages(
        self,
        name: str,
        query: str | None,
        k: int,
        flt: Mapping[str, Any] | None,
        latency: Latency,
        group: str,
    ) -> tuple[list[tuple[Hit, Row]], int]:
        """Passage hits, best first, enough to give ``k`` distinct groups (``group``: "path",
        "page" or "passage") when the collection has them; returns (hits, query tokens).
        ``latency`` (latency_mode low/high): the query's embedding lane, and SLOW searches with
        ``SearchParams.high_recall`` (the larger shortlist)."""
        coll = self.collection(name)
        store_filter = compile_filter(flt)
        cfg = coll.config
        tokens_used = 0
        if query is None:  # filter-only: order undefined (hosted semantics); Hamming to a fixed code
            code: F32 = np.ones(cfg.code_bits, dtype=np.float32)
            rescore: F32 | None = None
            rescore_on = False
        else:
            emb = await self.engine.embed(
                [query], "query", 0, field="query", names=["query"], latency=latency
            )
            cv, rv = self.engine.vectors_from_embedding(cfg, emb.vectors, "query")
            code, rescore, rescore_on = cv[0], rv[0], True
            tokens_used = emb.total_tokens
        cap = self.engine.settings.max_top_k
        top_k = min(cap, k if group == "passage" else k * 3 + 8)
        while True:
            params = SearchParams.create(
                top_k=top_k,
                max_top_k=cap,
                rescore=rescore_on,
                filter=store_filter,
                high_recall=latency is Latency.SLOW,
            )
            hits, _, _ = await self.engine.search(name, None, code, rescore, params)
            rows = [(h, _row(h)) for h in hits]
            groups = {_group_key(r, group) for _, r in rows}
            if len(groups) >= k or len(hits) < top_k or top_k >= cap:
                return rows, tokens_used
            top_k = min(cap, top_k * 4)

    def heads(self, name: str, paths: Sequence[str]) -> dict[str, dict[str, Any]]:
        coll = self.collection(name)
        recs = coll.get([row_id(p, 0) for p in paths]) if paths else []
        return {p: r.metadata for p, r in zip(paths, recs, strict=True) if r is not None}


class Conflict(Exception):
    """The path exists and overwrite is off (HTTP 409)."""


class Missing(Exception):
    """No such document or page (HTTP 404)."""


def _group_key(r: Row, group: str) -> tuple[str, int]:
    if group == "path":
        return (r.path, 0)
    if group == "page":
        return (r.path, r.page or 0)
    return (r.path, r.index)


def _row(h: Hit) -> Row:
    path, i = split_row(h.id)
    d = (h.metadata or {}).get("_d", {})
    return Row(path, i, int(d.get("s", 0)), int(d.get("e", 0)), d.get("pg"), str(d.get("t", "")))


def assemble(rows: Sequence[Mapping[str, Any]], length: int) -> str:
    """A document's text from its (overlapping) passages; page separators fill the gaps."""
    out: list[str] = []
    pos = 0
    for d in sorted(rows, key=lambda r: int(r["s"])):
        s, e, t = int(d["s"]), int(d["e"]), str(d["t"])
        if s > pos:
            out.append(chunking.PAGE_SEPARATOR * (s - pos))
            pos = s
        if e > pos:
            out.append(t[pos - s :])
            pos = e
    if pos < length:
        out.append(chunking.PAGE_SEPARATOR * (length - pos))
    return "".join(out)


def file_url(base_url: str, name: str, path: str) -> str:
    from urllib.parse import urlencode

    return f"{base_url.rstrip('/')}/v1/documents/get-document-content?" + urlencode(
        {"collection_name": name, "path": path}
    )


def _json(v: Any) -> bytes:
    import json

    return json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode()
