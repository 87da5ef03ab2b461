"""Metadata keeps its JSON types end to end (issue #11 item 3): null, nested objects, lists of any
values, integers, floats, booleans and strings go through the proto, the store and back unchanged;
filters are defined on strings, numbers and booleans (a stored list matches when any element does)
and refuse the rest with INVALID_ARGUMENT naming the condition. Through a real server on a loopback
port (fake embedder, real LMDB), the proto converters and the store in process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from tests.fakes import FakeServer
from zembed.service.metadata import MAX_DEPTH, metadata_from_proto, metadata_to_proto, value_to_proto
from zembed.store import Calibration, CollectionConfig, Store
from zembed.store.errors import InvalidArgument
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

DIM = 64
TYPED: dict[str, Any] = {
    "s": "de",
    "i": -(2**62),
    "f": 0.25,
    "b": False,
    "none": None,
    "strings": ["x", "y"],
    "empty": [],
    "mixed": [1, "a", None, True, 2.5, {"k": [[]]}],
    "obj": {"a": {"b": {"c": [1, 2]}}, "null": None, "t": "ü"},
}


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[Any]:
    with FakeServer(tmp_path) as srv, grpc.insecure_channel(srv.target) as ch:
        s = pb_grpc.SearchServiceStub(ch)  # type: ignore[no-untyped-call]
        config = pb.CollectionConfig(calibration="none", filterable=["lang", "n", "ok", "tags", "obj"])
        s.CreateCollection(pb.CreateCollectionRequest(name="docs", config=config))
        yield s


def vec(i: int) -> bytes:
    return np.random.default_rng(i).standard_normal(DIM).astype(np.float32).tobytes()


def upsert(stub: Any, docs: dict[str, dict[str, Any]]) -> None:
    stub.Upsert(
        pb.UpsertRequest(
            collection="docs",
            documents=[
                pb.Document(id=k, vectors=pb.Vectors(code_f32le=vec(j)), metadata=metadata_to_proto(m))
                for j, (k, m) in enumerate(docs.items())
            ],
        )
    )


def search(stub: Any, field: str, *values: Any, negate: bool = False) -> set[str]:
    cond = pb.Condition(field=field, any_of=[value_to_proto(v, field) for v in values], negate=negate)
    req = pb.SearchRequest(collection="docs", vectors=pb.Vectors(code_f32le=vec(0)), top_k=100, filter=[cond])
    return {h.id for h in stub.Search(req).hits}


def test_every_json_type_round_trips_through_the_server(stub: Any) -> None:
    upsert(stub, {"a": TYPED})
    (got,) = stub.GetDocuments(pb.GetDocumentsRequest(collection="docs", ids=["a"])).documents
    assert metadata_from_proto(got.metadata) == TYPED
    assert got.metadata["strings"].WhichOneof("kind") == "string_list"  # what older clients read
    assert got.metadata["none"].WhichOneof("kind") == "null_value"
    (hit,) = stub.Search(
        pb.SearchRequest(collection="docs", vectors=pb.Vectors(code_f32le=vec(0)), top_k=1)
    ).hits
    assert metadata_from_proto(hit.metadata) == TYPED


def test_filters_on_strings_numbers_booleans_and_list_elements(stub: Any) -> None:
    upsert(
        stub,
        {
            "a": {"lang": "de", "n": 2, "ok": True, "tags": ["x", 7, None]},
            "b": {"lang": "en", "n": 2.5, "ok": False, "tags": ["y"]},
            "c": {"lang": None, "n": 2.0, "tags": [], "obj": {"lang": "de"}},
            "d": {"lang": ["de", "fr"], "n": "2"},
        },
    )
    assert search(stub, "lang", "de") == {"a", "d"}  # a list matches when any element does
    assert search(stub, "n", 2) == {"a", "c"}  # 2.0 equals 2; "2" is a string
    assert search(stub, "n", 2.0) == {"a", "c"}
    assert search(stub, "n", 2.5) == {"b"}
    assert search(stub, "n", "2") == {"d"}
    assert search(stub, "ok", True) == {"a"} and search(stub, "ok", False) == {"b"}
    assert search(stub, "tags", 7) == {"a"} and search(stub, "tags", "y", "x") == {"a", "b"}
    assert search(stub, "lang", "de", negate=True) == {"b", "c"}
    assert search(stub, "obj", "de") == set()  # an object is stored, never matched


@pytest.mark.parametrize(
    ("value", "what"),
    [(None, "null"), (["de"], "a list"), ([1, "x"], "a list"), ({"a": 1}, "a nested object")],
)
def test_filtering_on_null_lists_or_objects_is_invalid_argument_naming_the_field(
    stub: Any, value: Any, what: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        search(stub, "obj", value)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = str(err.value.details())
    assert "filter[0].any_of[0]" in details and f"cannot filter 'obj' on {what}" in details


def test_bad_metadata_is_refused_naming_the_key_and_nothing_is_written(stub: Any) -> None:
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH + 1):
        deep = {"d": deep}
    too_deep = pb.MetadataValue(object_value=pb.MetadataObject(fields=metadata_to_proto(deep, "x", -64)))
    too_long = pb.MetadataValue(list_value=pb.MetadataList(values=[pb.MetadataValue()] * 1025))
    cases = [
        (pb.MetadataValue(double_value=float("nan")), "documents[1].metadata.x must be finite"),
        (pb.MetadataValue(), "documents[1].metadata.x must set a value"),
        (too_deep, f"must nest at most {MAX_DEPTH} levels"),
        (too_long, "must hold at most 1024 values"),
    ]
    for value, message in cases:
        docs = [
            pb.Document(id="ok", vectors=pb.Vectors(code_f32le=vec(1))),
            pb.Document(id="bad", vectors=pb.Vectors(code_f32le=vec(2)), metadata={"x": value}),
        ]
        with pytest.raises(grpc.RpcError) as err:
            stub.Upsert(pb.UpsertRequest(collection="docs", documents=docs))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in str(err.value.details())
    reserved = pb.Document(
        id="r", vectors=pb.Vectors(code_f32le=vec(3)), metadata={"\x1fpassage": value_to_proto(1, "")}
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.Upsert(pb.UpsertRequest(collection="docs", documents=[reserved]))
    assert "is reserved" in str(err.value.details())
    found = stub.GetDocuments(pb.GetDocumentsRequest(collection="docs", ids=["ok", "bad", "r"])).documents
    assert not any(d.found for d in found)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("inf"), "must be finite"),
        (2**64, "does not fit 64 bits"),
        ({1: "a"}, "is not a string"),
        ({"a"}, "set is not a JSON value"),
        (b"x", "bytes is not a JSON value"),
    ],
)
def test_client_side_converter_refuses_what_json_cannot_hold(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metadata_to_proto({"k": [value]})


def test_store_filter_refuses_unfilterable_values_naming_the_field(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    try:
        store.create_collection(
            "c",
            CollectionConfig(
                code_bits=DIM, rescore_dims=DIM, calibration=Calibration.NONE, filterable=("k",)
            ),
        )
        coll = store.collection("c")
        coll.upsert(["a", "b"], np.eye(2, DIM, dtype=np.float32), None, [{"k": 1.5}, {"k": [{"x": 1}, 3]}])
        q = np.eye(1, DIM, dtype=np.float32)[0]
        assert {h.id for h in coll.search(q, None, top_k=5, filter={"k": 1.5})[0]} == {"a"}
        assert {h.id for h in coll.search(q, None, top_k=5, filter={"k": {"$in": [3.0]}})[0]} == {"b"}
        for bad in ({"k": None}, {"k": {"$in": [{"x": 1}]}}, {"k": {"$eq": [3]}}):
            with pytest.raises(InvalidArgument) as err:
                coll.search(q, None, top_k=5, filter=bad)
            assert err.value.field == "filter.k"
    finally:
        store.close()
