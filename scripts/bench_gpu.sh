#!/usr/bin/env bash
# `make bench-gpu`: the Python and the import path for scripts/bench_gpu.py, then its run.
#   bash scripts/bench_gpu.sh [bench_gpu.py options]      (OUT: where the results go; default build/bench-gpu)
#
# With the project's virtualenv (`make setup`), its Python. Without one (a CUDA machine with no
# network: docs/pretraining.md, "Measuring on a GPU"), the machine's python3 with the wheels carried
# in .whl/ (megatron-core and pydantic built for that Python) installed into a temporary folder, and
# the sources of api, operator (with sobertctl) and trainer on PYTHONPATH. A machine without CUDA
# gets one line and exit 0.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/build/bench-gpu}

if [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
else
    PY=python3
    SITE_PATHS=()
    shopt -s nullglob
    WHEELS=(.whl/*.whl)
    if [ ${#WHEELS[@]} -gt 0 ]; then
        SITE=$(mktemp -d "${TMPDIR:-/tmp}/sobert-bench-gpu-site.XXXXXX")
        trap 'rm -rf "$SITE"' EXIT
        echo "installing ${#WHEELS[@]} carried wheel(s) from .whl/ into $SITE"
        # Not fatal: on a machine without CUDA (wheels built for another Python, say) bench_gpu.py
        # still says so and exits 0; on one with CUDA its environment stage names what is missing.
        if "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "${WHEELS[@]}"; then
            SITE_PATHS=("$SITE")
        else
            echo "the wheels in .whl/ do not install on $("$PY" --version 2>&1): going on without them" >&2
        fi
    fi
    SOURCES=("${SITE_PATHS[@]}" "$ROOT/api/src" "$ROOT/operator/src" "$ROOT/trainer/src")
    PYTHONPATH=$(IFS=:; echo "${SOURCES[*]}")${PYTHONPATH:+:$PYTHONPATH}
    export PYTHONPATH
fi
export PYTHONUNBUFFERED=1
"$PY" scripts/bench_gpu.py --out "$OUT" "$@"
