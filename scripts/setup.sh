#!/usr/bin/env bash
# Create or refresh the project's virtualenv with everything `make test` and `make demo` need.
# CPU by default: the CPU build of torch is pinned before the project so pip never pulls a CUDA build.
set -euo pipefail
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  echo "installing torch==$TORCH_VERSION (CPU build)"
  "$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION" 2>&1 | grep -v '^WARNING: Location' || true
fi
echo "installing nearline-recall[cpu,train,dev]"
"$VENV/bin/python" -m pip install --quiet -e ".[cpu,train,dev]" 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -c "import torch, onnxruntime, faiss, pandas, pyarrow" # fail here, not in a test

# The service (and its tests) start a private redis-server; Debian's package provides it.
if ! command -v redis-server >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server (Debian package)"
    (apt-get install -y -qq redis-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq redis-server; }) \
      || echo "warning: could not install redis-server; the service tests will be skipped" >&2
  else
    echo "warning: redis-server is missing and we are not root: install it (apt-get install redis-server)" >&2
  fi
fi
touch "$VENV/.installed"
