"""Upsert's columnar form (``DocumentColumns``: ids, float32 blobs, metadata as JSON text) through a
real server on a loopback port (tests/fakes.py: real edge, servicers and LMDB around the fake
embedder): it stores exactly what the ``documents`` form stores, refuses bad input naming the field,
the index and the limit with nothing written, and (UpsertStream) answers one status per document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from tests.fakes import FakeServer
from zembed.service.metadata import metadata_from_proto, metadata_to_proto
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

DIM = 64
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
F32 = np.ndarray[Any, np.dtype[np.float32]]


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[Any]:
    with FakeServer(tmp_path) as srv, grpc.insecure_channel(srv.target) as ch:
        yield pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]


def create(stub: Any, name: str, **config: Any) -> None:
    config.setdefault("calibration", "none")
    stub.CreateCollection(pb.CreateCollectionRequest(name=name, config=pb.CollectionConfig(**config)))


def matrix(n: int, dim: int = DIM, seed: int = 0) -> F32:
    out: F32 = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return out


def metas(n: int) -> list[dict[str, Any]]:
    kinds: list[dict[str, Any]] = [
        {"lang": "de", "n": 0, "big": 2**63 - 1, "neg": -(2**63)},
        {"lang": "en", "x": 2.5, "flag": True, "none": None},
        {"tags": ["a", "b"], "mixed": [1, None, "s", 2.5, [True]], "empty": []},
        {"obj": {"k": {"deeper": [1, {"z": "ü"}]}}, "lang": "fr"},
        {},
    ]
    return [kinds[i % len(kinds)] | ({"i": i} if i % len(kinds) != 4 else {}) for i in range(n)]


def columns(
    ids: list[str], code: F32, meta: list[dict[str, Any]] | None = None, **extra: Any
) -> pb.DocumentColumns:
    cols = pb.DocumentColumns(ids=ids, code_f32le=code.astype("<f4").tobytes(), **extra)
    if meta is not None:
        cols.metadata_json.extend([json.dumps(m).encode() if m else b"" for m in meta])
    return cols


def get(stub: Any, name: str, ids: list[str]) -> list[pb.StoredDocument]:
    res = stub.GetDocuments(pb.GetDocumentsRequest(collection=name, ids=ids, include_vectors=True))
    return list(res.documents)


def count(stub: Any, name: str) -> int:
    return int(stub.GetCollection(pb.GetCollectionRequest(name=name)).collection.count)


def refused(stub: Any, req: pb.UpsertRequest) -> str:
    with pytest.raises(grpc.RpcError) as info:
        stub.Upsert(req)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return str(info.value.details())


@pytest.mark.parametrize(
    ("config", "rescore"),
    [({"filterable": ["lang"]}, False), ({"rescore_dims": 32, "rescore_dtype": "float32"}, True)],
)
def test_columns_store_exactly_what_documents_store(stub: Any, config: dict[str, Any], rescore: bool) -> None:
    n = 300
    code = matrix(n)
    resc = matrix(n, 32, seed=1) if rescore else None
    meta = metas(n)
    ids = [f"d{i}" for i in range(n)]
    for name in ("rows", "unary", "stream"):
        create(stub, name, **config)
    docs = [
        pb.Document(
            id=ids[i],
            vectors=pb.Vectors(
                code_f32le=code[i].tobytes(), rescore_f32le=b"" if resc is None else resc[i].tobytes()
            ),
            metadata=metadata_to_proto(meta[i]),
        )
        for i in range(n)
    ]
    stub.Upsert(pb.UpsertRequest(collection="rows", documents=docs))
    extra = {} if resc is None else {"rescore_f32le": resc.astype("<f4").tobytes()}
    assert (
        stub.Upsert(pb.UpsertRequest(collection="unary", columns=columns(ids, code, meta, **extra))).upserted
        == n
    )
    answers = list(
        stub.UpsertStream(
            iter(
                [
                    pb.UpsertStreamRequest(
                        collection="stream",
                        columns=columns(
                            ids[a : a + 100],
                            code[a : a + 100],
                            meta[a : a + 100],
                            **({} if resc is None else {"rescore_f32le": resc[a : a + 100].tobytes()}),
                        ),
                    )
                    for a in range(0, n, 100)
                ]
            )
        )
    )
    assert [(a.stored, len(a.statuses), a.status.code) for a in answers] == [(100, 100, 0)] * 3
    assert all(s.code == 0 for a in answers for s in a.statuses)
    want = get(stub, "rows", ids)
    for name in ("unary", "stream"):
        got = get(stub, name, ids)
        assert [d.found for d in got] == [True] * n
        for w, g in zip(want, got, strict=True):
            assert g.id == w.id and g.code == w.code  # the same sign bits
            assert np.asarray(g.rescore, np.float32).tobytes() == np.asarray(w.rescore, np.float32).tobytes()
            assert metadata_from_proto(g.metadata) == metadata_from_proto(w.metadata)
        assert [metadata_from_proto(d.metadata) for d in got] == meta  # every JSON type kept
    if not rescore:  # the filterable field's postings: the same hits, in the same order
        q = pb.SearchRequest(
            collection="rows",
            vectors=pb.Vectors(code_f32le=code[3].tobytes()),
            top_k=10,
            filter=[pb.Condition(field="lang", any_of=[pb.MetadataValue(string_value="fr")])],
        )
        hits = [h.id for h in stub.Search(q).hits]
        assert hits and hits[0] == "d3"
        for name in ("unary", "stream"):
            q.collection = name
            assert [h.id for h in stub.Search(q).hits] == hits


def test_unary_columns_refuse_bad_input_naming_field_index_and_limit(stub: Any) -> None:
    create(stub, "c")
    n = 10
    code = matrix(n)
    ids = [f"d{i}" for i in range(n)]

    def req(**kw: Any) -> pb.UpsertRequest:
        return pb.UpsertRequest(collection="c", columns=pb.DocumentColumns(**kw))

    blob = code.tobytes()
    msg = refused(stub, req(ids=ids, code_f32le=blob[:-4]))
    assert "columns.code_f32le" in msg and "10 x 64 x 4 = 2560 bytes; given 2556" in msg
    msg = refused(stub, req(ids=ids[:9], code_f32le=blob))  # ids count != vector rows
    assert "columns.code_f32le" in msg and "9 x 64 x 4 = 2304 bytes; given 2560" in msg
    nan = code.copy()
    nan[7, 5] = np.nan
    assert "columns.code_f32le[7][5] must be finite; given nan" in refused(
        stub, req(ids=ids, code_f32le=nan.tobytes())
    )
    zero = code.copy()
    zero[2] = 0
    assert "columns.code_f32le[2] must not be the zero vector" in refused(
        stub, req(ids=ids, code_f32le=zero.tobytes())
    )
    assert "columns.ids[4] repeats columns.ids[1]" in refused(
        stub, req(ids=[*ids[:4], "d1", *ids[5:]], code_f32le=blob)
    )
    assert "columns.ids[3] must not be empty" in refused(
        stub, req(ids=[*ids[:3], "", *ids[4:]], code_f32le=blob)
    )
    assert "columns.ids[0] must be at most 256 UTF-8 bytes; given 300" in refused(
        stub, req(ids=["é" * 150, *ids[1:]], code_f32le=blob)
    )
    assert "columns.ids must hold 1 to 10000 ids; given none" in refused(stub, req())
    big = matrix(10_001, 4)
    msg = refused(stub, req(ids=[f"x{i}" for i in range(10_001)], code_f32le=big.tobytes()))
    assert "columns.ids must hold at most 10000 documents; given 10001" in msg
    assert "columns.metadata_json must be empty or hold one entry per id (10); given 2" in refused(
        stub, req(ids=ids, code_f32le=blob, metadata_json=[b"{}", b"{}"])
    )
    bad_meta = [
        (b'{"a": 1', "columns.metadata_json[3] must be a JSON object as UTF-8 text"),
        (b"[1, 2]", "columns.metadata_json[3] must be a JSON object; given list"),
        (b'{"a": NaN}', "columns.metadata_json[3] must be a JSON object as UTF-8 text"),
        (b'{"a": 1e400}', "columns.metadata_json[3] must be a JSON object as UTF-8 text"),
        (
            b'{"a": 18446744073709551616}',
            "columns.metadata_json[3].a integer 18446744073709551616 does not fit",
        ),
        (
            b'{"a": 9223372036854775808}',
            "columns.metadata_json[3].a integer 9223372036854775808 does not fit",
        ),
        (b'{"a": "\xff"}', "columns.metadata_json[3] must be a JSON object as UTF-8 text"),
        (b'{"\\u001fpassage": 1}', "is reserved"),
        (json.dumps({"k" * 300: 1}).encode(), "must be at most 256 UTF-8 bytes; given 300"),
        (
            json.dumps({"l": list(range(1025))}).encode(),
            "columns.metadata_json[3].l must hold at most 1024 values",
        ),
        (json.dumps({f"k{i}": i for i in range(257)}).encode(), "must hold at most 256 keys; given 257"),
        (b'{"d": ' + b"[" * 21 + b"1" + b"]" * 21 + b"}", "must nest at most 20 levels"),
        (json.dumps({"s": "x" * 70_000}).encode(), "must encode to at most 65536 bytes of JSON; given 70008"),
    ]
    for raw, want in bad_meta:
        meta = [b""] * n
        meta[3] = raw
        msg = refused(stub, req(ids=ids, code_f32le=blob, metadata_json=meta))
        assert want in msg, (raw[:40], msg)
    msg = refused(
        stub,
        pb.UpsertRequest(
            collection="c", columns=pb.DocumentColumns(ids=ids, code_f32le=blob), documents=[pb.Document()]
        ),
    )
    assert "columns and `documents` (or `document`) are both set" in msg
    wrong = pb.UpsertRequest(
        collection="c",
        columns=pb.DocumentColumns(ids=ids, code_f32le=blob),
        chunking=pb.Chunking(enabled=True),
    )
    assert "chunking is for text documents" in refused(stub, wrong)
    assert count(stub, "c") == 0  # nothing written by any refused call
    with pytest.raises(grpc.RpcError) as info:
        stub.Upsert(pb.UpsertRequest(collection="nope", columns=pb.DocumentColumns(ids=ids, code_f32le=blob)))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # 20 levels of nesting, 64-bit integers at both ends and 1024 values are within the limits
    ok = [b""] * n
    ok[0] = (
        b'{"d": '
        + b"[" * 20
        + b"1"
        + b"]" * 20
        + b', "i": -9223372036854775808, "l": '
        + json.dumps(list(range(1024))).encode()
        + b"}"
    )
    assert stub.Upsert(req(ids=ids, code_f32le=blob, metadata_json=ok)).upserted == n


def test_stream_columns_refused_documents_get_their_own_status_the_rest_are_stored(stub: Any) -> None:
    create(stub, "c", filterable=["lang"])
    n = 40
    code = matrix(n)
    code[5, 0] = np.inf
    ids = [f"d{i}" for i in range(n)]
    ids[11] = "d3"  # a repeat: the later one is refused
    meta = [json.dumps({"lang": "de", "i": i}).encode() for i in range(n)]
    meta[20] = b"not json"
    meta[33] = b'{"x": 99999999999999999999}'
    bad = {5: "columns.code_f32le[5][0]", 11: "columns.ids[11] repeats columns.ids[3]",
           20: "columns.metadata_json[20]", 33: "columns.metadata_json[33].x"}  # fmt: skip
    row_doc = pb.Document(id="r1", vectors=pb.Vectors(code_f32le=matrix(1, seed=9)[0].tobytes()))
    good = pb.DocumentColumns(ids=["g1", "g2"], code_f32le=matrix(2, seed=3).tobytes())
    msgs = [
        pb.UpsertStreamRequest(collection="c", document=row_doc),  # the forms mix in one stream, in order
        pb.UpsertStreamRequest(
            collection="c", columns=pb.DocumentColumns(ids=ids, code_f32le=code.tobytes(), metadata_json=meta)
        ),
        pb.UpsertStreamRequest(
            collection="c", columns=pb.DocumentColumns(ids=ids[:3], code_f32le=b"\0" * 12)
        ),
        pb.UpsertStreamRequest(collection="missing", columns=good),
        pb.UpsertStreamRequest(collection="c", columns=good, documents=[row_doc]),
        pb.UpsertStreamRequest(collection="c", documents=[row_doc]),
        pb.UpsertStreamRequest(collection="c", columns=good),
    ]
    answers = list(stub.UpsertStream(iter(msgs)))
    assert len(answers) == len(msgs)
    assert answers[0].id == "r1" and answers[0].status.code == 0
    a = answers[1]
    assert a.stored == n - len(bad) and len(a.statuses) == n
    assert a.status.code == INVALID and a.status.message.startswith(f"{len(bad)} of {n} documents refused")
    for i, st in enumerate(a.statuses):
        if i in bad:
            assert st.code == INVALID and bad[i] in st.message, (i, st.message)
        else:
            assert st.code == 0, (i, st.message)
    whole = answers[2]  # the blob does not match the ids: every document refused, naming the sizes
    assert whole.stored == 0 and len(whole.statuses) == 3
    assert all(s.code == INVALID and "3 x 64 x 4 = 768 bytes; given 12" in s.message for s in whole.statuses)
    assert [s.code for s in answers[3].statuses] == [NOT_FOUND, NOT_FOUND]
    assert [s.code for s in answers[4].statuses] == [INVALID, INVALID]
    assert "both set" in answers[4].statuses[0].message
    assert (answers[5].stored, answers[6].stored) == (1, 2)
    stored = get(stub, "c", [*ids, "g1", "g2", "r1"])
    found = {d.id for d in stored if d.found}
    assert found == {ids[i] for i in range(n) if i not in bad} | {"g1", "g2", "r1"}
    d3 = next(d for d in stored if d.id == "d3")
    assert metadata_from_proto(d3.metadata) == {"lang": "de", "i": 3}  # the first d3, not the refused repeat
    assert count(stub, "c") == n - len(bad) + 3


def test_ids_ending_in_nul_are_stored_as_given(stub: Any) -> None:
    """The store's array path keeps ids in numpy strings, which drop trailing NULs: such a message
    takes the list path, so the id stored is the id given."""
    create(stub, "c")
    ids = ["a\0", "b", "a"]
    assert stub.Upsert(pb.UpsertRequest(collection="c", columns=columns(ids, matrix(3)))).upserted == 3
    assert [d.id for d in get(stub, "c", ids) if d.found] == ids
    assert count(stub, "c") == 3


def test_python_clients_send_vector_documents_as_columns_with_the_same_result(tmp_path: Path) -> None:
    """Client.upsert / upsert_stream (and the asyncio client, which builds the same requests) send
    documents that are an id, a code vector and flat metadata as DocumentColumns; anything else as
    documents, with the same client-side refusals as before."""
    import asyncio

    from zembed.service import client as client_mod
    from zembed.service.aio_client import AsyncClient
    from zembed.service.client import Client, Document

    code = matrix(30)
    flat = [{"lang": "de", "n": i, "x": 0.5, "ok": True, "none": None, "tags": ["a"]} for i in range(30)]
    docs: list[Any] = [{"id": f"d{i}", "code": code[i], "metadata": flat[i]} for i in range(20)]
    docs += [Document(id=f"d{i}", code=code[i].tolist(), metadata=flat[i]) for i in range(20, 30)]
    cols = client_mod.columns(docs)
    assert cols is not None and list(cols.ids) == [f"d{i}" for i in range(30)]
    assert cols.code_f32le == code.astype("<f4").tobytes()
    assert [json.loads(m) for m in cols.metadata_json] == flat
    nested = [{"id": "n", "code": code[0], "metadata": {"o": {"k": 1}}}]
    for not_columns in (nested, [{"id": "t", "text": "hello"}], [*docs[:2], {"id": "w", "code": [1.0, 2.0]}]):
        assert client_mod.columns(not_columns) is None
    with FakeServer(tmp_path) as srv, Client(srv.target) as c:
        for name in ("unary", "stream", "aio", "rows"):
            c.create_collection(name, calibration="none")
        assert c.upsert("unary", docs).upserted == 30
        assert all(a.code == grpc.StatusCode.OK for a in c.upsert_stream("stream", docs, batch=7))

        async def aio() -> None:
            async with AsyncClient(srv.target) as a:
                acks = [x async for x in a.upsert_stream("aio", docs, batch=11)]
                assert len(acks) == 30 and all(x.code == grpc.StatusCode.OK for x in acks)

        asyncio.run(aio())
        with grpc.insecure_channel(srv.target) as ch:
            s = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
            rows = [client_mod.document(d) for d in docs]  # the documents form, as before
            s.Upsert(pb.UpsertRequest(collection="rows", documents=rows))
            ids = [f"d{i}" for i in range(30)]
            want = get(s, "rows", ids)
            for name in ("unary", "stream", "aio"):
                got = get(s, name, ids)
                assert [(g.id, g.code, list(g.rescore)) for g in got] == [
                    (w.id, w.code, list(w.rescore)) for w in want
                ]
                assert [metadata_from_proto(g.metadata) for g in got] == flat
        with pytest.raises(ValueError, match=r"d1\.metadata\.x: must be finite"):  # refused here, as before
            c.upsert("unary", [docs[0], {"id": "d1", "code": code[1], "metadata": {"x": float("nan")}}])
        assert c.get_collection("unary").count == 30
