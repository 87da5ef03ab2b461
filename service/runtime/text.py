"""Turning texts into token ids exactly like the reference pipeline, with an explicit length policy.

Each input becomes ONE string ``prompt[input_type] + text + suffix`` tokenized with the export's
``tokenizer.json`` by the Rust ``tokenizers`` library (the joins must not be tokenized separately: the
pre-tokenizer merges whitespace runs across them). Text that contains special-token strings such as
``<|im_end|>`` is tokenized as the reference tokenizer does: the special token is recognised (that
keeps token-for-token parity with the checkpoint's own pipeline; strip such strings upstream if the
texts are untrusted and that matters to you).

Over-length policy (``max_length`` tokens, prompt and suffix included):

- ``truncate`` (default): keep every token of the prompt and of the suffix (and the tokenizer's own
  special tokens) and drop the text's last tokens until the whole fits, so that the pooled last token
  is still the suffix's; with no prompt and no suffix this is the usual right truncation
  (``[CLS] first tokens [SEP]`` for BERT-style models, as sentence-transformers does);
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
        return self.encode_counted(texts, input_type, overflow)[0]

    def encode_counted(
        self, texts: Sequence[str], input_type: str | None, overflow: Overflow = Overflow.TRUNCATE
    ) -> tuple[list[list[int]], list[int]]:
        """Token ids (after the length policy) and each input's token count before it."""
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
        return out, [len(e.ids) for e in encs]

    def count(self, texts: Sequence[str], input_type: str | None) -> list[int]:
        """Tokens each input would take before any truncation."""
        fulls = [self.full_text(t, input_type) for t in texts]
        return [len(e.ids) for e in self.tokenizer.encode_batch(fulls, add_special_tokens=True)]

    def _truncate(self, text: str, input_type: str | None, enc: Encoding) -> list[int]:
        """Keep the prompt's and the suffix's tokens; keep the text's first tokens that fit."""
        start = len(self.prompts.get(input_type, "") if input_type else "")
        end = start + len(text)
        in_text = [i for i, (s, e) in enumerate(enc.offsets) if start <= s < end and e > s]
        ids = list(enc.ids)
        if not in_text:
            return ids[: self.max_length]
        first, last = in_text[0], in_text[-1] + 1
        fixed = len(ids) - (last - first)
        budget = self.max_length - fixed
        if budget < 0:
            raise TooLong(0, fixed, self.max_length)
        return ids[: first + budget] + ids[last:]
