#!/usr/bin/env bash
# Debian's image tools for the testbed (docs/testbed.md, "Images"): buildah builds the project's
# Dockerfiles, mmdebstrap the stand-ins for the upstream base images no registry serves here,
# runc runs each container from its image. Installs only what is missing (apt-get, as root or
# through sudo).
set -euo pipefail
missing=()
for tool in buildah runc mmdebstrap; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if (( ${#missing[@]} )); then
  SUDO=""
  if [[ "$(id -u)" != 0 ]]; then SUDO="sudo -n"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
buildah --version
runc --version | head -1
