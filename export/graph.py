"""The exported graph: backbone -> pooling from the attention mask -> fp32 (optionally) L2 normalize.

Graph inputs are ``input_ids`` and ``attention_mask`` (int64, ``[batch, seq]``, either padding side);
the output is ``embedding`` (float32, ``[batch, hidden]``). Decoder backbones get explicit
``position_ids = cumsum(mask) - 1`` so that left padding gives the same positions as no padding (and
the fused rotary op at opset 23 needs ``[batch, seq]`` positions). Encoder backbones get all-zero
``token_type_ids``. Projections are applied by the runtime, in fp32, after this graph.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last position whose mask is 1, per row: right for left and right padding."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device).unsqueeze(0)
    return (attention_mask * positions).amax(dim=1)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "lasttoken":
        idx = last_token_index(attention_mask)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
    if mode == "cls":
        return hidden[:, 0]
    if mode == "mean":
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    raise ValueError(f"pooling must be lasttoken, mean or cls; given {mode!r}")


class EmbeddingGraph(nn.Module):
    def __init__(self, backbone: Any, pooling: str, normalize: bool, decoder: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.normalize = normalize
        self.decoder = decoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.decoder:
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
            out = self.backbone(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            )
        else:
            out = self.backbone(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
            )
        pooled = pool(out.last_hidden_state, attention_mask, self.pooling).float()
        if self.normalize:
            pooled = nn.functional.normalize(pooled, p=2.0, dim=-1)
        return pooled
