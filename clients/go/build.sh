#!/bin/sh
# Builds the Go example client offline from Debian's packages (no module proxy; grpc 1.33 needs the
# APIv2-based github.com/golang/protobuf 1.5, so golang-github-golang-protobuf-1-5-dev, not 1-3):
#   apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev \
#                   protoc-gen-go protoc-gen-go-grpc protobuf-compiler
# Usage: clients/go/build.sh [WORKDIR [BINARY]]  (prints the binary's path)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:-$(mktemp -d)}
out=${2:-$work/zembed-go-client}
gen="$work/src/github.com/zembed/zembed-serve/gen/go"
mkdir -p "$gen" "$work/src/zembedclient"
protoc -I"$root/protos" \
    --go_out="$gen" --go_opt=paths=source_relative \
    --go-grpc_out="$gen" --go-grpc_opt=paths=source_relative \
    "$root/protos/zembed/v1/zembed.proto"
cp "$here/main.go" "$work/src/zembedclient/"
cd "$work/src/zembedclient"
# GOPATH mode: Debian installs the Go sources of its -dev packages under /usr/share/gocode
GO111MODULE=off GOFLAGS= GOPATH="$work:/usr/share/gocode" go build -o "$out" .
echo "$out"
