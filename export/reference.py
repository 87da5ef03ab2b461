"""An independent PyTorch reference of the embedding pipeline (plain transformers, no
sentence-transformers, no padding, nothing shared with ``export.graph``).

For each text separately: tokenize ``prompt + text + suffix`` as one string with the checkpoint's own
tokenizer, run the backbone on that single unpadded sequence, pool (last token: the final position;
mean: average of all positions; cls: the first), L2-normalize in fp32, then for each reduced dim
multiply by the composed projection chain and normalize again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from zembed.export.source import Source

F32 = npt.NDArray[np.float32]


def projection_chain(path: Path, dims: list[int]) -> dict[int, F32]:
    """``{k: W_top @ ... @ W_k}`` in fp32, composed from the widest down."""
    from safetensors.numpy import load_file

    mats = {int(k): v.astype(np.float32) for k, v in load_file(str(path)).items()}
    out: dict[int, F32] = {}
    acc: F32 | None = None
    for k in sorted(dims, reverse=True):
        acc = mats[k] if acc is None else acc @ mats[k]
        out[k] = acc
    return out


class Reference:
    def __init__(self, source: Source, dtype: torch.dtype = torch.float32, tokenizer: Any = None) -> None:
        """``tokenizer``: the checkpoint's tokenizer already loaded (``AutoTokenizer`` of the folder,
        slow to build for big Unigram vocabularies); loaded here when None."""
        from transformers import AutoModel, AutoTokenizer

        self.source = source
        self.tok = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(str(source.path))
        self.model = AutoModel.from_pretrained(str(source.transformer_path), dtype=dtype).eval()
        self.chain = (
            projection_chain(source.path / "projections.safetensors", source.projection_dims)
            if source.projection_dims
            else {}
        )

    def token_ids(self, text: str, input_type: str | None) -> list[int]:
        prompt = self.source.prompts.get(input_type, "") if input_type else ""
        ids: list[int] = self.tok(prompt + text + self.source.suffix, add_special_tokens=True)["input_ids"]
        return ids

    @torch.no_grad()
    def embed(self, texts: list[str], input_type: str | None) -> F32:
        rows = []
        for text in texts:
            ids = torch.tensor([self.token_ids(text, input_type)])
            hidden = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
            if self.source.pooling == "lasttoken":
                v = hidden[-1]
            elif self.source.pooling == "cls":
                v = hidden[0]
            else:
                v = hidden.mean(dim=0)
            v = v.float()
            if self.source.normalize:
                v = v / v.norm()
            rows.append(v.numpy())
        return np.stack(rows).astype(np.float32)

    def project(self, emb: F32, dim: int) -> F32:
        if dim == self.source.hidden_size:
            return emb
        y = emb @ self.chain[dim]
        out: F32 = y / np.linalg.norm(y, axis=1, keepdims=True)
        return out
