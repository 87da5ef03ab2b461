"""The memory-bandwidth floor of a scan, for benchmarks: ``read_sum(array)`` reads a buffer once.

Compiled from ``bench/floor.c`` with the system C compiler (``-O3 -march=native``, like the scan
kernels' best path) into ``bench/.cache/`` on first use and called through ctypes, which releases
the GIL during the call (so it runs in parallel with other threads, as the scan does).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import numpy.typing as npt

HERE = Path(__file__).resolve().parent
_lib: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        src = HERE / "floor.c"
        tag = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
        out = HERE / ".cache" / f"floor-{tag}{sysconfig.get_config_var('SHLIB_SUFFIX') or '.so'}"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(f".{os.getpid()}.tmp")
            cc = os.environ.get("CC", "cc")
            subprocess.run(
                [cc, "-O3", "-march=native", "-shared", "-fPIC", str(src), "-o", str(tmp)], check=True
            )
            tmp.replace(out)
        lib = ctypes.CDLL(str(out))
        lib.read_sum.restype = ctypes.c_uint64
        lib.read_sum.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _lib = lib
    return _lib


def read_sum(buffer: npt.NDArray[np.generic]) -> int:
    """Read a whole C-contiguous buffer once as 64-bit words; returns their sum (mod 2**64)."""
    a = np.ascontiguousarray(buffer)
    return int(_load().read_sum(a.ctypes.data, a.nbytes // 8))


if __name__ == "__main__":
    data = np.arange(1001, dtype=np.uint64)
    assert read_sum(data) == int(data.sum())
    print("ok")
