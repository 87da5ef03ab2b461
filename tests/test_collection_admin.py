"""Collection administration over gRPC on a real server (fake embedder, real LMDB): filterable fields
added after creation (the README's example failed without them), the default collection's fields, and
the Snapshot RPC."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.fakes import FakeServer
from zembed.store import Store
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc


def stub(server: FakeServer) -> tuple[pb_grpc.SearchServiceStub, grpc.Channel]:
    ch = grpc.insecure_channel(server.target)
    return pb_grpc.SearchServiceStub(ch), ch  # type: ignore[no-untyped-call]


def lang_filter(*langs: str) -> list[pb.Condition]:
    return [pb.Condition(field="lang", any_of=[pb.MetadataValue(string_value=v) for v in langs])]


def test_filterable_fields_added_to_the_default_collection_over_grpc(tmp_path: Path) -> None:
    docs = [
        pb.Document(
            id="de", text="Der Hund schläft.", metadata={"lang": pb.MetadataValue(string_value="de")}
        ),
        pb.Document(id="en", text="The dog sleeps.", metadata={"lang": pb.MetadataValue(string_value="en")}),
    ]
    with FakeServer(tmp_path, default_collection="docs") as server:
        search, ch = stub(server)
        search.Upsert(pb.UpsertRequest(collection="docs", documents=docs), timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            search.Search(
                pb.SearchRequest(collection="docs", text="dog", filter=lang_filter("de")), timeout=10
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as err:
            search.UpdateCollection(pb.UpdateCollectionRequest(name="docs", add_filterable=["bad name"]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "add_filterable[0]" in str(err.value.details())
        with pytest.raises(grpc.RpcError) as err:
            search.UpdateCollection(pb.UpdateCollectionRequest(name="nope", add_filterable=["lang"]))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        resp = search.UpdateCollection(pb.UpdateCollectionRequest(name="docs", add_filterable=["lang"]))
        assert list(resp.collection.config.filterable) == ["lang"]
        hits = search.Search(
            pb.SearchRequest(collection="docs", text="dog", filter=lang_filter("de", "fr")), timeout=10
        ).hits
        assert [h.id for h in hits] == ["de"]  # the document stored before the field was added
        snap = search.Snapshot(pb.SnapshotRequest(name="before-upgrade"), timeout=30)
        assert snap.path.endswith("snapshots/before-upgrade") and snap.size_bytes > 0
        with pytest.raises(grpc.RpcError) as err:
            search.Snapshot(pb.SnapshotRequest(name="before-upgrade"), timeout=30)
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
        with pytest.raises(grpc.RpcError) as err:
            search.Snapshot(pb.SnapshotRequest(name="../etc"), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        ch.close()
    with Store(Path(snap.path), readonly=True) as copy:
        assert copy.collection("docs").count() == 2
        assert copy.collection("docs").config.filterable == ("lang",)
    # restarting with --default-filterable adds the fields it names to the existing collection
    with FakeServer(tmp_path, default_collection="docs", default_filterable=("lang", "tags")) as server:
        search, ch = stub(server)
        info = search.GetCollection(pb.GetCollectionRequest(name="docs"), timeout=10).collection
        assert list(info.config.filterable) == ["lang", "tags"]
        ch.close()
