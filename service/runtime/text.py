"""Turning texts into token ids exactly like the reference pipeline, with an explicit length policy.

Each input becomes ONE string ``prompt[input_type] + text + suffix`` tokenized with the export's
``tokenizer.json`` by the Rust ``tokenizers`` library (the joins must not be tokenized separately: the
pre-tokenizer merges whitespace runs across them). Text that contains special-token strings such as
``<|im_end|>`` is tokenized as the reference tokenizer does: the special token is recognised (that
keeps token-for-token parity with the checkpoint's own pipeline; strip such strings upstream if the
texts are untrusted and that matters to you).

Over-length policy (``max_length`` tokens, prompt and suffix included):

- ``truncate`` (default): keep the prompt and the suffix and cut the text at a token boundary, so
  that the pooled last token is still the suffix's; the result is the tokenization of
  ``prompt + text[:cut] + suffix`` for the longest ``cut`` that fits;
- ``strict``: refuse with :class:`TooLong` (the service answers INVALID_ARGUMENT).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

from tokenizers import Encoding, Tokenizer


class Overflow(StrEnum):
    TRUNCATE = "truncate"
    STRICT = "strict"


class TooLong(ValueError):
    def __init__(self, index: int, tokens: int, limit: int) -> None:
        self.index = index
        self.tokens = tokens
        self.limit = limit
        super().__init__(
            f"inputs[{index}] must be at most {limit} tokens with prompt and suffix; given {tokens}"
        )


class TextEncoder:
    """Prompt + text + suffix -> token ids, batch at a time."""

    def __init__(self, tokenizer_json: Path, prompts: dict[str, str], suffix: str, max_length: int) -> None:
        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.prompts = dict(prompts)
        self.suffix = suffix
        self.max_length = max_length

    def full_text(self, text: str, input_type: str | None) -> str:
        prompt = self.prompts.get(input_type, "") if input_type else ""
        return prompt + text + self.suffix

    def encode(
        self, texts: Sequence[str], input_type: str | None, overflow: Overflow = Overflow.TRUNCATE
    ) -> list[list[int]]:
        fulls = [self.full_text(t, input_type) for t in texts]
        encs = self.tokenizer.encode_batch(fulls, add_special_tokens=True)
        out: list[list[int]] = []
        for i, enc in enumerate(encs):
            if len(enc.ids) <= self.max_length:
                out.append(list(enc.ids))
            elif overflow is Overflow.STRICT:
                raise TooLong(i, len(enc.ids), self.max_length)
            else:
                out.append(self._truncate(texts[i], input_type, enc))
        return out

    def count(self, texts: Sequence[str], input_type: str | None) -> list[int]:
        """Tokens each input would take before any truncation."""
        fulls = [self.full_text(t, input_type) for t in texts]
        return [len(e.ids) for e in self.tokenizer.encode_batch(fulls, add_special_tokens=True)]

    def _truncate(self, text: str, input_type: str | None, enc: Encoding) -> list[int]:
        prompt_len = len(self.prompts.get(input_type, "") if input_type else "")
        fixed = len(self.tokenizer.encode(self.full_text("", input_type), add_special_tokens=True).ids)
        budget = self.max_length - fixed
        if budget < 0:
            raise TooLong(0, fixed, self.max_length)
        # cut points: where the text's tokens start in the full tokenization; take the longest that fits
        starts = [s - prompt_len for s, _ in enc.offsets if prompt_len <= s < prompt_len + len(text)]
        for j in range(min(budget, len(starts) - 1), -1, -1):
            ids = self.tokenizer.encode(
                self.full_text(text[: starts[j]], input_type), add_special_tokens=True
            ).ids
            if len(ids) <= self.max_length:
                return list(ids)
        return list(self.tokenizer.encode(self.full_text("", input_type), add_special_tokens=True).ids)
