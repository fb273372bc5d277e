#!/usr/bin/env bash
# Build a real kube-apiserver (v1.20.2) from Debian bookworm's `kubernetes` source package and
# cache it; prints the binary's path. No registry ships the binary, so we build it (~4 min cold on
# 2 cores, seconds when cached). The system's apt sources are left untouched: the deb-src line
# lives in a private apt configuration under the work dir.
set -euo pipefail

VERSION="1.20.5+really1.20.2-1.1+deb12u1"
CACHE="${SOBERT_TESTBED_CACHE:-$HOME/.cache/sobert/testbed}/kubernetes-${VERSION}"
BIN="$CACHE/kube-apiserver"
if [[ -x "$BIN" ]]; then echo "$BIN"; exit 0; fi

log() { echo "[build-kube-apiserver] $*" >&2; }
need_apt=()
for pkg in golang-1.19-go etcd-server rsync make dpkg-dev golang-github-modern-go-reflect2-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  log "installing ${need_apt[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >&2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sobert-k8s-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/sources.list.d" "$WORK/src"
# Same mirror and keyring as the machine's own sources, deb-src only.
URI=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
KEYRING=$(awk '/^Signed-By:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
URI="${URI:-http://deb.debian.org/debian}"
KEYRING="${KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"
echo "deb-src [signed-by=$KEYRING] $URI bookworm main" > "$WORK/apt/sources.list"
APT_OPTS=(-o "Dir::Etc::SourceList=$WORK/apt/sources.list" -o "Dir::Etc::SourceParts=$WORK/apt/sources.list.d"
          -o "Dir::State::Lists=$WORK/apt/lists")
log "fetching source package kubernetes=$VERSION"
apt-get "${APT_OPTS[@]}" update -qq >&2
(cd "$WORK/src" && apt-get "${APT_OPTS[@]}" source --download-only "kubernetes=$VERSION" >&2)
(cd "$WORK/src" && dpkg-source -x --no-check ./*.dsc k8s >&2)

K8S="$WORK/src/k8s"
# reflect2 v1.0.1 (vendored) segfaults on the first custom-resource create with Go >= 1.18;
# Debian's v1.0.2 does not.
find "$K8S/vendor/github.com/modern-go/reflect2" -maxdepth 1 \( -name '*.go' -o -name '*.s' \) -delete
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$K8S/vendor/github.com/modern-go/reflect2/"
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$K8S/vendor/github.com/modern-go/reflect2/" 2>/dev/null || true

log "building (about 4 minutes on 2 cores)"
(cd "$K8S" && PATH=/usr/lib/go-1.19/bin:$PATH CGO_ENABLED=0 KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_TREE_STATE=clean \
   GOCACHE="$WORK/gocache" GOFLAGS=-mod=vendor make WHAT=cmd/kube-apiserver >&2)
mkdir -p "$CACHE"
install -m 0755 "$K8S/_output/bin/kube-apiserver" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
echo "$BIN"
