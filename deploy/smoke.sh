#!/usr/bin/env bash
# Build the CPU image (deploy/Dockerfile) with podman and check it end to end: run it with a model
# volume (EXPORT_DIR, read-only) and a data volume, then deploy/smoke_check.py calls health, Embed,
# CreateCollection, Upsert, Search and GetDocuments over gRPC, sends SIGTERM and checks the drain and
# the exit code (0); a second container on the same data volume must still find the documents.
# Prints the image size and the time of each step; exit 0 only when every check passed.
#
# Usage: deploy/smoke.sh EXPORT_DIR   (make smoke-container; tests/test_container.py in make test)
# Needs root and Debian's podman runc netavark aardvark-dns catatonit iptables mmdebstrap
# (../shared/spec/containers-here.md): no registry is reachable here, so the base image is made from
# Debian packages with mmdebstrap and passed as BASE_IMAGE (users build on python:3.11-slim).
# Everything podman writes lives in a temporary folder, removed at the end.
set -euo pipefail
model=$(realpath "${1:?usage: deploy/smoke.sh EXPORT_DIR}")
[ -f "$model/manifest.json" ] || { echo "smoke: $model has no manifest.json (zembed export ...)" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
name=zembed-smoke-$$
work=$(mktemp -d)
export CONTAINERS_CONF="$work/containers.conf" CONTAINERS_STORAGE_CONF="$work/storage.conf"
cat > "$CONTAINERS_CONF" <<CONF
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]
[network]
network_backend = "netavark"
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
cleanup() {
  podman rm -f "$name" >/dev/null 2>&1 || true
  podman system reset -f >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
step() { echo "smoke: $1: $(( SECONDS - t ))s"; t=$SECONDS; }
t=$SECONDS

# a local Debian base standing in for python:3.11-slim (no registry is reachable here); a re-run may
# keep the tarball with ZEMBED_SMOKE_BASE_TAR=FILE (made there when missing)
base_tar=${ZEMBED_SMOKE_BASE_TAR:-$work/base.tar}
if [ ! -s "$base_tar" ]; then
  mmdebstrap --quiet --format=tar --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$base_tar.part" \
    /etc/apt/sources.list.d/debian.sources
  mv "$base_tar.part" "$base_tar"
fi
podman import -q "$base_tar" localhost/zembed-base >/dev/null
step "base image (mmdebstrap)"

# pip inside the build behaves as on the host: the CA bundle, every pip config file that
# `pip config debug` lists as existing, and every local file or folder those files and the PIP_*
# variables name (constraints, find-links, file:// indexes: the folder holding simple/), all
# read-only; the PIP_* variables passed as build args
mounts=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
while IFS= read -r p; do mounts+=(-v "$p:$p:ro"); done < <("$python" - <<'PY'
import os, re, subprocess, sys

out = subprocess.run([sys.executable, "-m", "pip", "config", "debug"], capture_output=True, text=True).stdout
paths = set()
for line in out.splitlines():
    if m := re.match(r"\s+(/\S+), exists: True$", line):
        paths.add(m.group(1))
    elif m := re.match(r"\s+(?:[\w.-]+: |PIP_\w+=)'?(.*?)'?$", line):
        for value in m.group(1).split():
            value = value.removeprefix("file://").rstrip("/")
            if value.endswith("/simple"):  # a local index: its pages link to files beside simple/
                value = os.path.dirname(value)
            if value.startswith("/") and os.path.exists(value):
                paths.add(value)
print("\n".join(sorted(p for p in paths if p != "/etc/ssl/certs/ca-certificates.crt")))
PY
)
build_args=()
for v in $(env | grep -o '^PIP_[A-Z_]*' || true); do build_args+=(--build-arg "$v"); done
podman build -q --pull=never --build-arg BASE_IMAGE=localhost/zembed-base "${build_args[@]}" "${mounts[@]}" \
  -f "$root/deploy/Dockerfile" -t localhost/zembed-serve:cpu "$root" >/dev/null
step "image build"
size=$(podman image inspect -f '{{.Size}}' localhost/zembed-serve:cpu)
base=$(podman image inspect -f '{{.Size}}' localhost/zembed-base)
echo "smoke: image size: $(( size / 1000000 )) MB (base $(( base / 1000000 )) MB, zembed layers $(( (size - base) / 1000000 )) MB)"

port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
podman volume create "$name-data" >/dev/null
run() {
  podman run -d --init --name "$name" --network host \
    -v "$model:/models/current:ro" -v "$name-data:/data" \
    -e ZEMBED_HOST=127.0.0.1 -e ZEMBED_PORT="$port" -e ZEMBED_METRICS_PORT=0 \
    -e ZEMBED_DRAIN_DELAY_S=3 -e ZEMBED_GRACE_S=5 \
    localhost/zembed-serve:cpu >/dev/null
}
check() {
  if ! PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$python" "$root/deploy/smoke_check.py" "127.0.0.1:$port" "$name" "$1"; then
    echo "smoke: container log:" >&2
    podman logs "$name" 2>&1 | tail -40 >&2
    exit 1
  fi
}
run
check serve
# conmon may still be copying the exited container's last lines into its log: look for up to 10 s
drained=0
for _ in $(seq 20); do
  if podman logs "$name" 2>&1 | grep -q 'draining'; then drained=1; break; fi
  sleep 0.5
done
[ "$drained" = 1 ] || { echo "smoke: no drain in the log" >&2; podman logs "$name" 2>&1 | tail -20 >&2; exit 1; }
podman rm "$name" >/dev/null
step "round trip, SIGTERM drain"
run
check persisted
podman stop -t 20 "$name" >/dev/null
code=$(podman inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || { echo "smoke: exit code $code after podman stop" >&2; exit 1; }
step "restart on the data volume"
echo "smoke: OK"
