#!/usr/bin/env bash
# Create or refresh the project's virtualenv with everything `make test` and `make demo` need.
# CPU by default: the CPU build of torch is pinned before the project so pip never pulls a CUDA build.
# The Dockerfile runs this same script with other settings:
#   EXTRAS          the project's extras (default cpu,train,dev; the GPU image: gpu,train)
#   TORCH_INDEX_URL where torch comes from (default: pip's own configuration; the CPU image: PyTorch's CPU index)
#   EDITABLE=no     install the project itself, not a link to the checkout
#   SKIP_REDIS=yes  leave redis-server to the caller
set -euo pipefail
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
EXTRAS=${EXTRAS:-cpu,train,dev}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}
EDITABLE=${EDITABLE:-yes}
SKIP_REDIS=${SKIP_REDIS:-no}

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  echo "installing torch==$TORCH_VERSION${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}"
  "$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
    2>&1 | grep -v '^WARNING: Location' || true
fi
echo "installing nearline-recall[$EXTRAS]"
editable=()
[[ $EDITABLE == yes ]] && editable=(-e)
"$VENV/bin/python" -m pip install --quiet "${editable[@]}" ".[$EXTRAS]" 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -c "import torch, onnxruntime, faiss, pandas, pyarrow, fastapi" # fail here, not in a test

# The service (and its tests) start a private redis-server; Debian's package provides it.
if [[ $SKIP_REDIS != yes ]] && ! command -v redis-server >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server (Debian package)"
    (apt-get install -y -qq redis-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq redis-server; }) \
      || echo "warning: could not install redis-server; the service tests will be skipped" >&2
  else
    echo "warning: redis-server is missing and we are not root: install it (apt-get install redis-server)" >&2
  fi
fi
touch "$VENV/.installed"
