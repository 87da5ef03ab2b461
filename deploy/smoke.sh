#!/usr/bin/env bash
# Build the CPU image with podman and run it against an export folder: health must reach SERVING and an
# Embed call must answer. Usage: deploy/smoke.sh EXPORT_DIR   (see shared notes on podman here)
# Needs: podman runc netavark aardvark-dns catatonit iptables mmdebstrap (Debian packages), root.
set -euo pipefail
model=$(realpath "${1:?usage: deploy/smoke.sh EXPORT_DIR}")
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
export CONTAINERS_CONF="$work/containers.conf" CONTAINERS_STORAGE_CONF="$work/storage.conf"
cat > "$CONTAINERS_CONF" <<CONF
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
cat > "$CONTAINERS_STORAGE_CONF" <<CONF
[storage]
driver = "overlay"
graphroot = "$work/graph"
runroot = "$work/run"
CONF
cleanup() { podman rm -f zembed-smoke >/dev/null 2>&1 || true; podman system reset -f >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

# a local Debian base standing in for python:3.11-slim (no registry is reachable here)
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$work/base.tar" \
  /etc/apt/sources.list.d/debian.sources
podman import -q "$work/base.tar" localhost/zembed-base >/dev/null

# pip inside the build behaves as on the host: CA bundle, pip config files and local wheel folders
mounts=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
for f in /etc/pip.conf /root/.config/pip/pip.conf; do [ -f "$f" ] && mounts+=(-v "$f:$f:ro"); done
for d in /opt/wheels /opt/pypi /opt/pypi-more; do [ -d "$d" ] && mounts+=(-v "$d:$d:ro"); done
build_args=()
for v in $(env | grep -o '^PIP_[A-Z_]*' || true); do build_args+=(--build-arg "$v"); done
podman build -q --pull=never --build-arg BASE_IMAGE=localhost/zembed-base "${build_args[@]}" "${mounts[@]}" \
  -f "$root/deploy/Dockerfile" -t localhost/zembed-serve:cpu "$root"

podman run -d --init --name zembed-smoke --network host -v "$model:/models/current:ro" \
  -e ZEMBED_HOST=127.0.0.1 -e ZEMBED_PORT=50061 -e ZEMBED_METRICS_PORT=0 -e ZEMBED_DEFAULT_COLLECTION=docs \
  localhost/zembed-serve:cpu >/dev/null
python3 - <<'PY'
import sys, time
sys.path.insert(0, ".")
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from zembed.service.client import Client
ch = grpc.insecure_channel("127.0.0.1:50061")
deadline = time.time() + 120
while True:
    try:
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2).status
        if status == health_pb2.HealthCheckResponse.SERVING:
            break
    except grpc.RpcError:
        pass
    if time.time() > deadline:
        raise SystemExit("container did not become SERVING")
    time.sleep(1)
with Client("127.0.0.1:50061") as c:
    print("container embeds:", c.embed(["hello from the container"]).shape, [x.name for x in c.list_collections()])
PY
podman stop -t 20 zembed-smoke >/dev/null
echo "smoke: OK (exit code $(podman inspect -f '{{.State.ExitCode}}' zembed-smoke))"
