#!/usr/bin/env bash
# Debian's Chromium for the report's browser test (headless, offline). Prints the binary's path.
set -euo pipefail
for candidate in "${CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
  if [[ -n "$candidate" && -x "$candidate" ]]; then echo "$candidate"; exit 0; fi
done
SUDO=""
if [[ "$(id -u)" != 0 ]]; then SUDO="sudo -n"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq --no-install-recommends chromium >&2
echo /usr/bin/chromium
