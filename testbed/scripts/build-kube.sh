#!/usr/bin/env bash
# Build the testbed's control plane from the Go module proxy and cache it; prints the directory
# holding kube-apiserver, kube-controller-manager, kube-scheduler and etcd.
#
# The versions are those of testbed/scripts/kube/go.mod (k8s.io/kubernetes at a release tag, its
# staging modules at the matching published versions, etcd at the version that release uses).
# About 15-20 minutes cold on 2 cores (Go's build cache keeps later builds to seconds); a change
# of go.mod or go.sum makes a new cache directory.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
MODULE="$HERE/kube"
K8S_VERSION=$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' "$MODULE/go.mod")
KEY=$(cat "$MODULE/go.mod" "$MODULE/go.sum" | sha256sum | cut -c1-12)
CACHE="${SOBERT_TESTBED_CACHE:-$HOME/.cache/sobert/testbed}/kube-${K8S_VERSION}-${KEY}"
TOOLS=(kube-apiserver kube-controller-manager kube-scheduler etcd)
if [[ -x "$CACHE/etcd" && -x "$CACHE/kube-scheduler" ]]; then echo "$CACHE"; exit 0; fi

log() { echo "[build-kube] $*" >&2; }
command -v go >/dev/null || { log "error: Go >= 1.25 is needed (go not on PATH)"; exit 1; }
STAGE="$(mktemp -d "${TMPDIR:-/tmp}/sobert-kube-build.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
MINOR="${K8S_VERSION#v1.}"; MINOR="${MINOR%%.*}"
LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=${K8S_VERSION} -X k8s.io/component-base/version.gitMajor=1"
LDFLAGS+=" -X k8s.io/component-base/version.gitMinor=${MINOR} -X k8s.io/component-base/version.gitTreeState=clean"
log "building Kubernetes ${K8S_VERSION} control plane and etcd (cold: 15-20 minutes on 2 cores)"
cd "$MODULE"
for package in k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
               k8s.io/kubernetes/cmd/kube-scheduler go.etcd.io/etcd/server/v3; do
  name="${package##*/}"; [[ "$name" == v3 ]] && name=etcd
  log "  $name"
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$LDFLAGS" -o "$STAGE/$name" "$package" >&2
done
mkdir -p "$CACHE"
for tool in "${TOOLS[@]}"; do install -m 0755 "$STAGE/$tool" "$CACHE/$tool.tmp" && mv "$CACHE/$tool.tmp" "$CACHE/$tool"; done
echo "$CACHE"
