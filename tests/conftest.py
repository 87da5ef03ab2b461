"""Shared fixtures: real LMDB stores in temp dirs, seeded data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from store import CollectionConfig, Store


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "data")
    yield s
    s.close()


def small_config(**kw: object) -> CollectionConfig:
    base: dict[str, object] = {"code_bits": 64, "rescore_dims": 96, "filterable": ("lang", "tags", "n")}
    base.update(kw)
    return CollectionConfig(**base)  # type: ignore[arg-type]
