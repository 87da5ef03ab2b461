"""The Python client keeps metadata types or refuses them (issue #11, item 3: a nested dict was
stored as the string "{'b': 1}", None as "None", [1, 2] as "[1, 2]")."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes import FakeServer
from zembed.service.client import Client


@pytest.mark.parametrize(
    ("value", "kind"),
    [({"b": 1}, "dict"), (None, "null"), ([1, 2], "a list with non-string items"), (float("nan"), "finite")],
)
def test_metadata_the_contract_cannot_carry_is_refused_not_stringified(
    tmp_path: Path, value: object, kind: str
) -> None:
    with FakeServer(tmp_path, default_collection="docs") as server, Client(server.target) as c:
        with pytest.raises(ValueError, match=f"metadata.a: .*{kind}"):
            c.upsert("docs", [{"id": "x", "text": "t", "metadata": {"a": value}}])
        assert c.search("docs", text="t") == []  # nothing was sent


def test_metadata_types_round_trip(tmp_path: Path) -> None:
    meta = {"s": "de", "i": 7, "f": 0.5, "b": True, "l": ["x", "y"]}
    with FakeServer(tmp_path, default_collection="docs") as server, Client(server.target) as c:
        c.upsert("docs", [{"id": "x", "text": "t", "metadata": meta}])
        (hit,) = c.search("docs", text="t", top_k=1)
        assert hit.metadata == meta  # plain Python values, types kept
