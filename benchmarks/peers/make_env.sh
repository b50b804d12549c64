#!/usr/bin/env bash
# Build the "peers" virtual environment: sentence-transformers' own ONNX export helpers
# (export_optimized_onnx_model / export_dynamic_quantized_onnx_model) need Optimum, which
# pins transformers<4.58, so they cannot share the project's main environment (transformers 5.x).
#
# Usage: bash benchmarks/peers/make_env.sh        (venv at ${PEER_VENV:-/work/main/.venv-peers})
# Idempotent: does nothing when the venv already exists and imports the pinned stack.
set -euo pipefail

VENV="${PEER_VENV:-/work/main/.venv-peers}"
PYTHON="${PYTHON:-python3}"   # interpreter the venv is made from (3.10+)

# Pins (found by trying; each one works with the others):
TORCH=torch==2.13.0                            # FIRST: pip takes the local CPU wheel for this exact version (an unpinned torch pulls a multi-GB CUDA build)
ST=sentence-transformers==5.7.0                # newest ST that still accepts transformers 4.x (6.x needs transformers>=5)
OPTIMUM_ONNX="optimum-onnx[onnxruntime]==0.1.0" # home of ORTOptimizer/ORTQuantizer since optimum 2.x; requires optimum~=2.1.0, transformers<4.58
OPTIMUM=optimum==2.1.0                         # the only optimum series optimum-onnx 0.1.0 accepts
TRANSFORMERS=transformers==4.57.6              # newest release below optimum-onnx's <4.58 cap
ONNX=onnx==1.23.2                              # same onnx as the main environment
ORT=onnxruntime==1.32.0                        # same onnxruntime as the main environment (optimum-onnx asks only >=1.18)

check() {
    # every pin installed at its exact version, and the export helpers importable
    "$VENV/bin/python" - "$TORCH" "$ST" "$OPTIMUM_ONNX" "$OPTIMUM" "$TRANSFORMERS" "$ONNX" "$ORT" <<'PY' >/dev/null 2>&1
import importlib.metadata as md
import re
import sys
for pin in sys.argv[1:]:
    name, version = re.sub(r"\[.*\]", "", pin).split("==")
    assert md.version(name).split("+")[0] == version, (pin, md.version(name))
import sentence_transformers.backend  # noqa: F401
from optimum.onnxruntime import ORTOptimizer, ORTQuantizer  # noqa: F401
PY
}

if [ -x "$VENV/bin/python" ] && check; then
    echo "peers venv ready at $VENV (nothing to do)"
    exit 0
fi

# pip warns about every missing local index folder; keep its real errors only
pip_install() { "$VENV/bin/python" -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

start=$(date +%s)
echo "creating peers venv at $VENV"
"$PYTHON" -m venv "$VENV"
pip_install --upgrade pip
echo "installing $TORCH"
pip_install "$TORCH"
echo "installing $ST $OPTIMUM_ONNX $OPTIMUM $TRANSFORMERS $ONNX $ORT"
pip_install "$TORCH" "$ST" "$OPTIMUM_ONNX" "$OPTIMUM" "$TRANSFORMERS" "$ONNX" "$ORT"
if ! check; then
    echo "error: peers venv at $VENV does not import the pinned stack" >&2
    exit 1
fi
echo "peers venv ready at $VENV ($(( $(date +%s) - start ))s)"
