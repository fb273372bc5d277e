#!/usr/bin/env bash
# Build `seccomp-default` (testbed/scripts/seccomp/): containerd v1.7.27's default seccomp profile
# for a container's runtime spec, what the CRI plugin applies to a pod that asks for
# `seccompProfile: RuntimeDefault`. Cached by its sources; prints the binary's path.
# About 10 s cold (the module's dependencies from the Go module proxy); instant when cached.
set -euo pipefail

HERE="$(cd "$(dirname "$0")/seccomp" && pwd)"
KEY=$(cat "$HERE/go.mod" "$HERE/go.sum" "$HERE/main.go" | sha256sum | cut -c1-12)
CACHE="${SOBERT_TESTBED_CACHE:-$HOME/.cache/sobert/testbed}/seccomp-${KEY}"
if [[ -x "$CACHE/seccomp-default" ]]; then
  echo "$CACHE/seccomp-default"; exit 0
fi
command -v go >/dev/null || { echo "[build-seccomp-default] error: Go >= 1.26 is needed (go not on PATH)" >&2; exit 1; }
mkdir -p "$CACHE"
(cd "$HERE" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$CACHE/seccomp-default.tmp" . >&2)
mv "$CACHE/seccomp-default.tmp" "$CACHE/seccomp-default"
echo "$CACHE/seccomp-default"
