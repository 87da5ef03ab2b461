"""The Python client keeps metadata's JSON types end to end and refuses what JSON cannot hold (issue
#11, item 3: a nested dict was stored as the string "{'b': 1}", None as "None", [1, 2] as "[1, 2]")."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes import FakeServer
from zembed.service.client import Client


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (2**64, "64 bits"),
        ({1, 2}, "set"),
        (b"raw", "bytes"),
        ({"nested": [object()]}, "object"),
    ],
)
def test_values_json_cannot_hold_are_refused_naming_the_key(
    tmp_path: Path, value: object, message: str
) -> None:
    with FakeServer(tmp_path, default_collection="docs") as server, Client(server.target) as c:
        with pytest.raises(ValueError, match=rf"x\.metadata\.a.*{message}"):
            c.upsert("docs", [{"id": "x", "text": "t", "metadata": {"a": value}}])
        assert c.get_documents("docs", ["x"])[0].found is False  # nothing was sent


def test_json_types_round_trip_as_plain_python(tmp_path: Path) -> None:
    meta = {
        "s": "de",
        "i": 7,
        "f": 0.5,
        "b": True,
        "n": None,
        "l": ["x", "y"],
        "empty": [],
        "nums": [1, 2.5, "three", None, False],
        "obj": {"page": 2, "tags": ["a"], "deeper": {"k": None}},
    }
    with FakeServer(tmp_path, default_collection="docs") as server, Client(server.target) as c:
        c.upsert("docs", [{"id": "x", "text": "t", "metadata": meta}])
        (hit,) = c.search("docs", text="t", top_k=1)
        assert hit.metadata == meta
        (doc,) = c.get_documents("docs", ["x"])
        assert doc.metadata == meta and type(doc.metadata["i"]) is int and type(doc.metadata["f"]) is float
