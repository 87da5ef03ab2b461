"""A thin typed Python client for zembed-serve (sync; one channel, both services).

from zembed.service.client import Client
with Client("localhost:50051", token="...") as c:
    vecs = c.embed(["hello"], input_type="query", dimensions=640)     # np.ndarray [1, 640]
    c.upsert("docs", [{"id": "a", "text": "...", "metadata": {"lang": "de"}}])
    hits = c.search("docs", text="...", top_k=5, filter={"lang": ["de", "fr"]})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from zembed.service.metadata import metadata_to_proto, value_to_proto
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

F32 = npt.NDArray[np.float32]
_INPUT = {None: pb.INPUT_TYPE_UNSPECIFIED, "query": pb.INPUT_TYPE_QUERY, "document": pb.INPUT_TYPE_DOCUMENT}


class Client:
    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        tls: bool = False,
        timeout: float | None = 30.0,
    ) -> None:
        if tls or root_certificates is not None:
            creds = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
            self.channel = grpc.secure_channel(target, creds)
        else:
            self.channel = grpc.insecure_channel(target)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout
        self.embedding = pb_grpc.EmbeddingServiceStub(self.channel)
        self.search_service = pb_grpc.SearchServiceStub(self.channel)

    def _call(self, method: Any, request: Any) -> Any:
        return method(request, metadata=self.metadata, timeout=self.timeout)

    def embed(
        self,
        texts: Sequence[str],
        *,
        input_type: str | None = None,
        dimensions: int = 0,
        strict: bool = False,
    ) -> F32:
        resp = self._call(
            self.embedding.Embed,
            pb.EmbedRequest(
                inputs=list(texts),
                input_type=_INPUT[input_type],
                dimensions=dimensions,
                encoding=pb.ENCODING_FLOAT32,
                truncation=pb.TRUNCATION_STRICT if strict else pb.TRUNCATION_TRUNCATE,
            ),
        )
        return np.stack([np.frombuffer(e.data, dtype="<f4") for e in resp.embeddings])

    def model_info(self) -> pb.GetModelInfoResponse:
        return self._call(self.embedding.GetModelInfo, pb.GetModelInfoRequest())  # type: ignore[no-any-return]

    def count_tokens(self, texts: Sequence[str], *, input_type: str | None = None) -> list[int]:
        resp = self._call(
            self.embedding.CountTokens,
            pb.CountTokensRequest(inputs=list(texts), input_type=_INPUT[input_type]),
        )
        return list(resp.tokens)

    def create_collection(self, name: str, **config: Any) -> pb.Collection:
        resp = self._call(
            self.search_service.CreateCollection,
            pb.CreateCollectionRequest(name=name, config=pb.CollectionConfig(**config)),
        )
        return resp.collection  # type: ignore[no-any-return]

    def delete_collection(self, name: str) -> None:
        self._call(self.search_service.DeleteCollection, pb.DeleteCollectionRequest(name=name))

    def list_collections(self) -> list[pb.Collection]:
        out: list[pb.Collection] = []
        token = ""
        while True:
            resp = self._call(
                self.search_service.ListCollections, pb.ListCollectionsRequest(page_token=token)
            )
            out.extend(resp.collections)
            token = resp.next_page_token
            if not token:
                return out

    def upsert(self, collection: str, documents: Iterable[Mapping[str, Any]]) -> int:
        """Each document: ``id``, and ``text`` or ``code`` (+ ``rescore``) vectors, optional ``metadata``."""
        docs = [document(d) for d in documents]
        resp = self._call(self.search_service.Upsert, pb.UpsertRequest(collection=collection, documents=docs))
        return int(resp.upserted)

    def delete(self, collection: str, ids: Sequence[str]) -> int:
        resp = self._call(
            self.search_service.DeleteDocuments,
            pb.DeleteDocumentsRequest(collection=collection, ids=list(ids)),
        )
        return int(resp.deleted)

    def search(
        self,
        collection: str,
        *,
        text: str | None = None,
        code: Sequence[float] | None = None,
        rescore: Sequence[float] | None = None,
        top_k: int = 10,
        oversampling: int = 0,
        use_rescore: bool = True,
        filter: Mapping[str, Sequence[Any] | Any] | None = None,
    ) -> list[pb.Hit]:
        req = pb.SearchRequest(
            collection=collection, top_k=top_k, oversampling=oversampling, rescore=use_rescore
        )
        if text is not None:
            req.text = text
        else:
            req.vectors.CopyFrom(_vectors(code, rescore))
        for field, values in (filter or {}).items():
            vals = values if isinstance(values, list | tuple) else [values]
            any_of = [value_to_proto(v, f"filter.{field}") for v in vals]
            req.filter.append(pb.Condition(field=field, any_of=any_of))
        return list(self._call(self.search_service.Search, req).hits)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def document(d: Mapping[str, Any]) -> pb.Document:
    out = pb.Document(id=d["id"], metadata=metadata_to_proto(d.get("metadata") or {}))
    if "text" in d:
        out.text = d["text"]
    else:
        out.vectors.CopyFrom(_vectors(d["code"], d.get("rescore")))
    return out


def _vectors(code: Any, rescore: Any) -> pb.Vectors:
    """Packed little-endian float32 bytes (4 bytes per dimension, cheap to build and parse)."""
    out = pb.Vectors(code_f32le=np.asarray(code, dtype="<f4").tobytes())
    if rescore is not None and len(rescore):
        out.rescore_f32le = np.asarray(rescore, dtype="<f4").tobytes()
    return out
