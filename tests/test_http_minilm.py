"""The HTTP API on a real exported all-MiniLM-L6-v2 (ONNX Runtime, the real tokenizer): the hosted
API's SDK and the OpenAI SDK embed exactly what gRPC Embed does, token arrays decode to the same
embedding as their text, and a document several times the model's window is found by the passage
that matches the query (top-snippets offsets into the document, top-documents scored by it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import openai
import pytest
from zeroentropy import ZeroEntropy

from tests.fakes import ServerThread as Served
from zembed.service.config import Settings
from zembed.v1 import zembed_pb2 as pb
from zembed.v1 import zembed_pb2_grpc as pb_grpc

FILLER = [
    "The bakery on the corner sells fresh bread every morning, with rye and sourdough loaves.",
    "Our committee discussed the annual budget and the schedule for next year's meetings.",
    "The football team trained in the rain and practised penalty kicks for the final.",
    "She repotted the tomato seedlings and watered the herb garden before noon.",
]
VOLCANO = (
    "Volcanic eruptions send lava flows and clouds of ash down the mountain; magma rises through "
    "the crater when pressure builds beneath the volcano."
)


@pytest.fixture(scope="module")
def served(minilm_fp32: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    settings = Settings(
        model=minilm_fp32, data=tmp_path_factory.mktemp("data"), port=0, http_port=0, intra_op_threads=1
    ).validate()
    s = Served(settings)
    yield s
    s.stop()


def grpc_embed(s: Served, texts: list[str], input_type: Any = pb.INPUT_TYPE_UNSPECIFIED) -> np.ndarray:
    with grpc.insecure_channel(f"127.0.0.1:{s.running.port}") as ch:
        res = pb_grpc.EmbeddingServiceStub(ch).Embed(
            pb.EmbedRequest(inputs=texts, input_type=input_type, encoding=pb.ENCODING_FLOAT32)
        )
    return np.stack([np.frombuffer(e.data, dtype="<f4") for e in res.embeddings])


def url(s: Served) -> str:
    assert s.running.http is not None
    return f"http://127.0.0.1:{s.running.http.port}/v1"


def test_minilm_sdk_and_openai_embeddings_equal_grpc(served: Served) -> None:
    model_id = served.running.engine.model.manifest.model_id
    texts = ["A man is eating food.", "Der Hund schläft im Garten.", "sleeping dog"]
    ze = ZeroEntropy(api_key="unused", base_url=url(served), max_retries=0)
    r = ze.models.embed(input=texts, input_type="document", model=model_id)
    np.testing.assert_array_equal(
        np.array([x.embedding for x in r.results], dtype=np.float32),
        grpc_embed(served, texts, pb.INPUT_TYPE_DOCUMENT),
    )
    oa = openai.OpenAI(api_key="unused", base_url=url(served), max_retries=0)
    got = oa.embeddings.create(model=model_id, input=texts)
    want = grpc_embed(served, texts)
    np.testing.assert_array_equal(np.array([d.embedding for d in got.data], dtype=np.float32), want)
    # token arrays (OpenAI input) decode with the model's tokenizer to the same embedding as the text
    tok = served.running.engine.model.text.tokenizer  # type: ignore[attr-defined]
    ids = tok.encode("sleeping dog", add_special_tokens=False).ids
    arr = oa.embeddings.create(model=model_id, input=[ids])
    np.testing.assert_allclose(np.array(arr.data[0].embedding, dtype=np.float32), want[2], atol=1e-6)


def test_minilm_long_document_is_found_by_its_matching_passage(served: Served) -> None:
    ze = ZeroEntropy(api_key="unused", base_url=url(served), max_retries=0)
    window = served.running.engine.model.manifest.max_length
    paragraphs = [FILLER[i % len(FILLER)] for i in range(80)]
    paragraphs[47] = VOLCANO
    text = "\n\n".join(paragraphs)
    count = served.running.engine.model.text.count
    assert count([text], "document")[0] > 3 * window  # several windows long
    ze.collections.add(collection_name="real")
    ze.documents.add(collection_name="real", path="long.txt", content={"type": "text", "text": text})
    for i, f in enumerate(FILLER):
        ze.documents.add(collection_name="real", path=f"short-{i}.txt", content={"type": "text", "text": f})
    q = "lava and ash from an erupting volcano"
    snippets = ze.queries.top_snippets(collection_name="real", query=q, k=10).results
    top = snippets[0]
    assert top.path == "long.txt" and "Volcanic eruptions" in top.content
    assert text[top.start_index : top.end_index] == top.content and top.start_index > 0
    for s in snippets:
        if s.path == "long.txt":
            assert count([s.content], "document")[0] <= window  # never truncated
    docs = ze.queries.top_documents(collection_name="real", query=q, k=3).results
    assert docs[0].path == "long.txt" and docs[0].score == pytest.approx(top.score, abs=1e-6)
    precise = ze.queries.top_snippets(collection_name="real", query=q, k=1, precise_responses=True).results[0]
    assert len(precise.content) <= 200 and "lava" in precise.content
    assert text[precise.start_index : precise.end_index] == precise.content
