"""Each limit is defined once in the code; the proto's comments, the README, `zembed serve --help` and
the server all agree with that definition (issue #11, item 8: Upsert 10,000 in the proto, 100,000 in
the README, text documents capped at 256; 8,192 vs 32,768 characters; the token's 16-character
minimum undocumented; a garbage page_token answered with a partial list and OK)."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest

from tests.fakes import FakeServer
from zembed.service.client import Client
from zembed.service.config import MIN_TOKEN_CHARS, ConfigError, Settings
from zembed.service.servicers import MAX_UPSERT
from zembed.store.validate import MAX_BATCH, MAX_GET_IDS, MAX_ID_BYTES, MAX_METADATA_BYTES, MAX_TOP_K
from zembed.v1 import zembed_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = Settings(model=Path("m"), data=Path("d"))


def proto_comments() -> str:
    """The proto's comments as one line of text (line breaks and `//` removed)."""
    text = (ROOT / "protos" / "zembed" / "v1" / "zembed.proto").read_text()
    return " ".join(m.group(1).strip() for m in re.finditer(r"//(.*)", text))


def readme_limits() -> str:
    text = (ROOT / "README.md").read_text()
    config = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return " ".join(config.split("**Limits**", 1)[1].split())


def n(value: int) -> str:
    return f"{value:,}"


def test_the_proto_quotes_the_code() -> None:
    c = proto_comments()
    assert c.count(f"1 to {MAX_UPSERT} documents") == 2  # Upsert, an UpsertStream message
    assert c.count(f"at most max_inputs (default {DEFAULTS.max_inputs})") == 2
    assert f"1 to max_inputs (default {DEFAULTS.max_inputs}) non-empty texts" in c
    assert f"at most max_chars (default {DEFAULTS.max_chars}) characters" in c
    assert f"must be at most {DEFAULTS.max_chars} characters; given" in c  # the header's example
    assert f"1 to max_top_k (default {MAX_TOP_K})" in c and DEFAULTS.max_top_k == MAX_TOP_K
    assert f"at least {MIN_TOKEN_CHARS} characters" in c
    assert f"1 to {MAX_ID_BYTES} UTF-8 bytes" in c
    assert f"at most {MAX_METADATA_BYTES // 1024} KiB" in c
    assert "any other value is INVALID_ARGUMENT" in c  # page_token
    for wrong in ("8192", "100000 documents"):
        assert wrong not in c


def test_the_readme_quotes_the_code() -> None:
    r = readme_limits()
    assert f"1 to `--max-inputs` ({DEFAULTS.max_inputs}) texts" in r
    assert f"`--max-chars` ({n(DEFAULTS.max_chars)}) characters" in r
    assert (
        f"1 to {n(MAX_UPSERT)} documents, of which those with text (embedded together) at most `--max-inputs`"
        in r
    )
    assert f"`--max-top-k` ({n(MAX_TOP_K)}, the store's ceiling" in r
    assert f"ids 1 to {MAX_ID_BYTES} UTF-8 bytes" in r
    assert f"at most {MAX_METADATA_BYTES // 1024} KiB" in r
    assert f"a `--token` at least {MIN_TOKEN_CHARS} characters" in r
    assert f"GetDocuments at most {n(MAX_GET_IDS)} ids" in r
    assert f"batches of up to {n(MAX_BATCH)}" in r  # the in-process store API, said to be that
    assert "page_token` that no ListCollections answer gave is INVALID_ARGUMENT" in r


def test_help_quotes_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    from zembed.service.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"(at least {MIN_TOKEN_CHARS} characters)" in out
    assert f"[ZEMBED_MAX_TOP_K; default: {MAX_TOP_K}]" in out
    assert f"[ZEMBED_MAX_INPUTS; default: {DEFAULTS.max_inputs}]" in out
    assert f"[ZEMBED_MAX_CHARS; default: {DEFAULTS.max_chars}]" in out


def test_a_short_token_is_refused_at_start_up(tmp_path: Path) -> None:
    base = {"model": tmp_path, "data": tmp_path}
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(ConfigError, match=f"at least {MIN_TOKEN_CHARS} characters"):
        Settings(**base, token="x" * (MIN_TOKEN_CHARS - 1)).validate()  # type: ignore[arg-type]
    Settings(**base, token="x" * MIN_TOKEN_CHARS).validate()  # type: ignore[arg-type]


def test_the_server_enforces_the_same_numbers(tmp_path: Path) -> None:
    with (
        FakeServer(tmp_path, default_collection="docs", max_inputs=8, max_chars=100) as srv,
        Client(srv.target) as c,
    ):

        def refused(call: object, *needles: str) -> None:
            with pytest.raises(grpc.RpcError) as err:
                call()  # type: ignore[operator]
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
            for needle in needles:
                assert needle in str(err.value.details()), err.value.details()

        vec = [1.0] * 64
        many = [{"id": f"v{i}", "code": vec} for i in range(MAX_UPSERT + 1)]
        refused(lambda: c.upsert("docs", many), "documents", str(MAX_UPSERT), str(MAX_UPSERT + 1))
        assert c.upsert("docs", many[:MAX_UPSERT]).upserted == MAX_UPSERT
        texts = [{"id": f"t{i}", "text": f"text {i}"} for i in range(9)]
        refused(lambda: c.upsert("docs", texts), "at most 8 inputs", "given 9")
        assert c.upsert("docs", texts[:8]).upserted == 8
        refused(lambda: c.embed(["x" * 101]), "inputs[0]", "at most 100 characters", "given 101")
        refused(lambda: c.search("docs", code=vec, top_k=MAX_TOP_K + 1), "top_k", str(MAX_TOP_K))
        assert len(c.search("docs", code=vec, top_k=MAX_TOP_K)) == MAX_TOP_K
        refused(lambda: c.get_documents("docs", [f"v{i}" for i in range(MAX_GET_IDS + 1)]), "ids")
        refused(lambda: c.upsert("docs", [{"id": "x" * (MAX_ID_BYTES + 1), "code": vec}]), "id")
        assert c.get_collection("docs").count == MAX_UPSERT + 8  # nothing refused was written


def test_a_page_token_no_answer_gave_is_invalid_argument(tmp_path: Path) -> None:
    with FakeServer(tmp_path) as srv, Client(srv.target) as c:
        for name in ("a1", "b2", "c3"):
            c.create_collection(name)
        first = c._stubs["search"].ListCollections(pb.ListCollectionsRequest(page_size=2))
        assert [x.name for x in first.collections] == ["a1", "b2"] and first.next_page_token
        rest = c._stubs["search"].ListCollections(
            pb.ListCollectionsRequest(page_size=2, page_token=first.next_page_token)
        )
        assert [x.name for x in rest.collections] == ["c3"] and rest.next_page_token == ""
        for garbage in ("!!!", "' OR 1=1 --", "A1", "x" * 65, "\x00"):
            with pytest.raises(grpc.RpcError) as err:
                c._stubs["search"].ListCollections(pb.ListCollectionsRequest(page_token=garbage))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "page_token" in str(err.value.details())
        assert [x.name for x in c.list_collections(page_size=1)] == ["a1", "b2", "c3"]
