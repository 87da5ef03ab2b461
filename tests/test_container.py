"""The CPU image, built and run as CI runs it: deploy/smoke.sh (also `make smoke-container`) builds
deploy/Dockerfile with podman on a Debian base made by mmdebstrap, runs it with the packaged MiniLM
export as the model volume and a data volume, and deploy/smoke_check.py calls health, Embed,
CreateCollection, Upsert, Search and GetDocuments over gRPC, sends SIGTERM and checks the drain and
the exit code, then restarts on the same data volume. The image size is printed.

Needs root and Debian's podman, runc, netavark, aardvark-dns, catatonit, iptables and mmdebstrap
(../shared/spec/containers-here.md; .ci/run installs them). Without them the test skips saying why;
ZEMBED_CONTAINER_TESTS=require (set by .ci/run once they are installed) turns the skip into a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.packaged_model import ROOT, packaged_minilm

REQUIRE = os.environ.get("ZEMBED_CONTAINER_TESTS", "") == "require"
TOOLS = ("podman", "runc", "mmdebstrap", "catatonit")


def unavailable(why: str) -> None:
    if REQUIRE:
        pytest.fail(f"ZEMBED_CONTAINER_TESTS=require but {why}")
    pytest.skip(why)


def podman_usable() -> str | None:
    """Why podman cannot build and run images here, or None."""
    if os.geteuid() != 0:
        return "podman builds and runs images here only as root (containers-here.md); not root"
    missing = [t for t in TOOLS if shutil.which(t) is None and not Path(f"/usr/libexec/podman/{t}").exists()]
    if missing:
        return (
            f"{', '.join(missing)} not installed (apt-get install podman runc netavark aardvark-dns "
            "catatonit iptables mmdebstrap)"
        )
    if not Path("/etc/apt/sources.list.d/debian.sources").exists():
        return "no /etc/apt/sources.list.d/debian.sources for mmdebstrap to build the base image from"
    return None


@pytest.mark.slow
def test_cpu_image_serves_drains_and_keeps_its_data(capsys: pytest.CaptureFixture[str]) -> None:
    why = podman_usable()
    if why is not None:
        unavailable(why)
    model = packaged_minilm()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env["PYTHON"] = sys.executable
    run = subprocess.run(
        ["bash", str(ROOT / "deploy" / "smoke.sh"), str(model)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    out = run.stdout + run.stderr
    with capsys.disabled():  # CI's log shows the image size and each step's time
        print("\n" + "\n".join(x for x in out.splitlines() if x.startswith("smoke: ")))
    assert run.returncode == 0, out[-6000:]
    for line in (
        "Embed: 2 vectors of 384 dims",
        "Upsert: 4 documents embedded and stored in the container",
        "Search with topic != pets: ['bread', 'stocks']",
        "during the drain delay: Embed answered (384 dims)",
        "exit code 0 after",
        "data volume kept 4 documents; Search finds 'cat'",
        "smoke: OK",
    ):
        assert line in out, out[-6000:]
    assert re.search(r"SIGTERM: health NOT_SERVING after 0\.\d\d s", out), out[-6000:]
    size = re.search(r"smoke: image size: (\d+) MB", out)
    assert size is not None and 100 < int(size.group(1)) < 1500, out[-3000:]  # no torch, no build tools


def test_gpu_image_stays_in_step_with_the_cpu_image() -> None:
    """The GPU image cannot be built here (no CUDA base image, no GPU): it is linted (test_deploy.py)
    and kept in step with the CPU image that is built: same sources copied, same stages, same user,
    volume, ports, settings and entrypoint; it swaps onnxruntime for onnxruntime-gpu."""
    cpu = (ROOT / "deploy" / "Dockerfile").read_text()
    gpu = (ROOT / "deploy" / "Dockerfile.gpu").read_text()

    def lines(text: str, prefix: str) -> list[str]:
        return [x.strip() for x in text.splitlines() if x.strip().startswith(prefix)]

    for prefix in ("COPY", "FROM", "USER", "VOLUME", "EXPOSE", "ENTRYPOINT", "WORKDIR", "ENV"):
        assert lines(cpu, prefix) == lines(gpu, prefix), prefix
    cpu_env = dict(re.findall(r"(ZEMBED_\w+)=(\S+)", cpu))
    gpu_env = dict(re.findall(r"(ZEMBED_\w+)=(\S+)", gpu))
    assert len(cpu_env) >= 5 and cpu_env.items() <= gpu_env.items()
    assert set(gpu_env) - set(cpu_env) == {"ZEMBED_PROVIDERS"}
    assert "pip install --no-cache-dir ." in cpu and "pip install --no-cache-dir ." in gpu
    assert "onnxruntime-gpu" in gpu and "pip uninstall -y onnxruntime" in gpu
