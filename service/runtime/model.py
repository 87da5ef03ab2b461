"""The embedding runtime: opens an export folder, checks it, and embeds batches with ONNX Runtime.

Stages (each usable alone, so the batcher can tokenize on one thread and run on another):
``encode`` (texts -> token ids) -> ``run`` (padded ids -> pooled, normalized ``[n, hidden]`` fp32) ->
``project`` (fp32 projection chain to a reduced dim, re-normalized). ``warmup`` runs one batch.

Execution providers: TensorRT, then CUDA, then CPU, among those onnxruntime offers (override with
``providers``). fp16 graphs run only on a GPU provider unless ``allow_fp16_on_cpu`` (tests) is set.
A folder whose manifest records a failed parity check is refused unless ``accept_parity_failure``.
No torch here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from zembed.service.runtime.manifest import Manifest, ManifestError, check_parity, read_manifest, verify_files
from zembed.service.runtime.text import Overflow, TextEncoder

log = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = {"TensorrtExecutionProvider", "CUDAExecutionProvider"}
_ORT_TYPES = {"tensor(int64)": "int64", "tensor(float)": "float32", "tensor(float16)": "float16"}


@dataclass(frozen=True)
class Batch:
    """Token ids padded on the right, ready for the graph."""

    input_ids: I64
    attention_mask: I64

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())


def pad(ids: Sequence[Sequence[int]], pad_id: int = 0) -> Batch:
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return Batch(input_ids, mask)


def choose_providers(available: Sequence[str], requested: Sequence[str] | None) -> list[str]:
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ManifestError(
                f"execution providers {missing} are not available in this onnxruntime build "
                f"(available: {list(available)}); install onnxruntime-gpu for CUDA/TensorRT."
            )
        return list(requested)
    return [p for p in PREFERRED if p in available]


class EmbeddingModel:
    def __init__(
        self,
        folder: str | Path,
        *,
        providers: Sequence[str] | None = None,
        verify_hashes: bool = True,
        allow_fp16_on_cpu: bool = False,
        intra_op_threads: int = 0,
        accept_parity_failure: bool = False,
    ) -> None:
        import onnxruntime as ort

        self.folder = Path(folder)
        self.manifest: Manifest = read_manifest(self.folder)
        m = self.manifest
        self.parity_failure = check_parity(self.folder, m, accept_parity_failure)
        if self.parity_failure is not None:
            log.warning(
                "SERVING AN EXPORT THAT FAILED ITS PARITY CHECK (--accept-parity-failure): %s: %s",
                self.folder,
                self.parity_failure,
            )
        if verify_hashes:
            verify_files(self.folder, m)
        self.providers = choose_providers(ort.get_available_providers(), providers)
        if m.dtype == "float16" and not (GPU_PROVIDERS & set(self.providers[:1])) and not allow_fp16_on_cpu:
            raise ManifestError(
                f"{self.folder / m.graph} is a float16 graph, which runs only on a GPU provider; "
                f"providers in use: {self.providers}. Export with --dtype float32 or int8 for CPU."
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(
                str(self.folder / m.graph), sess_options=opts, providers=self.providers
            )
        except Exception as exc:
            raise ManifestError(
                f"{self.folder / m.graph} could not be loaded by onnxruntime ({exc}); re-run `zembed export`."
            ) from None
        self.provider = self.session.get_providers()[0]
        self._check_graph()
        self.text = TextEncoder(self.folder / "tokenizer.json", m.prompts, m.suffix, m.max_length)
        self.pad_id = self._pad_id()
        self.chain = self._load_chain()

    # ------------------------------------------------------------------ checks
    def _check_graph(self) -> None:
        m = self.manifest
        got_in = {i.name: _ORT_TYPES.get(i.type, i.type) for i in self.session.get_inputs()}
        got_out = {o.name: (_ORT_TYPES.get(o.type, o.type), o.shape) for o in self.session.get_outputs()}
        want_in = {t.name: t.dtype for t in m.inputs}
        if got_in != want_in:
            raise ManifestError(
                f"{self.folder / m.graph} has inputs {got_in}; the manifest expects {want_in}. "
                "The graph and manifest.json come from different exports: re-export into an empty folder."
            )
        for t in m.outputs:
            if t.name not in got_out:
                raise ManifestError(
                    f"{self.folder / m.graph} has no output {t.name!r} (it has {sorted(got_out)}); "
                    "re-export into an empty folder."
                )
            dtype, shape = got_out[t.name]
            if dtype != t.dtype or (isinstance(shape[-1], int) and shape[-1] != m.hidden_size):
                raise ManifestError(
                    f"{self.folder / m.graph}: output {t.name!r} is {dtype} {shape}; the manifest expects "
                    f"{t.dtype} [batch, {m.hidden_size}]. Re-export into an empty folder."
                )
        self.output_name = m.outputs[0].name

    def _pad_id(self) -> int:
        tok = self.text.tokenizer
        for name in ("<|endoftext|>", "[PAD]", "<pad>"):
            tid = tok.token_to_id(name)
            if tid is not None:
                return int(tid)
        return 0

    def _load_chain(self) -> dict[int, F32]:
        m = self.manifest
        if not m.projections:
            return {}
        from safetensors.numpy import load_file

        mats = {int(k): v.astype(np.float32) for k, v in load_file(str(self.folder / m.projections)).items()}
        chain: dict[int, F32] = {}
        acc: F32 | None = None
        for k in sorted(mats, reverse=True):
            acc = mats[k] if acc is None else np.asarray(acc @ mats[k], dtype=np.float32)
            chain[k] = acc
        return chain

    # ------------------------------------------------------------------ stages
    @property
    def dims(self) -> list[int]:
        return list(self.manifest.dims)

    def encode(
        self, texts: Sequence[str], input_type: str | None, overflow: Overflow = Overflow.TRUNCATE
    ) -> list[list[int]]:
        return self.text.encode(texts, input_type, overflow)

    def run(self, ids: Sequence[Sequence[int]]) -> F32:
        """Pooled (and normalized, if the model normalizes) ``[n, hidden]`` fp32 embeddings."""
        batch = pad(ids, self.pad_id)
        out = self.session.run(
            [self.output_name], {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        )[0]
        return np.asarray(out, dtype=np.float32)

    def project(self, emb: F32, dim: int) -> F32:
        if dim == self.manifest.hidden_size:
            return emb
        if dim not in self.chain:
            raise ValueError(f"dimensions must be one of {self.dims}; given {dim}")
        y = emb @ self.chain[dim]
        out: F32 = y / np.linalg.norm(y, axis=1, keepdims=True)
        return out

    def embed(
        self,
        texts: Sequence[str],
        input_type: str | None = None,
        dim: int | None = None,
        overflow: Overflow = Overflow.TRUNCATE,
    ) -> F32:
        emb = self.run(self.encode(texts, input_type, overflow))
        return self.project(emb, dim or self.manifest.hidden_size)

    def warmup(self) -> None:
        self.run(self.encode(["warm-up"], self.manifest.default_prompt))
