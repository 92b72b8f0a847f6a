#!/usr/bin/env bash
# Create or refresh the separate virtualenv in which bench/rectools_peer.py trains RecTools' own models.
# RecTools 0.19 pins numpy<2 (on Python < 3.12) and pytorch-lightning<=2.5.2, so it cannot share the project's venv.
# Usage: bash bench/rectools_setup.sh [VENV]   (default: bench/.cache/rectools-venv under the repo root)
# Exit 0 when the venv works (at once if it already did), 1 with a message when it cannot be installed.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${1:-$ROOT/bench/.cache/rectools-venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
RECTOOLS_VERSION=${RECTOOLS_VERSION:-0.19.0}
# pyarrow reads the peer's parquet input; 26 and later need numpy>=2, which RecTools 0.19 forbids.
PYARROW_SPEC=${PYARROW_SPEC:-pyarrow<26}
CHECK="import sys, rectools, pyarrow.parquet, torch
from rectools.models import SASRecModel
sys.exit(rectools.__version__ != '$RECTOOLS_VERSION')"

works() { [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c "$CHECK" >/dev/null 2>&1; }
fail() { tail -n 3 "$VENV/setup.log" >&2 2>/dev/null; echo "RecTools venv setup failed: $1 (pip log: $VENV/setup.log)"; exit 1; }

works && exit 0
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || fail "Python 3.10+ is required"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV" || fail "could not create a virtualenv at $VENV"
PIP=("$VENV/bin/python" -m pip install --quiet)
# torch first and pinned, so that pip takes the CPU build instead of pulling a multi-GB CUDA one.
echo "installing torch==$TORCH_VERSION (CPU build) into $VENV"
"${PIP[@]}" "torch==$TORCH_VERSION" >"$VENV/setup.log" 2>&1 || fail "pip could not install torch==$TORCH_VERSION"
echo "installing rectools[torch]==$RECTOOLS_VERSION and $PYARROW_SPEC"
"${PIP[@]}" "torch==$TORCH_VERSION" "rectools[torch]==$RECTOOLS_VERSION" "$PYARROW_SPEC" >>"$VENV/setup.log" 2>&1 \
  || fail "pip could not install rectools[torch]==$RECTOOLS_VERSION"
works || fail "installed, but 'from rectools.models import SASRecModel' (or pyarrow) does not import"
echo "RecTools $RECTOOLS_VERSION ready in $VENV"
