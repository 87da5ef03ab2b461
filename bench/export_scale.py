"""Export cost at the real model's width: random-weight Qwen3 with hidden 2560, FFN 9728, 32/8 heads
and 2 and 4 layers (real vocabulary), exported as float16 like the real 4B checkpoint. Measures the
wall time and peak RSS of each export in a fresh process and extrapolates linearly in the layer count
to zembed-1's 36 layers. Prints a table; writes bench/results/export_scale.json.

    .venv/bin/python bench/export_scale.py [--layers 2 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import table, write_json

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from dataclasses import replace
from zembed.export.synthetic import REAL_WIDTH, build_zembed_like
from zembed.export.onnx_export import ExportOptions, export
layers, root = int(sys.argv[1]), Path(sys.argv[2])
t = time.perf_counter()
src = build_zembed_like(root / "src", replace(REAL_WIDTH, layers=layers), dtype="float16")
build_s = time.perf_counter() - t
build_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"build_s": build_s, "build_rss": build_rss}), flush=True)
"""

EXPORT = r"""
import json, resource, sys, time
from pathlib import Path
from zembed.export.onnx_export import ExportOptions, export
root = Path(sys.argv[1])
t = time.perf_counter()
# external data, as the real 4B model gets (its weights pass 2 GB): tensors stream to model.onnx.data
m = export(root / "src", root / "out", ExportOptions(dtype="float16", parity=False, external_data=True))
secs = time.perf_counter() - t
size = sum(f.stat().st_size for f in (root / "out").iterdir())
print(json.dumps({"export_s": secs, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "out_bytes": size}), flush=True)
"""


def run(code: str, *args: str) -> dict[str, float]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=root, capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 4])
    args = ap.parse_args()
    results = {}
    for layers in args.layers:
        with tempfile.TemporaryDirectory(prefix="zembed-scale-") as tmp:
            t = time.perf_counter()
            built = run(CHILD, str(layers), tmp)
            exp = run(EXPORT, tmp)
            results[layers] = {**built, **exp, "total_s": time.perf_counter() - t}
    ls = sorted(results)
    rows = [
        [n, f"{r['export_s']:.1f}", f"{r['peak_rss'] / 2**30:.2f}", f"{r['out_bytes'] / 1e9:.2f}"]
        for n, r in sorted(results.items())
    ]
    if len(ls) >= 2:
        a, b = results[ls[0]], results[ls[-1]]
        per_layer = {k: (b[k] - a[k]) / (ls[-1] - ls[0]) for k in ("export_s", "peak_rss", "out_bytes")}
        est = {k: a[k] + per_layer[k] * (36 - ls[0]) for k in per_layer}
        rows.append(
            [
                "36 (extrapolated)",
                f"{est['export_s']:.0f}",
                f"{est['peak_rss'] / 2**30:.1f}",
                f"{est['out_bytes'] / 1e9:.1f}",
            ]
        )
        results["36_extrapolated"] = est
    print("fp16 export of a real-width Qwen3 (hidden 2560, FFN 9728, 32/8 heads, vocab 151,936), CPU")
    print(table(["layers", "export s", "peak RSS GiB", "output GB"], rows))
    print(f"wrote {write_json('export_scale', {'results': {str(k): v for k, v in results.items()}})}")


if __name__ == "__main__":
    main()
