"""service.chunking: passages within the token budget as the tokenizer counts them, covering the
document, overlapping, with character offsets that index the document's own string."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from tests.fakes import FakeEmbedder
from zembed.service.chunking import MAX_UNIT_CHARS, Counter, chunk_document, chunk_text, precise_window


def fake_count(texts: Sequence[str]) -> list[int]:
    return FakeEmbedder().text.count(texts, "document")


def merging_count(texts: Sequence[str]) -> list[int]:
    """A tokenizer whose counts are NOT additive over units (a whole text costs more than its words):
    the exact re-count must catch it."""
    return [2 + len(t) // 3 + t.count(" ") for t in texts]


SAMPLES = {
    "words": " ".join(f"word{i} and some more text." for i in range(300)),
    "cjk (no spaces)": "日本語のテキストは空白なしで続きます。" * 80,
    "one long token": "x" * 5000,
    "whitespace runs": ("alpha \n\n\t  beta   " * 200),
    "emoji and accents": "Grüße 👋🏽 naïve café — " * 150,
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("count", [fake_count, merging_count])
def test_passages_fit_cover_overlap_and_keep_offsets(name: str, count: Counter) -> None:
    counter = count
    text = SAMPLES[name]
    budget = 64
    passages = chunk_text(text, counter, budget, overlap_tokens=8)
    assert len(passages) > 1
    assert passages[0].start == 0 and passages[-1].end == len(text)
    for p in passages:
        assert text[p.start : p.end] == p.text and p.text
        assert counter([p.text])[0] <= budget
    for a, b in itertools.pairwise(passages):
        assert a.start < b.start <= a.end  # moving forward, no gap
    if name in ("words", "whitespace runs", "emoji and accents"):  # words shorter than the overlap
        assert all(b.start < a.end for a, b in itertools.pairwise(passages))


def test_a_text_within_the_window_is_one_passage() -> None:
    p = chunk_text("short text", fake_count, 64)
    assert [(x.start, x.end, x.text) for x in p] == [(0, 10, "short text")]
    assert chunk_text("", fake_count, 64) == []
    with pytest.raises(ValueError, match="max_tokens"):
        chunk_text("x", fake_count, 0)


def test_pages_never_cross_and_offsets_index_the_joined_text() -> None:
    pages = ["first page " * 40, "", "third page " * 5]
    doc = chunk_document(None, pages, fake_count, 32, 4)
    assert doc.text == "\n".join(pages) and doc.page_starts == [0, len(pages[0]) + 1, len(pages[0]) + 2]
    assert {p.page for p in doc.passages} == {0, 2}
    for p in doc.passages:
        assert p.page is not None
        start = doc.page_starts[p.page]
        assert start <= p.start < p.end <= start + len(pages[p.page])
        assert doc.text[p.start : p.end] == p.text
        assert p.page_span == (p.page, p.page + 1)


def test_precise_window_picks_the_words_of_the_query() -> None:
    text = "filler words here. " * 30 + "The volcano erupted with lava and ash. " + "more filler. " * 30
    s, e = precise_window(text, "lava volcano")
    assert e - s <= 200 and "lava" in text[s:e] and "volcano" in text[s:e]
    assert precise_window("short", "q") == (0, 5)
    assert MAX_UNIT_CHARS < 200
