"""The tokenizer an export ships, and the proof that it is the one the checkpoint runs.

transformers 5 builds several tokenizer classes in code from the vocabulary and ignores parts of the
folder's ``tokenizer.json`` (XLMRobertaTokenizer puts WhitespaceSplit before Metaspace, so trailing
whitespace, a trailing U+200E or U+200B give no extra ``▁`` token, while the file alone gives one).
So the export does not copy the file: it serializes the backend tokenizer that the checkpoint's own
tokenizer class builds (without padding or truncation, which the runtime applies itself), then checks
that the Rust ``tokenizers`` library, loading that file as the service does, gives the same ids as
the transformers tokenizer for ``prompt + text + suffix`` on every sample and every prompt.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

SHOW_IDS = 12  # ids shown either side of the first difference


class TokenizerError(Exception):
    """The checkpoint has no fast tokenizer the runtime can load; the message says what to do."""


def load_hf_tokenizer(path: Path, do_lower_case: bool = False) -> Any:
    """The checkpoint's own tokenizer class, as sentence-transformers and the reference load it.

    ``do_lower_case`` (sentence_bert_config.json) is applied as sentence-transformers applies it: a
    Lowercase normalizer put first in the backend tokenizer, unless it already lowercases.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise TokenizerError(
            f"{path}: the tokenizer ({type(tok).__name__}) has no Rust `tokenizers` backend, which the "
            "service needs; convert it to a fast tokenizer (tokenizer.json) first"
        )
    if do_lower_case and not _lowercases(json.loads(backend.to_str()).get("normalizer")):
        from tokenizers import normalizers

        current: Any = backend.normalizer
        parts: list[Any] = [normalizers.Lowercase()]
        if isinstance(current, normalizers.Sequence):
            parts += list(cast(Any, current))  # the stubs miss Sequence's iteration
        elif current is not None:
            parts.append(current)
        backend.normalizer = normalizers.Sequence(parts)
    return tok


def _lowercases(normalizer: Any) -> bool:
    """Whether a serialized normalizer already lowercases (Lowercase, or BertNormalizer lowercase)."""
    if not isinstance(normalizer, dict):
        return False
    if normalizer.get("type") == "Lowercase" or (
        normalizer.get("type") == "BertNormalizer" and normalizer.get("lowercase")
    ):
        return True
    return any(_lowercases(n) for n in normalizer.get("normalizers") or [])


def ship_tokenizer(hf_tok: Any, dest: Path) -> Path:
    """Write the backend tokenizer transformers actually runs to ``dest`` (no padding, no truncation)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(hf_tok.backend_tokenizer.to_str())
    tok.no_padding()
    tok.no_truncation()
    tok.save(str(dest))
    return dest


@dataclass(frozen=True)
class Mismatch:
    text: str
    input_type: str | None
    position: int  # first index where the id sequences differ
    shipped: list[int]
    reference: list[int]

    def describe(self) -> str:
        lo = max(0, self.position - SHOW_IDS)

        def window(ids: list[int]) -> str:
            hi = min(len(ids), self.position + SHOW_IDS)
            return ("... " if lo else "") + str(ids[lo:hi])[1:-1] + (" ..." if hi < len(ids) else "")

        return (
            f"text {self.text[:80]!r}{'...' if len(self.text) > 80 else ''} (prompt {self.input_type!r}): "
            f"token ids differ first at position {self.position}: "
            f"shipped tokenizer.json [{window(self.shipped)}] ({len(self.shipped)} ids) vs "
            f"transformers [{window(self.reference)}] ({len(self.reference)} ids)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "input_type": self.input_type,
            "position": self.position,
            "shipped": self.shipped,
            "reference": self.reference,
        }


def first_difference(a: Sequence[int], b: Sequence[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def compare_token_ids(
    shipped_json: Path,
    hf_tok: Any,
    prompts: dict[str, str],
    suffix: str,
    texts: Sequence[str],
    input_types: Sequence[str | None],
) -> tuple[int, list[Mismatch]]:
    """(strings compared, mismatches) of ``prompt + text + suffix``: shipped file vs transformers."""
    from tokenizers import Tokenizer

    shipped = Tokenizer.from_file(str(shipped_json))
    shipped.no_padding()
    shipped.no_truncation()
    out: list[Mismatch] = []
    n = 0
    for it in input_types:
        prompt = prompts.get(it, "") if it else ""
        fulls = [prompt + t + suffix for t in texts]
        got = shipped.encode_batch(fulls, add_special_tokens=True)
        for text, full, enc in zip(texts, fulls, got, strict=True):
            want = list(hf_tok(full, add_special_tokens=True)["input_ids"])
            n += 1
            if list(enc.ids) != want:
                out.append(Mismatch(text, it, first_difference(enc.ids, want), list(enc.ids), want))
    return n, out
