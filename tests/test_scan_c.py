"""The scan kernels checked in C against the scalar one (tests/c/test_scan_kernels.c): natively
(every x86 kernel this CPU runs) and the NEON kernel cross-compiled for aarch64 and run under
qemu-user, so the ARM path is tested on an x86 machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from zembed.store import scan

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "store" / "csrc"
SOURCES = [
    str(ROOT / "tests" / "c" / "test_scan_kernels.c"),
    str(CSRC / "dispatch.c"),
    *sorted(str(p) for p in CSRC.glob("scan_*.c")),
]
FLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-Wno-unused-function", f"-I{CSRC}"]
CROSS = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"
INSTALL = "apt-get install -y qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross"


def test_kernels_match_scalar_natively(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc/gcc) on PATH to build tests/c/test_scan_kernels.c")
    exe = tmp_path / "test_scan_kernels"
    subprocess.run([cc, *FLAGS, *SOURCES, "-o", str(exe)], check=True, capture_output=True, text=True)
    required = [k for k in scan.kernels() if k != "generic"]  # what Python says this CPU runs
    out = subprocess.run([str(exe), *required], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("kernels: " + " ".join(scan.kernels()) + "\n")
    assert "0 failures" in out.stdout


def test_neon_kernel_matches_scalar_under_qemu(tmp_path: Path) -> None:
    missing = [tool for tool in (CROSS, QEMU) if shutil.which(tool) is None]
    if missing:
        why = f"{' and '.join(missing)} not installed (Debian: {INSTALL})"
        if os.environ.get("ZEMBED_NEON_TESTS") == "require":  # .ci/run installed them: a skip is a failure
            pytest.fail(why)
        pytest.skip(why)
    exe = tmp_path / "test_scan_kernels_aarch64"
    build = subprocess.run(
        [CROSS, *FLAGS, "-static", *SOURCES, "-o", str(exe)], capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr
    out = subprocess.run([QEMU, str(exe), "neon"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[0] == "kernels: neon generic"
    assert "384 cases, 384 kernel runs compared, 0 failures" in out.stdout
