"""Splitting long documents into passages the model can embed whole (HTTP documents today; reusable
for a gRPC Upsert option or an ingest command).

A passage never exceeds the model's window: text is cut into small units (a word with the whitespace
after it, and no unit longer than :data:`MAX_UNIT_CHARS`), each unit's tokens are counted once (one
batch call to the tokenizer), units are packed greedily up to the token budget, consecutive passages
share about ``overlap_tokens`` of text, and every passage is then counted exactly with the model's
prompt and special tokens and shrunk if the sum of units under-counted it (merges across units). So a
passage's embedding is never truncated. Offsets are character offsets into the document's text
(Python ``str`` indices, i.e. code points), ``text[start:end] == passage.text``.

Pages (``text-pages`` documents) are joined with :data:`PAGE_SEPARATOR` into one string; passages
never cross a page, so each passage's ``page_span`` is ``[page, page + 1)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MAX_UNIT_CHARS = 64  # a run without whitespace (CJK, base64, URLs) is cut every this many characters
PAGE_SEPARATOR = "\n"
_UNITS = re.compile(r"\S+\s*|\s+")

# texts -> token counts with the model's prompt for documents and its special tokens
Counter = Callable[[Sequence[str]], list[int]]


@dataclass(frozen=True)
class Passage:
    start: int  # character offset into the document's text (inclusive)
    end: int  # exclusive
    text: str
    page: int | None = None  # the page it lies on (text-pages documents), else None

    @property
    def page_span(self) -> tuple[int, int]:
        p = self.page if self.page is not None else 0
        return (p, p + 1)


@dataclass(frozen=True)
class Chunked:
    text: str  # the document as one string (pages joined)
    passages: list[Passage]
    page_starts: list[int] | None  # character offset of each page (text-pages documents)


def units(text: str) -> list[tuple[int, int]]:
    """(start, end) of each unit: a word with its trailing whitespace, at most MAX_UNIT_CHARS."""
    out: list[tuple[int, int]] = []
    for m in _UNITS.finditer(text):
        s, e = m.span()
        while e - s > MAX_UNIT_CHARS:
            out.append((s, s + MAX_UNIT_CHARS))
            s += MAX_UNIT_CHARS
        out.append((s, e))
    return out


def chunk_text(
    text: str,
    count: Counter,
    max_tokens: int,
    overlap_tokens: int = 0,
    *,
    offset: int = 0,
    page: int | None = None,
) -> list[Passage]:
    """Passages of ``text`` each at most ``max_tokens`` tokens as ``count`` measures them (prompt and
    special tokens included). ``offset`` is added to every start/end (a page inside a document)."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1; given {max_tokens}")
    if not text:
        return []
    whole = count([text])[0]
    if whole <= max_tokens:
        return [Passage(offset, offset + len(text), text, page)]
    spans = units(text)
    overhead = count([""])[0]  # prompt + special tokens around any text
    cost = [max(0, c - overhead) for c in count([text[s:e] for s, e in spans])]
    budget = max(1, max_tokens - overhead)
    overlap = max(0, min(overlap_tokens, budget // 2))
    out: list[Passage] = []
    i = 0
    n = len(spans)
    while i < n:
        j, used = i, 0
        while j < n and (j == i or used + cost[j] <= budget):
            used += cost[j]
            j += 1
        # exact check with the real tokenizer (merges across units can add or remove tokens)
        while j - i > 1 and count([text[spans[i][0] : spans[j - 1][1]]])[0] > max_tokens:
            j -= max(1, (j - i) // 8)
        s, e = spans[i][0], spans[j - 1][1]
        out.append(Passage(offset + s, offset + e, text[s:e], page))
        if j >= n:
            break
        # the next passage starts so that about ``overlap`` tokens are shared (always moving forward)
        k, back = j, 0
        while k - 1 > i and back + cost[k - 1] <= overlap:
            k -= 1
            back += cost[k]
        i = k
    return out


def chunk_document(
    text: str | None,
    pages: Sequence[str] | None,
    count: Counter,
    max_tokens: int,
    overlap_tokens: int = 0,
) -> Chunked:
    """A ``text`` document or a ``pages`` document as passages with document-level offsets."""
    if pages is None:
        body = text or ""
        return Chunked(body, chunk_text(body, count, max_tokens, overlap_tokens), None)
    starts: list[int] = []
    passages: list[Passage] = []
    pos = 0
    for p, page_text in enumerate(pages):
        starts.append(pos)
        passages.extend(chunk_text(page_text, count, max_tokens, overlap_tokens, offset=pos, page=p))
        pos += len(page_text) + len(PAGE_SEPARATOR)
    return Chunked(PAGE_SEPARATOR.join(pages), passages, starts)


def precise_window(text: str, query: str, width: int = 200) -> tuple[int, int]:
    """The ``width``-character window of ``text`` (cut at unit boundaries) sharing the most words
    with ``query`` (case-insensitive; the first such window on ties): offsets within ``text``."""
    if len(text) <= width:
        return 0, len(text)
    words = {w.lower() for w in re.findall(r"\w+", query)}
    spans = units(text)
    best = (-1, 0, min(len(text), width))
    j = 0
    for i in range(len(spans)):
        j = max(j, i)
        while j + 1 < len(spans) and spans[j + 1][1] - spans[i][0] <= width:
            j += 1
        s, e = spans[i][0], spans[j][1]
        score = sum(1 for w in re.findall(r"\w+", text[s:e]) if w.lower() in words)
        if score > best[0]:
            best = (score, s, e)
        if spans[j][1] >= len(text):
            break
    return best[1], best[2]
