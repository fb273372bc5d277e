#!/usr/bin/env bash
# Build the upstream operators sobert's objects run under, at pinned versions, with `go install`
# from the Go module proxy (none of these modules has replace directives), and cache them; prints
# the directory holding training-operator.v1, ray-operator, trainer-controller-manager and jobset.
#
#   Kubeflow Training Operator v1.9.3   PyTorchJob (kubeflow.org/v1)
#   KubeRay ray-operator v1.5.1         RayJob, RayCluster (ray.io/v1)
#   Kubeflow Trainer v2.2.1             TrainJob, ClusterTrainingRuntime (trainer.kubeflow.org/v1alpha1)
#   JobSet v0.11.1                      the JobSet Trainer v2.2.1 requires (its go.mod), built from
#                                       testbed/scripts/jobset/go.mod: the proxy does not serve its
#                                       version list, which `go install module@version` reads
#
# About 15-25 minutes cold on 2 cores for all four; seconds when cached.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
# The pins; sobert_testbed/upstream.py reads the operators' manifests at the same versions
# (tests/unit/test_testbed_pins.py).
PACKAGES=(
  "github.com/kubeflow/training-operator/cmd/training-operator.v1@v1.9.3"
  "github.com/ray-project/kuberay/ray-operator@v1.5.1"
  "github.com/kubeflow/trainer/v2/cmd/trainer-controller-manager@v2.2.1"
)
# A change of the pins or of the JobSet build module makes a new cache directory.
KEY=$(printf '%s\n' "${PACKAGES[@]}" | cat - "$HERE/jobset/go.mod" "$HERE/jobset/go.sum" | sha256sum | cut -c1-12)
CACHE="${SOBERT_TESTBED_CACHE:-$HOME/.cache/sobert/testbed}/operators-${KEY}"
if [[ -x "$CACHE/training-operator.v1" && -x "$CACHE/ray-operator" && -x "$CACHE/trainer-controller-manager" \
      && -x "$CACHE/jobset" ]]; then
  echo "$CACHE"; exit 0
fi

log() { echo "[build-operators] $*" >&2; }
command -v go >/dev/null || { log "error: Go >= 1.26 is needed (go not on PATH)"; exit 1; }
STAGE="$(mktemp -d "${TMPDIR:-/tmp}/sobert-operators.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$CACHE"
for package in "${PACKAGES[@]}"; do
  log "go install $package"
  (cd "$STAGE" && CGO_ENABLED=0 GOBIN="$STAGE/bin" go install -trimpath -ldflags "-s -w" "$package" >&2)
done
log "go build sigs.k8s.io/jobset (testbed/scripts/jobset/go.mod)"
(cd "$HERE/jobset" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" \
   -o "$STAGE/bin/jobset" sigs.k8s.io/jobset >&2)
for binary in "$STAGE"/bin/*; do
  install -m 0755 "$binary" "$CACHE/$(basename "$binary").tmp" && mv "$CACHE/$(basename "$binary").tmp" "$CACHE/$(basename "$binary")"
done
echo "$CACHE"
