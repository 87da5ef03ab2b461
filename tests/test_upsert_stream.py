"""UpsertStream's bulk form (many documents per message, one status per document in order), the
vectorized Upsert path's errors, and chunking over gRPC (issues #11 item 9, #12): all through a real
server on a loopback port (the fake embedder, real LMDB)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from tests.fakes import FakeServer
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

DIM = 64  # the fake embedder's native dimension
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FakeServer]:
    with FakeServer(tmp_path) as srv:
        yield srv


@pytest.fixture
def stub(server: FakeServer) -> Iterator[Any]:
    with grpc.insecure_channel(server.target) as ch:
        yield pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]


def create(stub: Any, name: str = "docs", **config: Any) -> None:
    config.setdefault("calibration", "none")
    stub.CreateCollection(pb.CreateCollectionRequest(name=name, config=pb.CollectionConfig(**config)))


def vec(i: int, dim: int = DIM) -> np.ndarray[Any, np.dtype[np.float32]]:
    v = np.random.default_rng(i).standard_normal(dim).astype(np.float32)
    return v


def doc(i: int, dim: int = DIM, **meta: Any) -> pb.Document:
    m = {"n": pb.MetadataValue(int_value=i)} | {k: pb.MetadataValue(string_value=v) for k, v in meta.items()}
    return pb.Document(id=f"d{i}", vectors=pb.Vectors(code_f32le=vec(i, dim).tobytes()), metadata=m)


def get(stub: Any, ids: list[str], name: str = "docs") -> list[pb.StoredDocument]:
    res = stub.GetDocuments(pb.GetDocumentsRequest(collection=name, ids=ids, include_vectors=True))
    return list(res.documents)


def test_many_documents_per_message_one_status_each_in_order(stub: Any) -> None:
    create(stub)
    msgs = [
        pb.UpsertStreamRequest(collection="docs", documents=[doc(i) for i in range(300 * k, 300 * (k + 1))])
        for k in range(3)
    ]
    msgs.insert(1, pb.UpsertStreamRequest(collection="docs", document=doc(5000)))  # the single form
    answers = list(stub.UpsertStream(iter(msgs)))
    assert len(answers) == 4
    for a, m in zip(answers, msgs, strict=True):
        if m.documents:
            assert a.status.code == 0 and a.id == "" and a.stored == 300
            assert [s.code for s in a.statuses] == [0] * 300
        else:
            assert (a.id, a.status.code, a.stored, list(a.statuses)) == ("d5000", 0, 1, [])
    got = get(stub, ["d0", "d899", "d5000", "d900"])
    assert [d.found for d in got] == [True, True, True, False]
    assert got[1].metadata["n"].int_value == 899
    stored = np.asarray(got[1].rescore, dtype=np.float32)
    v = vec(899)
    np.testing.assert_allclose(stored, v / np.linalg.norm(v), atol=1e-2)  # float16 rescore


def test_refused_documents_get_their_own_status_and_the_rest_are_stored(stub: Any) -> None:
    create(stub)
    docs = [doc(i) for i in range(40)]
    nan = vec(5)
    nan[3] = np.nan
    docs[5].vectors.code_f32le = nan.tobytes()
    docs[17].vectors.code_f32le = vec(17, 32).tobytes()  # wrong length
    docs[23].id = ""
    docs[31].metadata["bad"].double_value = float("inf")
    (a,) = stub.UpsertStream(iter([pb.UpsertStreamRequest(collection="docs", documents=docs)]))
    bad = {i: s for i, s in enumerate(a.statuses) if s.code != 0}
    assert sorted(bad) == [5, 17, 23, 31]
    assert all(s.code == INVALID for s in bad.values())
    assert "documents[5].vectors.code[3]" in bad[5].message and "finite" in bad[5].message
    assert "documents[17].vectors.code" in bad[17].message and "64" in bad[17].message
    assert "documents[23].id" in bad[23].message
    assert "documents[31].metadata.bad" in bad[31].message
    assert a.stored == 36 and a.status.code == INVALID and "4 of 40 documents refused" in a.status.message
    found = [d.found for d in get(stub, [f"d{i}" for i in range(40)])]
    assert [i for i, f in enumerate(found) if not f] == [5, 17, 23, 31]


def test_a_message_with_both_forms_or_too_many_documents_is_refused_whole(stub: Any) -> None:
    create(stub)
    both = pb.UpsertStreamRequest(collection="docs", document=doc(0), documents=[doc(1), doc(2)])
    big = pb.UpsertStreamRequest(collection="docs", documents=[doc(i % 50 + 10) for i in range(10_001)])
    ok = pb.UpsertStreamRequest(collection="docs", documents=[doc(3)])
    a, b, c = stub.UpsertStream(iter([both, big, ok]))
    assert [s.code for s in a.statuses] == [INVALID, INVALID] and "both set" in a.statuses[0].message
    assert a.stored == 0
    assert b.stored == 0 and "at most 10000 documents; given 10001" in b.statuses[0].message
    assert c.status.code == 0 and c.stored == 1
    assert [d.found for d in get(stub, ["d0", "d1", "d10", "d3"])] == [False, False, False, True]


def test_stream_order_wins_for_repeated_ids_and_collections_are_kept_apart(stub: Any) -> None:
    create(stub)
    create(stub, "other")
    first, second = doc(1, lang="first"), doc(1, lang="second")
    msgs = [
        pb.UpsertStreamRequest(collection="docs", documents=[first, doc(2), second]),
        pb.UpsertStreamRequest(collection="other", documents=[doc(7)]),
        pb.UpsertStreamRequest(collection="missing", documents=[doc(8), doc(9)]),
    ]
    a, b, c = stub.UpsertStream(iter(msgs))
    assert a.stored == 3 and b.stored == 1 and c.stored == 0
    assert [s.code for s in c.statuses] == [NOT_FOUND, NOT_FOUND]
    assert get(stub, ["d1"])[0].metadata["lang"].string_value == "second"
    assert [d.found for d in get(stub, ["d7", "d2"], "other")] == [True, False]


def test_unary_upsert_bulk_path_errors_name_the_document(stub: Any) -> None:
    create(stub)
    docs = [doc(i) for i in range(10)]
    bad = vec(4)
    bad[60] = np.inf
    docs[4].vectors.code_f32le = bad.tobytes()
    with pytest.raises(grpc.RpcError) as err:
        stub.Upsert(pb.UpsertRequest(collection="docs", documents=docs))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "documents[4].vectors.code[60] must be finite" in str(err.value.details())
    short = [doc(i, 48) for i in range(3)]
    with pytest.raises(grpc.RpcError) as err:
        stub.Upsert(pb.UpsertRequest(collection="docs", documents=short))
    assert "documents[0].vectors.code must have length 64; given 48" in str(err.value.details())
    odd = [doc(0), pb.Document(id="x", vectors=pb.Vectors(code_f32le=b"\0" * 10))]
    with pytest.raises(grpc.RpcError) as err:
        stub.Upsert(pb.UpsertRequest(collection="docs", documents=odd))
    assert "documents[1].vectors.code_f32le must be a multiple of 4 bytes; given 10" in str(
        err.value.details()
    )
    assert not any(d.found for d in get(stub, [f"d{i}" for i in range(10)]))  # nothing written
    res = stub.Upsert(pb.UpsertRequest(collection="docs", documents=[doc(i) for i in range(10)]))
    assert (res.upserted, res.passages) == (10, 10)


LONG = " ".join(f"word{i} is here." for i in range(400))  # ~ 8,000 characters: many 128-token passages


def test_chunking_stores_passages_and_search_answers_them(stub: Any) -> None:
    create(stub, filterable=["lang"])
    docs = [
        pb.Document(id="long", text=LONG, metadata={"lang": pb.MetadataValue(string_value="en")}),
        pb.Document(id="short", text="a short text", metadata={"lang": pb.MetadataValue(string_value="de")}),
    ]
    res = stub.Upsert(pb.UpsertRequest(collection="docs", documents=docs, chunking=pb.Chunking(enabled=True)))
    assert res.upserted == 2 and res.passages > 10 and res.usage.total_tokens > 0
    n = res.passages - 1  # passages of "long"
    q = pb.SearchRequest(collection="docs", text="word123 is here.", top_k=5)
    hits = stub.Search(q).hits
    assert hits and all(h.id in ("long", "short") for h in hits)
    for h in hits:
        if h.id == "long":
            assert h.passage.text == LONG[h.passage.start : h.passage.end]
            assert 0 <= h.passage.index < n
            assert "\x1fpassage" not in h.metadata and h.metadata["lang"].string_value == "en"
    best = hits[0]
    assert best.id == "long" and "word123 " in best.passage.text
    only_de = pb.SearchRequest(
        collection="docs",
        text="word123",
        top_k=50,
        filter=[pb.Condition(field="lang", any_of=[pb.MetadataValue(string_value="de")])],
    )
    assert {h.id for h in stub.Search(only_de).hits} == {"short"}
    # again, shorter: the surplus passages are deleted; over the stream, with its own sizes
    shorter = pb.Document(id="long", text=LONG[:1500])
    msg = pb.UpsertStreamRequest(
        collection="docs", documents=[shorter], chunking=pb.Chunking(enabled=True, max_tokens=64)
    )
    (a,) = stub.UpsertStream(iter([msg]))
    assert a.status.code == 0 and a.stored == 1
    rows = get(stub, ["long"] + [f"long\x1f{i}" for i in range(1, n)])
    kept = sum(d.found for d in rows)
    assert 2 <= kept < n and all(d.found for d in rows[:kept]) and not any(d.found for d in rows[kept:])
    assert "\x1fpassage" not in rows[0].metadata


def test_deleting_a_chunked_document_deletes_every_passage(stub: Any) -> None:
    create(stub)
    docs = [pb.Document(id="long", text=LONG), pb.Document(id="short", text="a short text")]
    res = stub.Upsert(pb.UpsertRequest(collection="docs", documents=docs, chunking=pb.Chunking(enabled=True)))
    n = res.passages - 1
    assert n > 2
    deleted = stub.DeleteDocuments(pb.DeleteDocumentsRequest(collection="docs", ids=["long", "missing"]))
    assert deleted.deleted == 1
    rows = get(stub, ["long"] + [f"long\x1f{i}" for i in range(1, n)] + ["short"])
    assert [d.found for d in rows] == [False] * n + [True]
    assert stub.GetCollection(pb.GetCollectionRequest(name="docs")).collection.count == 1
    hits = stub.Search(pb.SearchRequest(collection="docs", text="word123 is here.", top_k=50)).hits
    assert {h.id for h in hits} == {"short"}


def test_chunking_refuses_bad_sizes_and_long_ids(stub: Any) -> None:
    create(stub)
    d = pb.Document(id="x", text=LONG)
    for chunking, field in [
        (pb.Chunking(enabled=True, max_tokens=100_000), "chunking.max_tokens"),
        (pb.Chunking(enabled=True, max_tokens=64, overlap_tokens=64), "chunking.overlap_tokens"),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            stub.Upsert(pb.UpsertRequest(collection="docs", documents=[d], chunking=chunking))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in str(err.value.details())
    long_id = pb.Document(id="i" * 250, text=LONG)
    with pytest.raises(grpc.RpcError) as err:
        stub.Upsert(
            pb.UpsertRequest(collection="docs", documents=[long_id], chunking=pb.Chunking(enabled=True))
        )
    assert "documents[0].id must be at most 240 UTF-8 bytes with chunking" in str(err.value.details())
    assert not get(stub, ["x"])[0].found
    # off by default: the same long text is one (truncated) row
    res = stub.Upsert(pb.UpsertRequest(collection="docs", documents=[d]))
    assert (res.upserted, res.passages) == (1, 1)
    (hit,) = stub.Search(pb.SearchRequest(collection="docs", text="word1", top_k=1)).hits
    assert hit.id == "x" and not hit.HasField("passage")


def test_stream_writes_embed_in_the_slow_lane_and_unary_ones_in_the_fast_lane(
    server: FakeServer, stub: Any
) -> None:
    """Bulk text writes (UpsertStream, chunked or not) queue in the SLOW lane, so queries overtake
    them; a unary Upsert keeps the FAST lane."""
    create(stub)
    stats = server.running.engine.batcher.stats
    fast0, slow0 = stats.fast_items, stats.slow_items
    docs = [pb.Document(id=f"s{i}", text=f"stream text {i}") for i in range(20)]
    (ack,) = stub.UpsertStream(iter([pb.UpsertStreamRequest(collection="docs", documents=docs)]))
    assert ack.stored == 20
    chunked = pb.UpsertStreamRequest(
        collection="docs", documents=[pb.Document(id="long", text=LONG)], chunking=pb.Chunking(enabled=True)
    )
    (ack,) = stub.UpsertStream(iter([chunked]))
    assert ack.stored == 1
    assert stats.fast_items == fast0 and stats.slow_items > slow0 + 20
    slow1 = stats.slow_items
    stub.Upsert(pb.UpsertRequest(collection="docs", documents=[pb.Document(id="u", text="unary text")]))
    assert stats.fast_items == fast0 + 1 and stats.slow_items == slow1
